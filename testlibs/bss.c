/*
 * libbss: segment mapping with p_memsz > p_filesz.
 *
 * Exercises: a data segment whose initialised part (.data, spanning several
 * pages thanks to bss_data) ends part-way through a page, followed by a large
 * .bss (8 MiB). The loader must zero the tail of the last file-backed page
 * (the file has other bytes there) and map anonymous zero pages for the
 * rest. bss_sum() is 0 only if every byte of `big` was zero at load time.
 */

/* Initialised data placed before .bss. */
int data_before_bss = 7;

/* 3000 non-zero ints (12000 bytes, so .data spans several pages):
 * 1000 x 3, then 1000 x 5, then 1000 x 7; sum 15000. */
int bss_data[3000] = {
    [0 ... 999] = 3,
    [1000 ... 1999] = 5,
    [2000 ... 2999] = 7,
};

static unsigned char big[8 << 20];

__attribute__((noinline)) long bss_size(void)
{
    return (long)sizeof big;
}

/* Sum of all bytes of big: 0 right after load. */
__attribute__((noinline)) long bss_sum(void)
{
    long total = 0;
    for (long i = 0; i < (long)sizeof big; i++)
        total += big[i];
    return total;
}

/* big[i] = v (truncated to a byte); out-of-range i is ignored. */
__attribute__((noinline)) void bss_set(long i, int v)
{
    if (i >= 0 && i < (long)sizeof big)
        big[i] = (unsigned char)v;
}

/* big[i], or -1 for an out-of-range i. */
__attribute__((noinline)) int bss_get(long i)
{
    if (i >= 0 && i < (long)sizeof big)
        return big[i];
    return -1;
}

__attribute__((noinline)) int read_data_before_bss(void)
{
    return data_before_bss;
}

/* Sum of bss_data: 15000 when .data was mapped correctly. */
__attribute__((noinline)) long bss_data_sum(void)
{
    long total = 0;
    for (int i = 0; i < 3000; i++)
        total += bss_data[i];
    return total;
}
