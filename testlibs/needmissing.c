/*
 * libneedmissing: a DT_NEEDED entry (libghost.so) that cannot be found. The
 * library itself has DT_RUNPATH $ORIGIN, but libghost.so is not in its
 * directory (or anywhere on the search path), so loading it must fail with
 * an error naming libghost.so. needmissing() itself needs nothing from it.
 */

/* 77 (never reachable if the loader is correct). */
__attribute__((noinline)) int needmissing(void)
{
    return 77;
}
