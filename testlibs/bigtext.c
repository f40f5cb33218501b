/*
 * libbigtext: a large text segment and a relocated table spanning pages.
 *
 * Exercises: mapping a text segment of several hundred KiB (1024 distinct
 * functions, each a different chain of 64-bit multiply/shift/xor rounds with
 * constants derived from its index, so the compiler cannot merge them), and
 * a 24 KiB const table of {function, name, salt} entries in RELRO
 * .data.rel.ro: 2048 R_X86_64_RELATIVE relocations spread over several
 * pages, which must all be applied before the RELRO mprotect.
 *
 * bigtext_run(n) calls the first n functions through the table and folds
 * their results into a checksum; any wrong pointer changes it (or crashes).
 */

#define NFUNCS 1024

#define K(i, r) (0x9E3779B97F4A7C15ull * ((unsigned long long)(i) * 131ull + (r) + 1ull) \
                 ^ (0xC2B2AE3D27D4EB4Full >> (((i) + (r)) % 17)))
#define ROUND(i, r) \
    x = (x * (K(i, r) | 1ull)) ^ ((x >> (((i) + (r)) % 29 + 3)) + K(i, (r) + 64));

#define BODY(i)                                                              \
    unsigned long long x = (unsigned long long)v;                            \
    ROUND(i, 0) ROUND(i, 1) ROUND(i, 2) ROUND(i, 3)                          \
    ROUND(i, 4) ROUND(i, 5) ROUND(i, 6) ROUND(i, 7)                          \
    ROUND(i, 8) ROUND(i, 9)                                                  \
    return (long)x;

#define INDEX(t, a, b, c) ((t) * 512 + (a) * 64 + (b) * 8 + (c))

/* X(t, a, b, c) for every t in 0..2 and a, b, c in 0..8, in index order. */
#define FOR3(X, t, a, b) X(t, a, b, 0) X(t, a, b, 1) X(t, a, b, 2) X(t, a, b, 3) \
                         X(t, a, b, 4) X(t, a, b, 5) X(t, a, b, 6) X(t, a, b, 7)
#define FOR2(X, t, a) FOR3(X, t, a, 0) FOR3(X, t, a, 1) FOR3(X, t, a, 2) FOR3(X, t, a, 3) \
                      FOR3(X, t, a, 4) FOR3(X, t, a, 5) FOR3(X, t, a, 6) FOR3(X, t, a, 7)
#define FOR1(X, t) FOR2(X, t, 0) FOR2(X, t, 1) FOR2(X, t, 2) FOR2(X, t, 3) \
                   FOR2(X, t, 4) FOR2(X, t, 5) FOR2(X, t, 6) FOR2(X, t, 7)
#define FOR_ALL(X) FOR1(X, 0) FOR1(X, 1)

#define DEFINE_FN(t, a, b, c) \
    static __attribute__((noinline)) long f_##t##a##b##c(long v) { BODY(INDEX(t, a, b, c)) }

FOR_ALL(DEFINE_FN)

struct entry {
    long (*fn)(long);
    const char *name;
    long salt;
};

#define ENTRY(t, a, b, c) \
    { f_##t##a##b##c, "f_" #t #a #b #c, INDEX(t, a, b, c) * 7 + 3 },

static const struct entry table[] = { FOR_ALL(ENTRY) };

_Static_assert(sizeof table / sizeof table[0] == NFUNCS, "table size");

/* Checksum over the first n (clamped to 0..bigtext_count()) functions:
 * acc = acc * 31 + f_i(i ^ salt_i), in unsigned 64-bit arithmetic. */
__attribute__((noinline)) long bigtext_run(long n)
{
    if (n > NFUNCS)
        n = NFUNCS;
    unsigned long long acc = 0;
    for (long i = 0; i < n; i++)
        acc = acc * 31u + (unsigned long long)table[i].fn(i ^ table[i].salt);
    return (long)acc;
}

/* Number of functions in the table: 1024. */
__attribute__((noinline)) long bigtext_count(void)
{
    return NFUNCS;
}

/* "f_0000" ... "f_1777" (t, a, b, c digits of the index), NULL if out of
 * range. */
__attribute__((noinline)) const char *bigtext_name(long i)
{
    if (i < 0 || i >= NFUNCS)
        return 0;
    return table[i].name;
}
