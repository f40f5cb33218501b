/*
 * libdup_a / libdup_b (built with -DWHICH='a' / -DWHICH='b'): two libraries
 * that export the same symbol, `which`, for lookup-order tests with
 * libdup_ab / libdup_ba (dupuser.c).
 */
#ifndef WHICH
#error "build with -DWHICH='a' or -DWHICH='b'"
#endif

/* The letter this library was built with, as an int ('a' = 97, 'b' = 98). */
__attribute__((noinline)) int which(void)
{
    return WHICH;
}
