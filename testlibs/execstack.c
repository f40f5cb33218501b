/*
 * libexecstack (linked with -Wl,-z,execstack): PT_GNU_STACK with PF_X
 * (readelf shows GNU_STACK ... RWE). The loader must refuse to load it
 * rather than silently accept (or make the stack executable).
 */

__attribute__((noinline)) int execstack_add(int a, int b)
{
    return a + b;
}
