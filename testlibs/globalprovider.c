/*
 * libglobalprovider: a library the host program opens itself with the
 * system loader, RTLD_GLOBAL or RTLD_LOCAL (tests/host_global.rs).
 *
 * Exercises: glibc's global scope grows with the host's RTLD_GLOBAL
 * libraries; soloader's imports must see them, and only them.
 */

int global_provider_value(void) { return 4242; }
