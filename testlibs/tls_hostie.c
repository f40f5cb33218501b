/* Initial-exec TLS against the host's libc: `errno` lives in glibc's static
 * TLS block, so the R_X86_64_TPOFF64 against it has a fixed offset from
 * the thread pointer that soloader computes from dl_iterate_phdr's
 * dlpi_tls_data. Allowed (unlike initial-exec against soloader's own
 * modules, see tls_ie.c). */
#include <errno.h>
#undef errno
extern __thread int errno __attribute__((tls_model("initial-exec")));

/* Sets errno through the initial-exec reference and reads it back through
 * libc's __errno_location(): equal only if the offset is right. */
int tls_errno_ie(int v) { errno = v; return *__errno_location(); }
