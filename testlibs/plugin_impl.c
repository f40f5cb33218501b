/* The plugin libpluginhost.so loads with dlopen: found only through the
 * host library's RUNPATH ($ORIGIN). */
int plugin_twice(int x) { return 2 * x; }
