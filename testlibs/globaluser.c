/*
 * libglobaluser: imports global_provider_value without a DT_NEEDED on the
 * library that defines it; only the host's global scope can provide it.
 */

int global_provider_value(void);

__attribute__((noinline)) int global_user(void) { return global_provider_value() + 1; }
