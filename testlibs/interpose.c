/*
 * libinterpose: symbol lookup order (interposition) and weak undefined
 * symbols.
 *
 * Exercises:
 *  - this library defines getpid (returning -42) with default visibility and
 *    calls it through the PLT (R_X86_64_JUMP_SLOT getpid). Under glibc's
 *    rules the global scope (the executable, then libc, which was loaded
 *    first) is searched before this library, so lib_calls_getpid() returns
 *    the real pid. A loader that resolves a library's own symbols first
 *    returns -42.
 *  - lib_getpid_direct() calls a hidden alias of the same definition, bound
 *    at link time: always -42.
 *  - soloader_host_hook is a weak undefined function (GLOB_DAT, weak).
 *    host_hook_result() returns soloader_host_hook() if something provides
 *    it, else -1; an unresolved weak symbol must resolve to 0, not fail.
 */
#include <sys/types.h>

/* Declared here rather than via <unistd.h>, whose declaration carries
 * nothrow/leaf attributes the alias below would have to repeat. */
pid_t getpid(void);

__attribute__((noinline)) pid_t getpid(void)
{
    return -42;
}

extern __typeof(getpid) getpid_hidden
    __attribute__((alias("getpid"), visibility("hidden")));

extern int soloader_host_hook(void) __attribute__((weak));

/* The real pid under glibc rules (lookup finds libc's getpid first). */
__attribute__((noinline)) int lib_calls_getpid(void)
{
    return getpid();
}

/* -42: the library's own getpid via a hidden alias. */
__attribute__((noinline)) int lib_getpid_direct(void)
{
    return getpid_hidden();
}

/* soloader_host_hook() if defined somewhere in the lookup scope, else -1. */
__attribute__((noinline)) int host_hook_result(void)
{
    return soloader_host_hook ? soloader_host_hook() : -1;
}
