/* A library that loads a plugin: its dlopen/dlsym/dlclose/dladdr/dlerror/
 * dl_iterate_phdr/_dl_find_object calls must reach soloader (which loaded
 * it), not the system loader. The plugin is found by bare name through
 * this library's own RUNPATH ($ORIGIN), which only soloader's dlopen
 * knows to use for it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <string.h>

static void *plugin;

/* dlopen the plugin by bare name and call plugin_twice(x). */
int plugin_call(int x)
{
    if (!plugin)
        plugin = dlopen("libplugin_impl.so", RTLD_NOW);
    if (!plugin)
        return -1;
    int (*twice)(int) = (int (*)(int))dlsym(plugin, "plugin_twice");
    return twice ? twice(x) : -2;
}

int plugin_close(void)
{
    int rc = plugin ? dlclose(plugin) : -1;
    plugin = 0;
    return rc;
}

/* dladdr on one of our own functions names it and this file. */
int plugin_dladdr_ok(void)
{
    Dl_info info;
    if (!dladdr((void *)&plugin_call, &info) || !info.dli_sname || !info.dli_fname)
        return 0;
    const char *f = strrchr(info.dli_fname, '/');
    return strcmp(info.dli_sname, "plugin_call") == 0 && f && strcmp(f, "/libpluginhost.so") == 0 &&
           info.dli_saddr == (void *)&plugin_call;
}

/* RTLD_NEXT from here finds libc's strlen. */
long plugin_next_strlen(const char *s)
{
    size_t (*real)(const char *) = (size_t (*)(const char *))dlsym(RTLD_NEXT, "strlen");
    return real ? (long)real(s) : -1;
}

/* RTLD_DEFAULT finds our own exported function too. */
int plugin_default_self(void)
{
    return dlsym(RTLD_DEFAULT, "plugin_call") == (void *)&plugin_call;
}

static int count_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    const char *f = info->dlpi_name ? strrchr(info->dlpi_name, '/') : 0;
    if (f && strcmp(f, "/libpluginhost.so") == 0 && info->dlpi_phnum > 0)
        ++*(int *)data;
    return 0;
}

/* dl_iterate_phdr lists this library exactly once. */
int plugin_iterate(void)
{
    int n = 0;
    dl_iterate_phdr(count_cb, &n);
    return n;
}

/* A failing dlopen sets dlerror once, naming the library. */
int plugin_error_ok(void)
{
    if (dlopen("libsoloader_no_such_plugin.so", RTLD_NOW))
        return 0;
    const char *e = dlerror();
    if (!e || !strstr(e, "libsoloader_no_such_plugin.so"))
        return 0;
    return dlerror() == 0;
}

/* _dl_find_object covers our own code. */
int plugin_find_object_ok(void)
{
    struct dl_find_object r;
    if (_dl_find_object((void *)&plugin_call, &r) != 0)
        return 0;
    return (char *)r.dlfo_map_start <= (char *)&plugin_call && (char *)&plugin_call < (char *)r.dlfo_map_end &&
           r.dlfo_eh_frame != 0;
}
