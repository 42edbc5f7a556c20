/* tail_watch.c - inotify, stat and the rotation and truncation verdicts (see tail_watch.h). */
#include "tail_watch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "linesplit.h"
#include "log.h"
#include "util.h"

struct rq_tail_watch {
    char *dir;
    int poll_ms;
    int in_fd, dir_wd, file_wd;
    int64_t last_dir_watch_ms;
};

rq_tail_watch_t *rq_tail_watch_new(const char *dir, int use_inotify, int poll_ms)
{
    rq_tail_watch_t *w = calloc(1, sizeof(*w));

    if (w == NULL)
        goto err;
    w->in_fd = w->dir_wd = w->file_wd = -1;
    w->poll_ms = poll_ms;
    w->last_dir_watch_ms = -1000000;
    w->dir = strdup(dir);
    if (w->dir == NULL)
        goto err;
    if (use_inotify) {
        w->in_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->in_fd < 0)
            rq_warn("tailer: inotify unavailable (%s); polling every %d ms", RQ_STRERR(errno),
                    poll_ms);
    }
    return w;

err:
    rq_tail_watch_free(w);
    return NULL;
}

void rq_tail_watch_free(rq_tail_watch_t *w)
{
    if (w == NULL)
        return;
    if (w->in_fd >= 0)
        close(w->in_fd);
    free(w->dir);
    free(w);
}

int rq_tail_watch_fd(const rq_tail_watch_t *w)
{
    return w->in_fd;
}

void rq_tail_watch_dir(rq_tail_watch_t *w, int64_t now)
{
    if (w->in_fd < 0 || w->dir_wd >= 0 || now - w->last_dir_watch_ms < w->poll_ms)
        return;
    w->last_dir_watch_ms = now;
    w->dir_wd = inotify_add_watch(w->in_fd, w->dir,
                                  IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_ATTRIB |
                                      IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR);
}

void rq_tail_watch_file(rq_tail_watch_t *w, int fd, const char *path)
{
    char proc[64];

    const uint32_t mask = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF;
    int wd;

    if (w->in_fd < 0)
        return;
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    wd = inotify_add_watch(w->in_fd, proc, mask);
    if (wd < 0)
        wd = inotify_add_watch(w->in_fd, path, mask);
    /* The same inode keeps its watch descriptor; drop the old watch only if it differs. */
    if (w->file_wd >= 0 && w->file_wd != wd)
        inotify_rm_watch(w->in_fd, w->file_wd);
    w->file_wd = wd;
}

void rq_tail_watch_unwatch_file(rq_tail_watch_t *w)
{
    if (w->in_fd >= 0 && w->file_wd >= 0)
        inotify_rm_watch(w->in_fd, w->file_wd);
    w->file_wd = -1;
}

void rq_tail_watch_drain(rq_tail_watch_t *w)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

    for (;;) {
        ssize_t n = read(w->in_fd, buf, sizeof(buf));
        if (n <= 0)
            return;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)(void *)p;
            if (ev->mask & IN_IGNORED) {
                if (ev->wd == w->dir_wd)
                    w->dir_wd = -1;
                if (ev->wd == w->file_wd)
                    w->file_wd = -1;
            }
            p += sizeof(*ev) + ev->len;
        }
    }
}

ssize_t rq_tail_pread_all(int fd, void *buf, size_t n, int64_t off)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + (int64_t)got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

rq_tail_verdict_kind_t rq_tail_watch_check(const rq_tail_reading_t *r, rq_tail_verdict_t *v)
{
    unsigned char
        buf[RQ_TAIL_FP_BYTES > RQ_LINESPLIT_WINDOW ? RQ_TAIL_FP_BYTES : RQ_LINESPLIT_WINDOW];
    struct stat sb, ps;
    ssize_t n;

    memset(v, 0, sizeof(*v));
    v->have_size = fstat(r->fd, &sb) == 0;
    if (v->have_size) {
        v->size = (int64_t)sb.st_size;
        if (v->size < r->read_pos) {
            v->why = "was truncated";
            return v->kind = RQ_TAIL_TRUNCATED;
        }
    }
    if (r->last_len > 0) {
        n = rq_tail_pread_all(r->fd, buf, r->last_len, r->read_pos - (int64_t)r->last_len);
        if (n >= 0 && ((size_t)n != r->last_len || memcmp(buf, r->last, (size_t)n))) {
            v->why = "was rewritten before the read position (copytruncate?)";
            return v->kind = RQ_TAIL_TRUNCATED;
        }
    }
    if (r->id->fp_len > 0) {
        n = rq_tail_pread_all(r->fd, buf, r->id->fp_len, 0);
        if (n >= 0 && ((size_t)n != r->id->fp_len || memcmp(buf, r->head, (size_t)n))) {
            v->why = "had its first bytes rewritten (copytruncate?)";
            return v->kind = RQ_TAIL_TRUNCATED;
        }
    }
    v->path_exists = stat(r->path, &ps) == 0;
    if (v->path_exists && (uint64_t)ps.st_dev == r->id->dev && (uint64_t)ps.st_ino == r->id->ino)
        return v->kind = RQ_TAIL_AT_PATH;
    v->unlinked = v->have_size && sb.st_nlink == 0;
    return v->kind = RQ_TAIL_MOVED;
}

int rq_tail_watch_find(const char *dir, const rq_tail_state_t *st, char *name, size_t namelen)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int fd = -1;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        struct stat sb;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if ((uint64_t)sb.st_dev != st->ident.dev || (uint64_t)sb.st_ino != st->ident.ino)
            continue;
        fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0 && rq_tail_state_verify(st, fd, NULL, 0) != RQ_TAIL_SAME) {
            close(fd);
            fd = -1;
        }
        if (fd >= 0)
            snprintf(name, namelen, "%s", e->d_name);
        break;
    }
    closedir(d);
    return fd;
}
