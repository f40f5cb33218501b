/*
 * libinit (linked with -Wl,-init,init_legacy -Wl,-fini,fini_legacy):
 * initialisers and finalisers.
 *
 * Exercises: DT_INIT / DT_FINI, DT_INIT_ARRAY / DT_FINI_ARRAY with
 * prioritised and plain constructors and destructors, their order, and the
 * (argc, argv, envp) arguments the loader passes to initialisers.
 *
 * Each call appends "init:init:<which>" / "fini:init:<which>" to
 * $SOLOADER_INIT_LOG. glibc's order is
 *   init: DT_INIT, ctor101, ctor102, ctor
 *   fini: dtor, dtor102, dtor101, DT_FINI
 * init_order() returns the init calls seen in this process, comma-separated.
 */
#include <stddef.h>
#include <string.h>

#include "initlog.h"

#define LIBNAME "init"

static char order[256];
static int seen_argc = -1;
static char seen_argv0[256];
static int seen_argv0_set;
static int seen_envp_ok;

static void record_init(const char *which)
{
    size_t used = strlen(order);
    size_t len = strlen(which);
    if (used + len + 2 < sizeof order) {
        if (used > 0)
            order[used++] = ',';
        memcpy(order + used, which, len + 1);
    }
    initlog("init", LIBNAME, which);
}

static int envp_has_assignment(char **envp)
{
    if (envp == NULL)
        return 0;
    for (size_t i = 0; envp[i] != NULL; i++) {
        const char *eq = strchr(envp[i], '=');
        if (eq != NULL && eq != envp[i])
            return 1;
    }
    return 0;
}

void init_legacy(void)
{
    record_init("DT_INIT");
}

void fini_legacy(void)
{
    initlog("fini", LIBNAME, "DT_FINI");
}

__attribute__((constructor(101))) static void ctor101(int argc, char **argv, char **envp)
{
    seen_argc = argc;
    if (argc > 0 && argv != NULL && argv[0] != NULL) {
        strncpy(seen_argv0, argv[0], sizeof seen_argv0 - 1);
        seen_argv0_set = 1;
    }
    seen_envp_ok = envp_has_assignment(envp);
    record_init("ctor101");
}

__attribute__((constructor(102))) static void ctor102(void)
{
    record_init("ctor102");
}

__attribute__((constructor)) static void ctor(void)
{
    record_init("ctor");
}

__attribute__((destructor(101))) static void dtor101(void)
{
    initlog("fini", LIBNAME, "dtor101");
}

__attribute__((destructor(102))) static void dtor102(void)
{
    initlog("fini", LIBNAME, "dtor102");
}

__attribute__((destructor)) static void dtor(void)
{
    initlog("fini", LIBNAME, "dtor");
}

/* argc as passed to ctor101, or -1 if it never ran. */
__attribute__((noinline)) int init_seen_argc(void)
{
    return seen_argc;
}

/* Copy of argv[0] as passed to ctor101 (at most 255 bytes), or NULL if it
 * never ran or argc/argv were empty. */
__attribute__((noinline)) const char *init_seen_argv0(void)
{
    return seen_argv0_set ? seen_argv0 : NULL;
}

/* 1 if ctor101 got a non-NULL envp containing at least one "NAME=value". */
__attribute__((noinline)) int init_seen_envp_ok(void)
{
    return seen_envp_ok;
}

/* e.g. "DT_INIT,ctor101,ctor102,ctor" */
__attribute__((noinline)) const char *init_order(void)
{
    return order;
}
