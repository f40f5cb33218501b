/*
 * libdup_ab (DT_NEEDED libdup_a.so, libdup_b.so in that order) and libdup_ba
 * (DT_NEEDED libdup_b.so, libdup_a.so): breadth-first, DT_NEEDED-ordered
 * symbol lookup. Both dependencies define `which`; glibc binds to the first
 * in load order, so who() is 'a' (97) for libdup_ab and 'b' (98) for
 * libdup_ba when loaded on their own (with no other definition of `which`
 * already in the global scope).
 */

int which(void);

__attribute__((noinline)) int who(void)
{
    return which();
}
