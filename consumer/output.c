/* output.c - the exactly-once output writer: ledger, lock, recovery (see output.h). */
#include "output.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"
#include "seen.h"
#include "util.h"

#define COMPACT_BYTES (8u << 20)
#define MAX_FILES 1024
#define MAX_FILE_ID 128
#define MAX_IOV 1024 /* Linux's IOV_MAX (UIO_MAXIOV) */

struct rq_output {
    char *path, *ledger_path, *lock_path;
    int fd, ledger_fd, lock_fd;
    dev_t dev; /* identity of the output file open as fd (rotation: see follow_path) */
    ino_t ino;
    ino_t ledger_ino;
    off_t ledger_pos; /* bytes of the ledger already applied to the index */
    size_t id_window;
    size_t compact_bytes;
    off_t compacted; /* ledger size right after the last compaction */
    rq_seen_t *seen;
    char *buf; /* reused: the ledger record */
    size_t cap;
    struct seg *segs; /* reused: what the current batch writes */
    size_t nsegs, segcap;
    struct iovec *iov; /* reused: the output bytes, pointing into the lines (no copy) */
    size_t iovcap;
    int opened; /* rq_output_open() succeeded: rq_output_free() records a clean close */
};

/* One piece of a batch to write: a chunk's uncovered part [a, b) (a < b), or a whole line
 * (a == b == 0: the line, plus '\n' unless verbatim). */
typedef struct seg {
    size_t line;
    int64_t a, b;
} seg_t;

/* A parsed ledger record, before it is applied. */
typedef struct record {
    char *text;    /* its bytes, read from the ledger (catch_up's buffer) */
    off_t at, end; /* byte range in the ledger */
    int64_t before, after;
    int has_ident; /* the output file's device and inode were recorded (not in old ledgers) */
    unsigned long long dev, ino;
} record_t;

/* Shrinks fd to len bytes; a file already at most len bytes long (rotated, copytruncated) is
 * left alone: ftruncate must never grow an output file (it would fill it with NUL bytes).
 * Returns 0 or -errno. */
static int shrink_to(int fd, off_t len)
{
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    if (st.st_size <= len)
        return 0;
    return ftruncate(fd, len) < 0 ? -errno : 0;
}

static int sync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    int fd, rc = 0;

    if (copy == NULL)
        return -ENOMEM;
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (fsync(fd) < 0 && errno != EINVAL))
        rc = -errno;
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

static int reserve(rq_output_t *out, size_t need)
{
    if (need <= out->cap)
        return 0;
    size_t ncap = out->cap ? out->cap : 65536;
    while (ncap < need)
        ncap *= 2;
    char *nb = realloc(out->buf, ncap);
    if (nb == NULL)
        return -ENOMEM;
    out->buf = nb;
    out->cap = ncap;
    return 0;
}

/* A file id from a message header goes into the ledger as a token: keep it to safe bytes. */
static int file_id_ok(const char *id)
{
    size_t n = 0;

    for (; id[n] != '\0'; n++) {
        char ch = id[n];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == ':' || ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return n > 0 && n <= MAX_FILE_ID;
}

/* Applies the body lines of one record (between "B" and "E") to the index. */
static int apply_record(rq_output_t *out, char *p, char *end)
{
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char id[MAX_FILE_ID + 1];
        long long a, b;
        unsigned long long h;

        if (nl == NULL)
            break;
        *nl = '\0';
        if (p[0] == 'R' && sscanf(p, "R %128s %lld %lld", id, &a, &b) == 3) {
            if (rq_seen_add_range(out->seen, id, a, b) != 0)
                return -ENOMEM;
        } else if (p[0] == 'H' && sscanf(p, "H %llx", &h) == 1) {
            rq_seen_add_hash(out->seen, (uint64_t)h);
        }
        *nl = '\n';
        p = nl + 1;
    }
    return 0;
}

/* Rotation: when the file at PATH is not the one open (renamed away, deleted, replaced),
 * opens (creating) the file at PATH and writes there from now on. Lock held. Returns 0 or
 * -errno (the old file stays in use). */
