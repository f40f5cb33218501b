/* Linked with --hash-style=sysv: no DT_GNU_HASH, only the classic DT_HASH
 * table, which soloader must fall back to for lookups. */
int sysv_answer(void) { return 4242; }
int sysv_twice(int x) { return 2 * x; }
