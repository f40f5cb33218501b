/* Initial-exec TLS in a library soloader loads: the variable would have to
 * live in glibc's static TLS block, which soloader does not own, so the
 * load must be refused with an error naming the library and variable. */
__thread int ie_var __attribute__((tls_model("initial-exec"))) = 5;
int ie_get(void) { return ie_var; }
