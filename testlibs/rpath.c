/*
 * librpath (DT_RPATH $ORIGIN, via --disable-new-dtags; DT_NEEDED
 * libarith.so): dependency search through the legacy DT_RPATH tag and
 * $ORIGIN expansion, plus a cross-library call.
 */

int add(int a, int b);

/* add(a, b) from libarith. */
__attribute__((noinline)) int rpath_add(int a, int b)
{
    return add(a, b);
}
