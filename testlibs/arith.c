/*
 * libarith (also built as libarith_now with -z now and libarith_lazy with
 * -z lazy): the basic "load a library and call into it" case.
 *
 * Exercises: integer, 64-bit, floating-point and many-argument calls through
 * the System V ABI (sum6 uses all six integer argument registers, fsum8 all
 * eight SSE ones); calls between exported functions of one library, which
 * stay preemptible and so go through the PLT (R_X86_64_JUMP_SLOT); an
 * exported function-pointer variable initialised with an exported function
 * (R_X86_64_64) and read through the GOT (R_X86_64_GLOB_DAT); a string in
 * .rodata; a call into libc (strlen, JUMP_SLOT); and private mutable state
 * (a call counter in .bss).
 */
#include <string.h>

static int add_calls;

/* Exported, so `arith_add_ptr`'s initialiser is a symbolic R_X86_64_64. */
__attribute__((noinline)) int add_impl(int a, int b)
{
    return a + b;
}

/* Exported and preemptible: reads of it go through a GLOB_DAT GOT slot. */
int (*arith_add_ptr)(int, int) = add_impl;

__attribute__((noinline)) int add(int a, int b)
{
    add_calls++;
    return arith_add_ptr(a, b);
}

__attribute__((noinline)) long mul64(long a, long b)
{
    return a * b;
}

__attribute__((noinline)) double scale(double x, double k)
{
    return x * k;
}

/* a + 2b + 3c + 4d + 5e + 6f; the weights go through mul64 (a PLT call). */
__attribute__((noinline)) long sum6(long a, long b, long c, long d, long e, long f)
{
    return a + mul64(b, 2) + mul64(c, 3) + mul64(d, 4) + mul64(e, 5) + mul64(f, 6);
}

/* a + 2b + ... + 8h; the weights go through scale (a PLT call). */
__attribute__((noinline)) double fsum8(double a, double b, double c, double d,
                                       double e, double f, double g, double h)
{
    return a + scale(b, 2.0) + scale(c, 3.0) + scale(d, 4.0) + scale(e, 5.0)
         + scale(f, 6.0) + scale(g, 7.0) + scale(h, 8.0);
}

__attribute__((noinline)) const char *greeting(void)
{
    return "hello from arith";
}

/* Sum of the bytes of s (as unsigned char); strlen comes from libc. */
__attribute__((noinline)) long strsum(const char *s)
{
    size_t n = strlen(s);
    long total = 0;
    for (size_t i = 0; i < n; i++)
        total += (unsigned char)s[i];
    return total;
}

/* How many times add() has been called in this instance of the library. */
__attribute__((noinline)) int arith_calls(void)
{
    return add_calls;
}
