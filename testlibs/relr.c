/* Linked with -z pack-relative-relocs: its relative relocations are packed
 * in DT_RELR (and it needs glibc's GLIBC_ABI_DT_RELR version), which
 * soloader must unpack. A table of many pointers makes RELR bitmaps. */
static int values[64];
int *relr_table[64] = {
#define P(i) &values[i],
#define P8(i) P(i) P(i + 1) P(i + 2) P(i + 3) P(i + 4) P(i + 5) P(i + 6) P(i + 7)
    P8(0) P8(8) P8(16) P8(24) P8(32) P8(40) P8(48) P8(56)
};
static const char *names[] = {"alpha", "beta", "gamma", "delta"};

/* 1 if every pointer in the table points where it should. */
int relr_ok(void)
{
    for (int i = 0; i < 64; i++)
        if (relr_table[i] != &values[i])
            return 0;
    return names[2][0] == 'g';
}
