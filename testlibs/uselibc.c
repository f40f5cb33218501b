/*
 * libuselibc: a library that leans on the already-loaded libc.
 *
 * Exercises: binding undefined symbols (malloc, free, snprintf, open,
 * __errno_location, qsort) to the process's libc; memory allocated in the
 * library and freed by it; thread-local errno reached through libc; a
 * library function pointer (the comparator) handed to libc and called back.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* malloc'd "hello, <name>!"; release with free_greeting. NULL on failure. */
__attribute__((noinline)) char *make_greeting(const char *name)
{
    int n = snprintf(NULL, 0, "hello, %s!", name);
    if (n < 0)
        return NULL;
    char *buf = malloc((size_t)n + 1);
    if (buf == NULL)
        return NULL;
    snprintf(buf, (size_t)n + 1, "hello, %s!", name);
    return buf;
}

__attribute__((noinline)) void free_greeting(char *s)
{
    free(s);
}

/* errno after open() of a path that does not exist: ENOENT (2). */
__attribute__((noinline)) int errno_after_bad_open(void)
{
    errno = 0;
    int fd = open("/nonexistent/soloader/no/such/file", O_RDONLY);
    int e = errno;
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return e;
}

static int compare_longs(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* Sorts {42, -7, 19, 3, 100, 0, -55, 8} ascending with qsort and returns
 * sum((i + 1) * sorted[i]) = 1191 (-1 if the result is not sorted). */
__attribute__((noinline)) long use_qsort(void)
{
    long xs[] = { 42, -7, 19, 3, 100, 0, -55, 8 };
    size_t n = sizeof xs / sizeof xs[0];
    qsort(xs, n, sizeof xs[0], compare_longs);
    long sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && xs[i - 1] > xs[i])
            return -1;
        sum += (long)(i + 1) * xs[i];
    }
    return sum;
}

/* snprintf(buf, n, "%.3f", x): returns snprintf's result. */
__attribute__((noinline)) int format_double(char *buf, int n, double x)
{
    return snprintf(buf, n < 0 ? 0 : (size_t)n, "%.3f", x);
}
