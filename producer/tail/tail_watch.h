/* tail_watch.h - what happened to the tailed file: inotify wake-ups, and verdicts from stat
 * and the bytes read (truncated, rewritten, rotated away). Nothing here changes the tailer's
 * state: the checks return a verdict and the tail thread acts on it. Tail thread only.
 */
#ifndef RQ_TAIL_WATCH_H
#define RQ_TAIL_WATCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tail_state.h"

typedef struct rq_tail_watch rq_tail_watch_t;

/* Watches for changes to the files in folder `dir` (copied) through inotify when use_inotify
 * is set and inotify is available (else logs a warning once: the caller polls every poll_ms,
 * which also paces the retries of a missing folder's watch). Returns a new watcher (free with
 * rq_tail_watch_free), or NULL when out of memory. */
rq_tail_watch_t *rq_tail_watch_new(const char *dir, int use_inotify, int poll_ms);

/* Closes the inotify instance. NULL is a no-op. */
void rq_tail_watch_free(rq_tail_watch_t *w);

/* The descriptor to poll for POLLIN (then call rq_tail_watch_drain), or -1 without inotify. */
int rq_tail_watch_fd(const rq_tail_watch_t *w);

/* (Re)watches the folder if its watch is gone, at most once per poll_ms (now: monotonic ms). */
void rq_tail_watch_dir(rq_tail_watch_t *w, int64_t now);

/* Watches the open file fd (through /proc, so the watch lands on the open file even if
 * `path` moved meanwhile; `path` is the fallback), replacing the previous file's watch. */
void rq_tail_watch_file(rq_tail_watch_t *w, int fd, const char *path);

/* Drops the file's watch (the file is closed). */
void rq_tail_watch_unwatch_file(rq_tail_watch_t *w);

/* Reads every pending event; notes the watches the kernel removed. */
void rq_tail_watch_drain(rq_tail_watch_t *w);

/* pread until n bytes, end of file or an error. Returns the bytes read, or -1 (errno set). */
ssize_t rq_tail_pread_all(int fd, void *buf, size_t n, int64_t off);

/* What the tail thread has read of its open file, for rq_tail_watch_check (all borrowed). */
typedef struct rq_tail_reading {
    int fd;
    const char *path;          /* the tailed path */
    const rq_tail_ident_t *id; /* the open file's identity and fingerprint length */
    const unsigned char *head; /* its first id->fp_len bytes */
    int64_t read_pos;          /* file offset of the next read */
    const unsigned char *last; /* the last_len file bytes just before read_pos */
    size_t last_len;
} rq_tail_reading_t;

typedef enum {
    RQ_TAIL_AT_PATH = 0, /* the path names the open file */
    RQ_TAIL_TRUNCATED,   /* the open file no longer holds what was read: start it again */
    RQ_TAIL_MOVED,       /* the path names another file, or none */
} rq_tail_verdict_kind_t;

typedef struct rq_tail_verdict {
    rq_tail_verdict_kind_t kind;
    const char *why; /* TRUNCATED: static text for the log ("was truncated", ...) */
    int have_size;   /* fstat worked: `size` is the open file's size */
    int64_t size;
    int path_exists; /* MOVED: another file is at the path */
    int unlinked;    /* MOVED: the open file has no name left (deleted) */
} rq_tail_verdict_t;

/* Looks for truncation or rewriting of the open file (its size below read_pos, the bytes
 * before read_pos or its first bytes changed), then for another file (or none) at the path.
 * Fills *v; returns v->kind. */
rq_tail_verdict_kind_t rq_tail_watch_check(const rq_tail_reading_t *r, rq_tail_verdict_t *v);

/* Looks in folder `dir` for the file of the saved state `st` (renamed by a rotation while the
 * producer was down): same device and inode, verified to hold the saved position. Returns an
 * open fd (the caller's) with its name in `name` (namelen bytes), or -1. */
int rq_tail_watch_find(const char *dir, const rq_tail_state_t *st, char *name, size_t namelen);

#endif
