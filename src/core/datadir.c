/*
 * datadir.c — data-directory locks (see datadir.h). One flock per lock file; the pid in
 * the file is information for the refusal message, never what decides who holds the lock
 * (the kernel does). No global state; call from one thread at start.
 */
#include "datadir.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATADIR_WHO_BYTES_MAX 32

static int who_ok(const char *who)
{
    size_t n = strlen(who);
    if (n == 0 || n > DATADIR_WHO_BYTES_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = who[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_'))
            return 0;
    }
    return 1;
}

/* The holder's pid as written in the file, or 0 when it cannot be read (the holder may be
 * between open and write: the message then says "another process"). */
static long read_holder(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return 0;
    buf[n] = 0;
    size_t len = strcspn(buf, "\n");
    uint64_t pid;
    if (d11_parse_u64(buf, len, 1u << 22, &pid) < 0) return 0;
    return (long)pid;
}

int d11_datadir_lock(const char *dir, const char *who, char *err, size_t errlen)
{
    D11_ASSERT(dir && who && err && errlen > 0);
    if (!who_ok(who)) {
        snprintf(err, errlen, "bad lock name '%.40s'", who);
        return -EINVAL;
    }
    if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(e));
        return -e;
    }
    char path[1200];
    int pn = snprintf(path, sizeof path, "%s/%s.lock", dir, who);
    if (pn < 0 || (size_t)pn >= sizeof path) {
        snprintf(err, errlen, "data directory path too long");
        return -ENAMETOOLONG;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd == -1) {
        int e = errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(e));
        return -e;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            long pid = read_holder(fd);
            if (pid > 0)
                snprintf(err, errlen, "data directory %s is in use: %s is held by pid %ld", dir, path, pid);
            else
                snprintf(err, errlen, "data directory %s is in use: %s is held by another process", dir, path);
        } else {
            snprintf(err, errlen, "cannot lock %s: %s", path, strerror(e));
        }
        close(fd);
        return -e;
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    D11_ASSERT(n > 0 && (size_t)n < sizeof buf);
    errno = 0;
    if (ftruncate(fd, 0) == -1 || pwrite(fd, buf, (size_t)n, 0) != n) {
        int e = errno ? errno : EIO;
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    return fd;
}

void d11_datadir_unlock(int fd)
{
    if (fd < 0) return;
    (void)!ftruncate(fd, 0); /* best effort: an unreadable pid only makes a message vaguer */
    close(fd);
}
