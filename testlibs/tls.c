/* Thread-local storage in a library soloader loads.
 *
 * Built twice: libtls.so with GCC's default general-dynamic model for -fPIC
 * (calls to __tls_get_addr, R_X86_64_DTPMOD64/DTPOFF64 relocations) and
 * libtls_desc.so with -mtls-dialect=gnu2 (R_X86_64_TLSDESC descriptors).
 * Each thread must see its own counter, starting at the initial value from
 * the TLS image (.tdata), and a zeroed .tbss buffer. It also reaches the
 * host libc's own TLS variable `errno` general-dynamically (DTPMOD64 against
 * libc's module, whose id only glibc knows); tls_hostie.c does the same
 * with initial-exec.
 */
#include <errno.h>
#include <string.h>

__thread long tls_counter = 100;
__thread char tls_buf[64];
static __thread int tls_local = 7;

#undef errno
extern __thread int errno;

long tls_increment(long by) { tls_counter += by; return tls_counter; }
long tls_get(void) { return tls_counter; }
long *tls_addr(void) { return &tls_counter; }
int tls_local_bump(void) { return ++tls_local; }

/* Sum of the .tbss buffer (0 in a fresh thread), then fill it with `c`. */
long tls_buf_sum_then_fill(int c)
{
    long sum = 0;
    for (unsigned i = 0; i < sizeof tls_buf; i++)
        sum += (unsigned char)tls_buf[i];
    memset(tls_buf, c, sizeof tls_buf);
    return sum;
}

/* Sets errno through the general-dynamic reference and reads it back
 * through libc's own __errno_location(): equal only if the DTPMOD64 names
 * libc's module. */
int tls_errno_gd(int v) { errno = v; return *__errno_location(); }
