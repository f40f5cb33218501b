/*
 * libghost: a link-time-only stub. libneedmissing.so is linked against it
 * (DT_NEEDED libghost.so), but it is built in OUT_DIR, never in the testlibs
 * directory, so at run time the dependency cannot be found.
 */

__attribute__((noinline)) int ghost(void)
{
    return 1;
}