static int follow_path(rq_output_t *out)
{
    struct stat st;
    int fd;

    if (stat(out->path, &st) == 0 && st.st_dev == out->dev && st.st_ino == out->ino)
        return 0;
    fd = open(out->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (out->fd >= 0)
        close(out->fd);
    out->fd = fd;
    out->dev = st.st_dev;
    out->ino = st.st_ino;
    sync_parent_dir(out->path);
    rq_info("output %s was rotated: writing to the new file (%lld bytes)", out->path,
            (long long)st.st_size);
    return 0;
}

/* Writes all len bytes of buf at `at` in fd. A write cut short (a full disk stores what fits
 * and returns less) goes on with the rest, so a failure reports the disk's own errno
 * (ENOSPC, EFBIG, EDQUOT), never a made-up EIO. Returns 0 or -errno. */
static int pwrite_all(int fd, const char *buf, size_t len, off_t at)
{
    while (len > 0) {
        ssize_t w = pwrite(fd, buf, len, at);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -ENOSPC; /* no progress and no error: nothing more fits */
        buf += w;
        len -= (size_t)w;
        at += w;
    }
    return 0;
}

/* Voids a record in place: its 'R' and 'H' lines become '#' lines, which apply nothing. Its
 * length and so every offset in the ledger stay the same (other processes sharing it keep
 * their place), and a voided record is still a record (older versions skip '#' lines too).
 * Synced. Returns 0 or -errno. */
static int void_record(rq_output_t *out, const record_t *r)
{
    char *p = memchr(r->text, '\n', (size_t)(r->end - r->at));
    char *e = r->text + (r->end - r->at);
    int changed = 0, rc;

    for (p = p ? p + 1 : e; p < e; p++) {
        if (*p == 'R' || *p == 'H') {
            *p = '#';
            changed = 1;
        }
        p = memchr(p, '\n', (size_t)(e - p));
        if (p == NULL)
            break;
    }
    if (!changed)
        return 0;
    rc = pwrite_all(out->ledger_fd, r->text, (size_t)(r->end - r->at), r->at);
    if (rc == 0 && fdatasync(out->ledger_fd) < 0)
        rc = -errno;
    return rc;
}

/* A record naming another file than the one at PATH: logrotate's first name for it
 * (PATH.1, kept uncompressed by `delaycompress`) is where its lines are. Returns 1 when that
 * file holds the whole commit, else 0 (a half-done commit found there is cut back to its
 * "before", so that the rotated file ends with a whole line). */
static int verify_in_rotated(rq_output_t *out, const record_t *last)
{
    char *old = malloc(strlen(out->path) + 3);
    struct stat st;
    int fd = -1, ok = 0;

    if (old == NULL)
        return 0;
    sprintf(old, "%s.1", out->path);
    fd = open(old, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fstat(fd, &st) < 0 || last->dev != (unsigned long long)st.st_dev ||
        last->ino != (unsigned long long)st.st_ino || st.st_size < last->before)
        goto out;
    if (st.st_size >= last->after) {
        ok = 1;
    } else if (shrink_to(fd, last->before) == 0 && fdatasync(fd) == 0) {
        rq_warn("output %s: cut a half-done commit off the rotated file %s", out->path, old);
    }
out:
    if (fd >= 0)
        close(fd);
    free(old);
    return ok;
}

/* Checks the newest ledger record against the output file open now. Returns 1 when the
 * record names another file (the caller may follow the path and ask again); else 0, with
 * *dropped = 1 when the record's entries must not be applied, or -errno. Its entries are
 * voided in the ledger (void_record) when:
 * - its commit is half done in this file: the output is cut back to "before" first;
 * - it cannot be verified: it names a file that is gone (rotated: unless PATH.1 is that file
 *   and holds the commit), or this file is shorter than its "before" (copytruncate), or it
 *   is an old record without identity and this file is shorter than its "before".
 * Forgetting such a commit writes its lines again if they come again (a duplicate at worst,
 * and only if the commit ended and its ack was lost); keeping it would skip the redelivery
 * of a commit cut short by a crash (a loss). After a clean close the newest record is an
 * empty checkpoint, so nothing is forgotten in the normal case. */
static int settle_newest(rq_output_t *out, const record_t *last, int *dropped)
{
    struct stat ost;
    int rc;

    *dropped = 0;
    if (fstat(out->fd, &ost) < 0)
        return -errno;
    if (last->has_ident && (last->dev != (unsigned long long)ost.st_dev ||
                            last->ino != (unsigned long long)ost.st_ino)) {
        struct stat pst;

        if (stat(out->path, &pst) < 0 || pst.st_dev != ost.st_dev || pst.st_ino != ost.st_ino)
            return 1; /* we hold a rotated file: follow the path, then ask again */
        if (verify_in_rotated(out, last))
            return 0;
        rq_warn("output %s: the newest commit names a file that is gone (rotated): its "
                "entries are forgotten (a redelivery is written again)",
                out->path);
        *dropped = 1;
        return void_record(out, last);
    }
    if (ost.st_size >= last->after)
        return 0;
    if (ost.st_size < last->before) {
        rq_info("output %s is shorter (%lld bytes) than before the newest commit (%lld): "
                "rotated (copytruncate?), not rolled back; its entries are forgotten",
                out->path, (long long)ost.st_size, (long long)last->before);
        *dropped = 1;
        return void_record(out, last);
    }
    rq_warn("output %s: rolling back a half-done commit (%lld of %lld bytes)", out->path,
            (long long)(ost.st_size - last->before), (long long)(last->after - last->before));
    if (shrink_to(out->fd, last->before) != 0 || fdatasync(out->fd) < 0)
        return -(errno ? errno : EIO);
    rc = void_record(out, last);
    *dropped = 1;
    return rc;
}

/* Catch-up phase "check": starts over (out->ledger_pos 0, an empty index) when another
 * process replaced the ledger (compaction) or it is shorter than what was applied. Leaves the
 * ledger's size in *size. Returns 0 or -errno. */
static int check_ledger(rq_output_t *out, off_t *size)
{
    struct stat st, lst;

    /* Another process compacted the ledger (rename): start over from the new file. */
    if (stat(out->ledger_path, &lst) == 0 && lst.st_ino != out->ledger_ino) {
        int fd = open(out->ledger_path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return -errno;
        close(out->ledger_fd);
        out->ledger_fd = fd;
        out->ledger_ino = lst.st_ino;
        out->ledger_pos = 0;
        rq_seen_free(out->seen);
        out->seen = rq_seen_new(out->id_window, MAX_FILES);
        if (out->seen == NULL)
            return -ENOMEM;
    }
    if (fstat(out->ledger_fd, &st) < 0)
        return -errno;
    if (st.st_size < out->ledger_pos) {
        /* Shorter than what we applied (cut by hand, or by an older version rolling back):
         * our offsets mean nothing any more: start over from the ledger as it is. */
        rq_warn("output ledger %s shrank under us: reloading it", out->ledger_path);
        rq_seen_free(out->seen);
        out->seen = rq_seen_new(out->id_window, MAX_FILES);
        if (out->seen == NULL)
            return -ENOMEM;
        out->ledger_pos = 0;
    }
    *size = st.st_size;
    return 0;
}

/* Catch-up phase "read": the ledger's bytes [pos, size) into *data, a new buffer of one more
 * byte for the caller to free (NULL when there is nothing new). Returns 0 or -errno (*data
 * NULL). */
static int read_ledger(rq_output_t *out, off_t pos, off_t size, char **data)
{
    ssize_t got;

    *data = NULL;
    if (size <= pos)
        return 0;
    *data = malloc((size_t)(size - pos) + 1);
    if (*data == NULL)
        return -ENOMEM;
    got = pread(out->ledger_fd, *data, (size_t)(size - pos), pos);
    if (got != size - pos) {
        int rc = got < 0 ? -errno : -EIO;
        free(*data);
        *data = NULL;
        return rc;
    }
    return 0;
}

/* Catch-up phase "parse": cuts data (the ledger's bytes from offset pos to size; NULL: none)
 * into its complete records, in *recs (a new array for the caller to free, pointing into
 * data) and *nrec; a torn last record is left out. Pure. Returns 0 or -ENOMEM (*recs NULL,
 * *nrec 0). */
static int parse_records(char *data, off_t pos, off_t size, record_t **recs, size_t *nrec)
{
    char *p = data, *dend = data ? data + (size - pos) : NULL;
    size_t crec = 0;

    *recs = NULL;
    *nrec = 0;
    while (p != NULL && p < dend) {
        long long b, a;
        unsigned long long dev = 0, ino = 0;
        char *nl = memchr(p, '\n', (size_t)(dend - p));
        char *e;
        int nf;
        if (nl == NULL || p[0] != 'B')
            break;
        *nl = '\0'; /* sscanf must not read past the record's first line */
        nf = sscanf(p, "B %lld %lld %llu %llu", &b, &a, &dev, &ino);
        *nl = '\n';
        if (nf != 2 && nf != 4)
            break;
        /* the record ends at a line "E\n" */
        e = nl + 1;
        while (e < dend && !(e[0] == 'E' && e + 1 < dend && e[1] == '\n')) {
            char *n2 = memchr(e, '\n', (size_t)(dend - e));
            if (n2 == NULL) {
                e = dend;
                break;
            }
            e = n2 + 1;
        }
        if (e >= dend)
            break; /* torn: its writer died mid-write */
        if (*nrec == crec) {
            size_t nc = crec ? crec * 2 : 16;
            record_t *nr = realloc(*recs, nc * sizeof(*nr));
            if (nr == NULL) {
                free(*recs);
                *recs = NULL;
                *nrec = 0;
                return -ENOMEM;
            }
            *recs = nr;
            crec = nc;
        }
        (*recs)[*nrec] =
            (record_t){p, pos + (p - data), pos + (e + 2 - data), b, a, nf == 4, dev, ino};
        (*nrec)++;
        p = e + 2;
    }
    return 0;
}

/* Catch-up phase "cut": a torn record after `complete` (its writer died mid-write) is cut off
 * the ledger, which then ends at `complete`. Returns 0 or -errno. */
static int cut_torn(rq_output_t *out, off_t complete, off_t size)
{
    if (complete >= size)
        return 0;
    rq_warn("output ledger %s: dropping a torn record (%lld bytes)", out->ledger_path,
            (long long)(size - complete));
    if (ftruncate(out->ledger_fd, complete) < 0)
        return -errno;
    return 0;
}

/* Catch-up phase "settle": the newest commit `last` (NULL: no record) must be fully in the
 * output, else it is undone (settle_newest); then the output at PATH is followed. Returns 0
 * with out->fd the file at PATH, or -errno (-EAGAIN: the path kept changing). */
static int settle_and_follow(rq_output_t *out, const record_t *last)
{
    int rc = 0;

    /* The newest commit must be fully in the output, else undo it: checked against the file
     * it names, so before following a rename when we still hold that file, else after. A
     * dropped record is voided in the ledger and stays there: its offsets do not move. */
    if (last != NULL) {
        int dropped = 0;
        int r = settle_newest(out, last, &dropped);

        for (int k = 0; r == 1 && k < 3 && (rc = follow_path(out)) == 0; k++)
            r = settle_newest(out, last, &dropped);
        if (r == 1 && rc == 0)
            r = -EAGAIN; /* the path keeps changing under us: try again later */
        if (r < 0)
            return r;
    }
    if (rc == 0)
        rc = follow_path(out);
    return rc;
}

/* Catch-up phase "apply": the entries of recs[0..nrec) (records of data, which starts at
 * ledger offset pos) into the index. Returns 0 or -ENOMEM (stops at the first failure). */
static int apply_records(rq_output_t *out, char *data, off_t pos, const record_t *recs, size_t nrec)
{
    int rc = 0;

    for (size_t i = 0; i < nrec && rc == 0; i++) {
        char *rs = data + (recs[i].at - pos);
        char *re = data + (recs[i].end - pos);
        char *first_nl = memchr(rs, '\n', (size_t)(re - rs));
        rc = apply_record(out, first_nl + 1, re - 2);
    }
    return rc;
}

/* Reads the ledger from ledger_pos to its end, repairs a torn tail or a half-done newest
 * commit, and applies the complete records: check -> read -> parse -> cut -> settle -> apply.
 * Called with the lock held. Returns 0 or -errno; out->ledger_pos moves past the last record
 * kept once the records were applied (even when applying one failed). */
static int catch_up(rq_output_t *out)
{
    off_t size = 0, pos;
    char *data = NULL;
    record_t *recs = NULL;
    size_t nrec = 0;
    int rc;

    rc = check_ledger(out, &size);
    if (rc != 0)
        return rc;
    pos = out->ledger_pos;
    rc = read_ledger(out, pos, size, &data);
    if (rc != 0)
        goto out;
    /* Parse records; remember where each starts so the newest can be undone. */
    rc = parse_records(data, pos, size, &recs, &nrec);
    if (rc != 0)
        goto out;
    rc = cut_torn(out, nrec > 0 ? recs[nrec - 1].end : pos, size);
    if (rc != 0)
        goto out;
    rc = settle_and_follow(out, nrec > 0 ? &recs[nrec - 1] : NULL);
    if (rc != 0)
        goto out;
    rc = apply_records(out, data, pos, recs, nrec);
    /* Next time, read on from the end of the last record kept. */
    out->ledger_pos = nrec > 0 ? recs[nrec - 1].end : pos;

out:
    free(recs);
    free(data);
    return rc;
}

rq_output_t *rq_output_open(const char *path, size_t id_window, char *err, size_t errlen)
{
    rq_output_t *out = calloc(1, sizeof(*out));
    struct stat st;
    int rc;

    if (out == NULL) {
        rq_errf(err, errlen, "out of memory");
        goto fail;
    }
    out->fd = out->ledger_fd = out->lock_fd = -1;
    out->id_window = id_window ? id_window : 1;
    out->compact_bytes = COMPACT_BYTES;
    out->path = strdup(path);
    out->ledger_path = malloc(strlen(path) + 8);
    out->lock_path = malloc(strlen(path) + 8);
    out->seen = rq_seen_new(out->id_window, MAX_FILES);
    if (out->path == NULL || out->ledger_path == NULL || out->lock_path == NULL ||
        out->seen == NULL) {
        rq_errf(err, errlen, "out of memory");
        goto fail;
    }
    sprintf(out->ledger_path, "%s.ledger", path);
    sprintf(out->lock_path, "%s.lock", path);
    out->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (out->fd < 0 || fstat(out->fd, &st) < 0) {
        rq_errf(err, errlen, "cannot open output file %s: %s", path, RQ_STRERR(errno));
        goto fail;
    }
    out->dev = st.st_dev;
    out->ino = st.st_ino;
    out->ledger_fd = open(out->ledger_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    out->lock_fd = open(out->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (out->ledger_fd < 0 || out->lock_fd < 0) {
        rq_errf(err, errlen, "cannot open %s or %s: %s", out->ledger_path, out->lock_path,
                RQ_STRERR(errno));
        goto fail;
    }
    if (fstat(out->ledger_fd, &st) < 0) {
        rq_errf(err, errlen, "cannot stat %s: %s", out->ledger_path, RQ_STRERR(errno));
        goto fail;
    }
    out->ledger_ino = st.st_ino;
    sync_parent_dir(path);
    if (flock(out->lock_fd, LOCK_EX) < 0) {
        rq_errf(err, errlen, "cannot lock %s: %s", out->lock_path, RQ_STRERR(errno));
        goto fail;
    }
    rc = catch_up(out);
    flock(out->lock_fd, LOCK_UN);
    if (rc != 0) {
        rq_errf(err, errlen, "cannot load %s: %s", out->ledger_path, RQ_STRERR(-rc));
        goto fail;
    }
    out->opened = 1;
    return out;

fail:
    rq_output_free(out);
    return NULL;
}

/* Line i duplicates an earlier line of the same batch. */
static int dup_in_batch(const rq_output_line_t *l, size_t i)
{
    for (size_t j = 0; j < i; j++) {
        if (!l[j].written)
            continue;
        if (l[i].file_id && l[j].file_id && strcmp(l[i].file_id, l[j].file_id) == 0 &&
            l[i].start >= l[j].start && l[i].start < l[j].end)
            return 1;
        if (!l[i].file_id && !l[j].file_id && l[i].msg_id && l[j].msg_id &&
            l[i].msg_id_len == l[j].msg_id_len &&
            memcmp(l[i].msg_id, l[j].msg_id, l[i].msg_id_len) == 0)
            return 1;
    }
    return 0;
}

struct compact_ctx {
    FILE *f;
};

static void compact_cb(const char *file_id, int64_t start, int64_t end, uint64_t hash, void *arg)
{
    struct compact_ctx *c = arg;

    if (file_id)
        fprintf(c->f, "R %s %" PRId64 " %" PRId64 "\n", file_id, start, end);
    else
        fprintf(c->f, "H %016" PRIx64 "\n", hash);
}

/* Rewrites the ledger as one record of the whole index. Lock held. Best effort. */
static void compact(rq_output_t *out)
{
    char *tmp = malloc(strlen(out->ledger_path) + 5);
    struct compact_ctx c = {NULL};
    struct stat st;
    int fd;

    if (tmp == NULL || fstat(out->fd, &st) < 0)
        goto out;
    sprintf(tmp, "%s.tmp", out->ledger_path);
    c.f = fopen(tmp, "w");
    if (c.f == NULL)
        goto out;
    fprintf(c.f, "B %lld %lld %llu %llu\n", (long long)st.st_size, (long long)st.st_size,
            (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    rq_seen_each(out->seen, compact_cb, &c);
    fprintf(c.f, "E\n");
    if (fflush(c.f) != 0 || fsync(fileno(c.f)) != 0 || fclose(c.f) != 0) {
        c.f = NULL;
        unlink(tmp);
        goto out;
    }
    c.f = NULL;
    if (rename(tmp, out->ledger_path) != 0) {
        unlink(tmp);
        goto out;
    }
    sync_parent_dir(out->ledger_path);
    fd = open(out->ledger_path, O_RDWR | O_CLOEXEC);
    if (fd >= 0 && fstat(fd, &st) == 0) {
        close(out->ledger_fd);
        out->ledger_fd = fd;
        out->ledger_ino = st.st_ino;
        out->ledger_pos = st.st_size;
        out->compacted = st.st_size;
        rq_info("output ledger compacted to %lld bytes", (long long)st.st_size);
    } else if (fd >= 0) {
        close(fd);
    }
out:
    if (c.f)
        fclose(c.f);
    free(tmp);
}

static int push_seg(rq_output_t *out, size_t line, int64_t a, int64_t b)
{
    if (out->nsegs == out->segcap) {
        size_t ncap = out->segcap ? out->segcap * 2 : 256;
        seg_t *ns = realloc(out->segs, ncap * sizeof(*ns));
        if (ns == NULL)
            return -ENOMEM;
        out->segs = ns;
        out->segcap = ncap;
    }
    out->segs[out->nsegs].line = line;
    out->segs[out->nsegs].a = a;
    out->segs[out->nsegs].b = b;
    out->nsegs++;
    return 0;
}

/* Appends every byte of iov[0..cnt) to fd, open with O_APPEND: the kernel puts each write at
 * the end of the file as it is at that instant, so a truncate (copytruncate) landing at any
 * moment never leaves a hole before the bytes. Several writev calls past IOV_MAX or after a
 * short write. Changes iov. Returns 0 or -errno. */
static int writev_all(int fd, struct iovec *iov, size_t cnt)
{
    while (cnt > 0) {
        int k = cnt < MAX_IOV ? (int)cnt : MAX_IOV;
        ssize_t w = writev(fd, iov, k);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        while (cnt > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (w > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static int64_t count_newlines(const char *p, size_t n)
{
    const char *e = p + n;
    int64_t c = 0;

    while (p < e && (p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
        c++;
        p++;
    }
    return c;
}

typedef struct gap_ctx {
    rq_output_t *out;
    const rq_seen_t *batch; /* what earlier entries of this batch write */
    const char *file_id;
    size_t line;
} gap_ctx_t;

/* A part not in the output yet: keep the parts not written earlier in the batch either. */
static int batch_gap(int64_t a, int64_t b, void *arg)
{
    gap_ctx_t *c = arg;

    return push_seg(c->out, c->line, a, b);
}

static int index_gap(int64_t a, int64_t b, void *arg)
{
    gap_ctx_t *c = arg;

    return rq_seen_each_gap(c->batch, c->file_id, a, b, batch_gap, c);
}

static size_t seg_bytes(const rq_output_line_t *lines, const seg_t *sg)
{
    const rq_output_line_t *l = &lines[sg->line];

    if (sg->b > sg->a)
        return (size_t)(sg->b - sg->a);
    return l->len + (l->verbatim ? 0 : 1);
}

/* Decides what of each line is new (setting `written`), as segments in out->segs. */
static int plan(rq_output_t *out, rq_output_line_t *lines, size_t n, rq_seen_t **batch)
{
    int rc;

    out->nsegs = 0;
    for (size_t i = 0; i < n; i++) {
        rq_output_line_t *l = &lines[i];
        size_t first = out->nsegs;

        l->written = 0;
        l->newlines = 0;
        if (l->file_id != NULL && !file_id_ok(l->file_id))
            l->file_id = NULL; /* untrusted header: fall back to the message id */
        if (l->file_id != NULL && (l->start < 0 || l->end <= l->start))
            l->file_id = NULL; /* an impossible range (the decoder refuses them) */
        if (l->file_id != NULL && l->verbatim && l->end - l->start != (int64_t)l->len)
            l->file_id = NULL; /* a chunk whose range is not its body: whole or nothing */
        if (l->file_id != NULL && *batch == NULL) {
            *batch = rq_seen_new(1, MAX_FILES);
            if (*batch == NULL)
                return -ENOMEM;
        }
        if (l->file_id != NULL && l->verbatim) {
            gap_ctx_t c = {out, *batch, l->file_id, i};
            rc = rq_seen_each_gap(out->seen, l->file_id, l->start, l->end, index_gap, &c);
            if (rc != 0)
                return rc;
            for (size_t k = first; k < out->nsegs; k++)
                if (rq_seen_add_range(*batch, l->file_id, out->segs[k].a, out->segs[k].b) != 0)
                    return -ENOMEM;
            l->written = out->nsegs > first;
            continue;
        }
        if (l->file_id != NULL) {
            l->written = !rq_seen_has_range(out->seen, l->file_id, l->start) &&
                         !rq_seen_has_range(*batch, l->file_id, l->start);
            if (l->written && rq_seen_add_range(*batch, l->file_id, l->start,
                                                l->end > l->start ? l->end : l->start + 1) != 0)
                return -ENOMEM;
        } else if (l->msg_id != NULL) {
            l->written = !rq_seen_has_id(out->seen, l->msg_id, l->msg_id_len);
            if (l->written && dup_in_batch(lines, i))
                l->written = 0;
#ifdef RQ_PLANT_LOSE_EVERY
            /* The planted bug of tests/chaos/test_planted.sh: every Nth message is taken for
             * a duplicate, acked and never written. Never defined in a real build. */
            {
                static unsigned long planted;
                if (l->written && ++planted % RQ_PLANT_LOSE_EVERY == 0)
                    l->written = 0;
            }
#endif
        } else {
            l->written = 1;
        }
        if (l->written && (rc = push_seg(out, i, 0, 0)) != 0)
            return rc;
    }
    return 0;
}

/* Formats the batch's ledger record into out->buf (reserved): B before after dev ino / R or H
 * per segment / E. Returns its length. */
static size_t format_record(rq_output_t *out, const rq_output_line_t *lines, off_t before,
                            off_t after, const struct stat *st)
{
    char *p = out->buf;

    p += sprintf(p, "B %lld %lld %llu %llu\n", (long long)before, (long long)after,
                 (unsigned long long)st->st_dev, (unsigned long long)st->st_ino);
    for (size_t k = 0; k < out->nsegs; k++) {
        const seg_t *sg = &out->segs[k];
        const rq_output_line_t *l = &lines[sg->line];
        if (l->file_id != NULL && sg->b > sg->a)
            p += sprintf(p, "R %s %" PRId64 " %" PRId64 "\n", l->file_id, sg->a, sg->b);
        else if (l->file_id != NULL)
            p += sprintf(p, "R %s %" PRId64 " %" PRId64 "\n", l->file_id, l->start,
                         l->end > l->start ? l->end : l->start + 1);
        else if (l->msg_id != NULL)
            p += sprintf(p, "H %016" PRIx64 "\n", rq_seen_hash(l->msg_id, l->msg_id_len));
    }
    p += sprintf(p, "E\n");
    return (size_t)(p - out->buf);
}

/* Writes the record in out->buf at rec_at, in place of an earlier version of it (replaced:
 * the ledger is cut at rec_at first), and syncs. On failure the ledger is cut back to rec_at.
 * Returns 0 or -errno. */
static int put_record(rq_output_t *out, off_t rec_at, size_t len, int replace)
{
    int rc = 0;

    if (replace && ftruncate(out->ledger_fd, rec_at) < 0)
        rc = -errno;
    if (rc == 0)
        rc = pwrite_all(out->ledger_fd, out->buf, len, rec_at);
    if (rc == 0 && fdatasync(out->ledger_fd) < 0)
        rc = -errno;
    if (rc != 0) {
        if (ftruncate(out->ledger_fd, rec_at) < 0)
            rq_warn("cannot undo a ledger record: %s", RQ_STRERR(errno));
    }
    return rc;
}

/* How often a commit records the output's size again when it changed during the ledger's
 * sync (copytruncate) before it gives up (a write failure: the worker retries later). */
#define SIZE_TRIES 3

/* One commit in progress: its ledger record and what that record says. */
typedef struct commit {
    size_t bytes;   /* output bytes of the batch's segments */
    off_t rec_at;   /* where the record is in the ledger (out->ledger_pos) */
    size_t rec_len; /* its length as written */
    off_t before;   /* the output's size the record names: where the lines go */
    struct stat st; /* the output file the record names */
} commit_t;

/* Commit phase "buffers": room in out->buf for the record and in out->iov for the lines of
 * out->nsegs segments. Returns 0 or -ENOMEM (the buffers stay valid). */
static int reserve_commit(rq_output_t *out)
{
    int rc = reserve(out, out->nsegs * (MAX_FILE_ID + 64) + 128);

    if (rc != 0)
        return rc;
    if (out->iovcap < 2 * out->nsegs) {
        struct iovec *ni = realloc(out->iov, 2 * out->nsegs * sizeof(*ni));
        if (ni == NULL)
            return -ENOMEM;
        out->iov = ni;
        out->iovcap = 2 * out->nsegs;
    }
    return 0;
}

/* Commit phase "record": writes and syncs the record at out->ledger_pos (cm->rec_at), naming
 * the output's size right before the lines go in (cm->before, cm->st, cm->rec_len). Returns 0,
 * or -errno with the ledger cut back to cm->rec_at (-EAGAIN: the size kept changing). */
static int put_commit_record(rq_output_t *out, const rq_output_line_t *lines, commit_t *cm)
{
    struct stat now;
    int rc;

    /* The record first, naming the output's size right before the lines go in. The ledger's
     * sync takes milliseconds, long enough for a copytruncate to land: look again after it,
     * and record the new size when it changed. */
    cm->rec_at = out->ledger_pos;
    for (int tries = 0;; tries++) {
        if (fstat(out->fd, &cm->st) < 0) {
            rc = -errno;
            if (tries > 0 && ftruncate(out->ledger_fd, cm->rec_at) < 0)
                rq_warn("cannot undo a ledger record: %s", RQ_STRERR(errno));
            return rc;
        }
        cm->before = cm->st.st_size;
        cm->rec_len = format_record(out, lines, cm->before, cm->before + (off_t)cm->bytes, &cm->st);
        rc = put_record(out, cm->rec_at, cm->rec_len, tries > 0);
        if (rc != 0)
            return rc;
        if (fstat(out->fd, &now) < 0)
            now.st_size = -1;
        if (now.st_size == cm->before)
            return 0;
        if (tries + 1 == SIZE_TRIES) {
            rc = -EAGAIN;
            if (ftruncate(out->ledger_fd, cm->rec_at) < 0)
                rq_warn("cannot undo a ledger record: %s", RQ_STRERR(errno));
            return rc;
        }
        rq_info("output %s changed from %lld to %lld bytes during a commit (copytruncate?): "
                "recording the new size",
                out->path, (long long)cm->before, (long long)now.st_size);
    }
}

/* Commit phase "lines": appends the segments in one write and syncs the output; when a
 * truncate moved them, the record is rewritten to say where they are (cm->before,
 * cm->rec_len). Sets each line's `newlines`. Returns 0, or -errno with both the output and
 * the ledger cut back (the batch is then simply not there). */
static int write_lines(rq_output_t *out, rq_output_line_t *lines, commit_t *cm)
{
    static char nl = '\n';
    size_t niov = 0;
    off_t end = -1;
    int wrc;

    /* The lines, and the parts of chunks, in order: one write from the message bodies,
     * appended (O_APPEND) wherever the end of the file is when it lands. */
    for (size_t k = 0; k < out->nsegs; k++) {
        const seg_t *sg = &out->segs[k];
        rq_output_line_t *l = &lines[sg->line];
        const char *src = l->data;
        size_t len = l->len;
        if (sg->b > sg->a) {
            src = l->data + (sg->a - l->start);
            len = (size_t)(sg->b - sg->a);
        }
        if (len > 0)
            out->iov[niov++] = (struct iovec){(void *)src, len};
        if (l->verbatim) {
            l->newlines += count_newlines(src, len);
        } else {
            out->iov[niov++] = (struct iovec){&nl, 1};
            l->newlines = 1;
        }
    }
    wrc = writev_all(out->fd, out->iov, niov);
    if (wrc == 0 && (end = lseek(out->fd, 0, SEEK_CUR)) < 0)
        wrc = -errno;
    if (wrc == 0 && end - (off_t)cm->bytes != cm->before) {
        /* A truncate landed between the last look and the write (microseconds): the
         * lines are whole at the end of the file; say where before they are synced. */
        off_t at = end - (off_t)cm->bytes < 0 ? 0 : end - (off_t)cm->bytes;

        rq_info("output %s was truncated during a commit: its lines are at %lld, not %lld",
                out->path, (long long)at, (long long)cm->before);
        cm->before = at;
        cm->rec_len = format_record(out, lines, cm->before, end, &cm->st);
        wrc = put_record(out, cm->rec_at, cm->rec_len, 1);
    }
    if (wrc != 0 || fdatasync(out->fd) < 0) {
        int rc = wrc != 0 ? wrc : -(errno ? errno : EIO);
        /* Undo both, so the batch is simply not there (it will be redelivered). */
        if (shrink_to(out->fd, cm->before) != 0 || ftruncate(out->ledger_fd, cm->rec_at) < 0)
            rq_warn("cannot undo a failed output write: %s", RQ_STRERR(errno));
        return rc;
    }
    return 0;
}

/* Commit phase "index": adds what the committed batch wrote to out->seen. */
static void index_written(rq_output_t *out, const rq_output_line_t *lines)
{
    for (size_t k = 0; k < out->nsegs; k++) {
        const seg_t *sg = &out->segs[k];
        const rq_output_line_t *l = &lines[sg->line];
        if (l->file_id != NULL && sg->b > sg->a)
            rq_seen_add_range(out->seen, l->file_id, sg->a, sg->b);
        else if (l->file_id != NULL)
            rq_seen_add_range(out->seen, l->file_id, l->start,
                              l->end > l->start ? l->end : l->start + 1);
        else if (l->msg_id != NULL)
            rq_seen_add_id(out->seen, l->msg_id, l->msg_id_len);
    }
}

/* Under the lock: catch up -> plan -> buffers -> record -> lines -> index, then compact. */
int64_t rq_output_append_batch(rq_output_t *out, rq_output_line_t *lines, size_t n)
{
    commit_t cm;
    size_t nnew = 0;
    rq_seen_t *batch = NULL;
    int64_t rc;

    if (n == 0)
        return 0;
    memset(&cm, 0, sizeof(cm));
    if (flock(out->lock_fd, LOCK_EX) < 0)
        return -errno;
    rc = catch_up(out);
    if (rc != 0)
        goto out;
    rc = plan(out, lines, n, &batch);
    if (rc != 0)
        goto out;
    for (size_t k = 0; k < out->nsegs; k++)
        cm.bytes += seg_bytes(lines, &out->segs[k]);
    for (size_t i = 0; i < n; i++)
        nnew += lines[i].written != 0;
    if (out->nsegs == 0)
        goto out;
    rc = reserve_commit(out);
    if (rc != 0)
        goto out;
    rc = put_commit_record(out, lines, &cm);
    if (rc != 0)
        goto out;
    rc = write_lines(out, lines, &cm);
    if (rc != 0)
        goto out;
    /* Committed: index what was written. */
    index_written(out, lines);
    out->ledger_pos = cm.rec_at + (off_t)cm.rec_len;
    rc = (int64_t)nnew;
    /* Compact past the threshold, and only once the ledger doubled since the last time (an
     * index larger than the threshold must not be rewritten on every commit). */
    if (out->ledger_pos > (off_t)out->compact_bytes && out->ledger_pos > 2 * out->compacted)
        compact(out);

out:
    flock(out->lock_fd, LOCK_UN);
    rq_seen_free(batch);
    if (rc < 0) {
        for (size_t i = 0; i < n; i++) {
            lines[i].written = 0;
            lines[i].newlines = 0;
        }
    }
    return rc;
}

int rq_output_reopen(rq_output_t *out)
{
    int rc;

    if (flock(out->lock_fd, LOCK_EX) < 0)
        return -errno;
    rc = catch_up(out); /* follows the path (and settles a record of the old file first) */
    flock(out->lock_fd, LOCK_UN);
    return rc;
}

const char *rq_output_path(const rq_output_t *out)
{
    return out->path;
}

size_t rq_output_index_entries(const rq_output_t *out)
{
    return rq_seen_ranges(out->seen) + rq_seen_ids(out->seen);
}

void rq_output_set_compact_bytes(rq_output_t *out, size_t bytes)
{
    out->compact_bytes = bytes;
}

/* A clean close: appends an empty record "B size size dev ino" for the output as it is now,
 * so that the newest record never ends past a complete file. Without it, a file emptied by
 * copytruncate after a first commit (before 0) would look like that commit half done and be
 * rolled back, writing its lines again. Best effort (a crash skips it: then such a commit is
 * rolled back, a duplicate at worst, never a loss). */
static void checkpoint(rq_output_t *out)
{
    char rec[128];
    struct stat st;
    int n;

    if (flock(out->lock_fd, LOCK_EX) < 0)
        return;
    if (catch_up(out) == 0 && out->ledger_pos > 0 && fstat(out->fd, &st) == 0) {
        n = snprintf(rec, sizeof(rec), "B %lld %lld %llu %llu\nE\n", (long long)st.st_size,
                     (long long)st.st_size, (unsigned long long)st.st_dev,
                     (unsigned long long)st.st_ino);
        if (pwrite_all(out->ledger_fd, rec, (size_t)n, out->ledger_pos) == 0)
            (void)fdatasync(out->ledger_fd);
        else if (ftruncate(out->ledger_fd, out->ledger_pos) < 0)
            rq_warn("cannot undo a ledger record: %s", RQ_STRERR(errno));
    }
    flock(out->lock_fd, LOCK_UN);
}

void rq_output_free(rq_output_t *out)
{
    if (out == NULL)
        return;
    if (out->opened)
        checkpoint(out);
    if (out->fd >= 0)
        close(out->fd);
    if (out->ledger_fd >= 0)
        close(out->ledger_fd);
    if (out->lock_fd >= 0)
        close(out->lock_fd);
    rq_seen_free(out->seen);
    free(out->segs);
    free(out->iov);
    free(out->buf);
    free(out->path);
    free(out->ledger_path);
    free(out->lock_path);
    free(out);
}
