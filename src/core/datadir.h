/*
 * datadir.h — exclusive locks on a data directory, so two processes never run on the same
 * files (two `d11 up` on one DIR would crash-loop each other's cells on the outbox and
 * delete each other's sockets).
 *
 * A lock is DIR/<who>.lock, held with flock(LOCK_EX | LOCK_NB) on an fd the caller keeps
 * open for as long as it owns the files; the file holds the holder's pid ("PID\n") so the
 * refusal can name it. `d11 up` takes "d11" (DIR/d11.lock: the whole directory); a part
 * run by hand can take its own name ("center", "cell-3") to guard only its own files.
 *
 * The kernel drops the lock when the holder dies (kill -9 included), so a crash never
 * leaves a stale lock; the file itself is never unlinked (unlinking a lock file lets two
 * processes lock two different inodes). The fd is O_CLOEXEC: children started by the
 * holder do not inherit the lock. Not thread-safe; call once at process start.
 */
#ifndef D11_DATADIR_H
#define D11_DATADIR_H

#include <stddef.h>

/*
 * Create dir (mode 0700) if missing, then lock dir/<who>.lock and write our pid into it.
 * Returns the lock fd (>= 0; keep it open: closing it releases the lock), or a negative
 * error with a one-line reason in err: -EWOULDBLOCK when another process holds the lock
 * (the reason names the file and the holder's pid), -errno for other failures.
 * who: 1-32 bytes of [A-Za-z0-9_-].
 */
int d11_datadir_lock(const char *dir, const char *who, char *err, size_t errlen);

/* Release a lock taken by d11_datadir_lock: empties the file (so it names no dead pid),
 * then closes fd. fd < 0 is a no-op. */
void d11_datadir_unlock(int fd);

#endif
