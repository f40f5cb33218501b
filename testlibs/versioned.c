/*
 * libversioned (linked with -Wl,--version-script=versioned.map): symbol
 * versioning.
 *
 * Exercises: DT_VERSYM / DT_VERDEF; two definitions of one name:
 *   vfunc@VERS_1   hidden (non-default) version, returns 1
 *   vfunc@@VERS_2  default version, returns 2
 *   vplain@@VERS_1 returns 10
 * VERS_2 inherits VERS_1. An unversioned lookup of "vfunc" (e.g. dlsym) must
 * find the default, VERS_2; only a reference that asks for VERS_1 by name
 * (see needhidden.c) may bind to the hidden one.
 */

__attribute__((noinline, used)) int vfunc_v1(void)
{
    return 1;
}

__attribute__((noinline, used)) int vfunc_v2(void)
{
    return 2;
}

__asm__(".symver vfunc_v1, vfunc@VERS_1");
__asm__(".symver vfunc_v2, vfunc@@VERS_2");

__attribute__((noinline)) int vplain(void)
{
    return 10;
}
