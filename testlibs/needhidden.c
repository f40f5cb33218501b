/*
 * libneedhidden (DT_NEEDED libversioned.so, DT_RUNPATH $ORIGIN): versioned
 * references (DT_VERNEED).
 *
 * Exercises: an undefined reference bound to the hidden, non-default
 * vfunc@VERS_1 (readelf shows the undefined symbol as vfunc@VERS_1) and one
 * to the default vfunc@VERS_2. A loader that ignores versions (or picks the
 * default for both) makes call_old_vfunc() return 2 instead of 1.
 */

int vfunc_old(void);
__asm__(".symver vfunc_old, vfunc@VERS_1");

int vfunc(void);

/* 1 when vfunc@VERS_1 was bound correctly. */
__attribute__((noinline)) int call_old_vfunc(void)
{
    return vfunc_old();
}

/* 2: the default version, vfunc@@VERS_2. */
__attribute__((noinline)) int call_new_vfunc(void)
{
    return vfunc();
}
