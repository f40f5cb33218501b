/*
 * libcallback: calls from library code back into the caller's code.
 *
 * Exercises: function pointers passed in from the host (Rust code or another
 * library) and called from inside the loaded library, with integer and
 * pointer arguments; nothing here needs the host's symbols.
 */

/* cb(cb(x)) */
__attribute__((noinline)) int call_twice(int (*cb)(int), int x)
{
    return cb(cb(x));
}

/* f(...f(f(init, xs[0]), xs[1])..., xs[n-1]); init when n <= 0. */
__attribute__((noinline)) long fold(const long *xs, long n, long (*f)(long, long), long init)
{
    long acc = init;
    for (long i = 0; i < n; i++)
        acc = f(acc, xs[i]);
    return acc;
}
