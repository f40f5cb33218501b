/* A constructor that calls back into the loader: its dlopen reaches
 * soloader (which is in the middle of loading this library, holding its
 * lock), so the lock must be reentrant. The library it opens is found
 * through this library's RUNPATH ($ORIGIN). */
#include <dlfcn.h>

static int result = -1;
static void *arith;

__attribute__((constructor)) static void load_from_constructor(void)
{
    arith = dlopen("libarith.so", RTLD_NOW);
    if (!arith) {
        result = -2;
        return;
    }
    int (*add)(int, int) = (int (*)(int, int))dlsym(arith, "add");
    result = add ? add(20, 22) : -3;
}

__attribute__((destructor)) static void close_from_destructor(void)
{
    if (arith)
        dlclose(arith);
}

/* 42 when the constructor's nested load worked. */
int reenter_result(void) { return result; }
