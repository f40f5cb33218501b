/*
 * libctorhook: a constructor that calls back into the program, for
 * tests/lock_order.rs. The program puts the address of a `void (void)`
 * function in SOLOADER_TEST_CTOR_HOOK (hex); loaded by the system loader,
 * the constructor runs while the system loader holds its own lock, and
 * calls it.
 *
 * Exercises: soloader never waits for the system loader's lock while it
 * holds its own, so a constructor running under the system loader's lock
 * can always get soloader's.
 */
#include <stdlib.h>

__attribute__((constructor)) static void ctorhook(void)
{
    const char *s = getenv("SOLOADER_TEST_CTOR_HOOK");
    if (s && *s)
        ((void (*)(void))(unsigned long)strtoull(s, 0, 16))();
}

int ctorhook_loaded(void) { return 1; }
