/*
 * libmissing: an unresolvable symbol.
 *
 * Exercises: a (non-weak) undefined function, soloader_no_such_function,
 * that nothing defines; it is called through the PLT (JUMP_SLOT). Eager
 * binding (RTLD_NOW / BIND_NOW) must fail with an error naming the symbol;
 * lazy binding may load the library, and missing_ok() works, but calling
 * call_missing() would fail at bind time.
 */

int soloader_no_such_function(void);

__attribute__((noinline)) int call_missing(void)
{
    return soloader_no_such_function();
}

/* 5; needs no missing symbol. */
__attribute__((noinline)) int missing_ok(void)
{
    return 5;
}
