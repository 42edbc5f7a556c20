/* output.c - durable batched appends to the output file (see output.h). */
#include "output.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct rq_output {
    int fd;
    char *path;
    char *buf; /* reused between batches */
    size_t cap;
};

/* fsyncs the directory holding `path`. Returns 0 or -errno (EINVAL from filesystems that
 * cannot sync directories is not an error). */
static int sync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    int fd = -1;
    int rc = 0;

    if (copy == NULL)
        return -ENOMEM;
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    if (fsync(fd) < 0 && errno != EINVAL)
        rc = -errno;
out:
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

rq_output_t *rq_output_open(const char *path, char *err, size_t errlen)
{
    rq_output_t *out = NULL;
    int rc;

    if (path == NULL || path[0] == '\0') {
        if (errlen > 0)
            snprintf(err, errlen, "output file path is empty");
        return NULL;
    }
    out = calloc(1, sizeof(*out));
    if (out == NULL)
        goto nomem;
    out->fd = -1;
    out->path = strdup(path);
    if (out->path == NULL)
        goto nomem;
    out->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out->fd < 0) {
        if (errlen > 0)
            snprintf(err, errlen, "cannot open output file %s: %s", path, strerror(errno));
        goto err;
    }
    rc = sync_parent_dir(path);
    if (rc < 0) {
        if (errlen > 0)
            snprintf(err, errlen, "cannot sync the directory of %s: %s", path, strerror(-rc));
        goto err;
    }
    return out;
nomem:
    if (errlen > 0)
        snprintf(err, errlen, "out of memory");
err:
    rq_output_free(out);
    return NULL;
}

int64_t rq_output_append_batch(rq_output_t *out, const char *const *lines, const size_t *lens,
                               const char *const *ids, size_t n)
{
    struct stat st;
    size_t total = 0;
    size_t off = 0;
    int64_t rc;

    (void)ids; /* used by the exactly-once writer (issue 3) */
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > SIZE_MAX - total - 1)
            return -EOVERFLOW;
        total += lens[i] + 1;
    }
    if (total > out->cap) {
        size_t cap = out->cap > 0 ? out->cap : 4096;
        char *nb;

        while (cap < total)
            cap = cap > SIZE_MAX / 2 ? total : cap * 2;
        nb = realloc(out->buf, cap);
        if (nb == NULL)
            return -ENOMEM;
        out->buf = nb;
        out->cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > 0)
            memcpy(out->buf + off, lines[i], lens[i]);
        off += lens[i];
        out->buf[off++] = '\n';
    }

    if (fstat(out->fd, &st) < 0)
        return -errno;
    off = 0;
    while (off < total) {
        ssize_t w = write(out->fd, out->buf + off, total - off);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = w < 0 ? -errno : -EIO;
            /* Leave no half batch behind: the caller will not ack, so the messages come back
             * and are written again. */
            if (off > 0 && ftruncate(out->fd, st.st_size) < 0)
                rc = -EIO;
            return rc;
        }
        off += (size_t)w;
    }
    while (fdatasync(out->fd) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return (int64_t)n;
}

const char *rq_output_path(const rq_output_t *out)
{
    return out->path;
}

void rq_output_free(rq_output_t *out)
{
    if (out == NULL)
        return;
    if (out->fd >= 0)
        close(out->fd);
    free(out->buf);
    free(out->path);
    free(out);
}
