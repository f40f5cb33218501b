/*
 * Shared by init.c and diamond.c: append "<kind>:<lib>:<which>\n" to the file
 * named by $SOLOADER_INIT_LOG (if set and non-empty), opened with O_APPEND
 * and closed again, so lines from several libraries and processes interleave
 * whole. Uses only open/write/close/getenv, which are safe this early.
 */
#ifndef SOLOADER_INITLOG_H
#define SOLOADER_INITLOG_H

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void initlog(const char *kind, const char *lib, const char *which)
{
    const char *path = getenv("SOLOADER_INIT_LOG");
    if (path == NULL || path[0] == '\0')
        return;

    char line[256];
    size_t n = 0;
    const char *parts[] = { kind, ":", lib, ":", which, "\n" };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t len = strlen(parts[i]);
        if (n + len >= sizeof line)
            return;
        memcpy(line + n, parts[i], len);
        n += len;
    }

    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    ssize_t ignored = write(fd, line, n);
    (void)ignored;
    close(fd);
}

#endif
