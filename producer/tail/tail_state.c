/* tail_state.c - tail position save/restore and file identity checks.
 *
 * State file format (text, one "key value" per line, in this order):
 *   relayq-tail-state 1
 *   file_id <id>
 *   dev <decimal>          ino <decimal>          (each on its own line)
 *   fp_len <decimal>       fp <16 hex>
 *   offset <decimal>
 *   before_len <decimal>   before <16 hex>
 *   sum <16 hex>           rq_tail_hash() of every byte before this line
 */
#include "tail_state.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define STATE_MAGIC "relayq-tail-state 1"
#define STATE_MAX_BYTES 4096

uint64_t rq_tail_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Reads exactly n bytes at off. Returns n, fewer at end of file, or -errno. */
static ssize_t pread_full(int fd, void *buf, size_t n, int64_t off)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)off + (off_t)got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int rq_tail_ident_of_fd(int fd, rq_tail_ident_t *id, unsigned char *head)
{
    unsigned char buf[RQ_TAIL_FP_BYTES];
    struct stat st;
    size_t want;
    ssize_t n;

    if (fstat(fd, &st) != 0)
        return -errno;
    want = st.st_size < RQ_TAIL_FP_BYTES ? (size_t)st.st_size : RQ_TAIL_FP_BYTES;
    n = pread_full(fd, buf, want, 0);
    if (n < 0)
        return (int)n;
    id->dev = (uint64_t)st.st_dev;
    id->ino = (uint64_t)st.st_ino;
    id->fp_len = (uint32_t)n;
    id->fp = rq_tail_hash(buf, (size_t)n);
    if (head != NULL)
        memcpy(head, buf, (size_t)n);
    return 0;
}

void rq_tail_new_file_id(const rq_tail_ident_t *id, char *out)
{
    uint64_t r = 0;

    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        struct timespec ts;
        uint64_t mix[4];
        clock_gettime(CLOCK_REALTIME, &ts);
        mix[0] = (uint64_t)ts.tv_sec;
        mix[1] = (uint64_t)ts.tv_nsec;
        mix[2] = (uint64_t)getpid();
        mix[3] = id->fp ^ id->ino;
        r = rq_tail_hash(mix, sizeof(mix));
    }
    snprintf(out, RQ_TAIL_FILE_ID_MAX, "%" PRIx64 "-%" PRIx64 "-%016" PRIx64, id->dev, id->ino, r);
}

int rq_tail_file_id_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n >= RQ_TAIL_FILE_ID_MAX)
        return 0;
    return strspn(s, "0123456789abcdef-") == n;
}

int rq_tail_state_verify(const rq_tail_state_t *st, int fd, char *why, size_t whylen)
{
    unsigned char
        buf[RQ_TAIL_FP_BYTES > RQ_TAIL_BEFORE_BYTES ? RQ_TAIL_FP_BYTES : RQ_TAIL_BEFORE_BYTES];
    struct stat sb;
    ssize_t n;

    if (fstat(fd, &sb) != 0)
        return -errno;
    if ((uint64_t)sb.st_dev != st->ident.dev || (uint64_t)sb.st_ino != st->ident.ino) {
        rq_errf(why, whylen, "another file (device/inode differ)");
        return RQ_TAIL_OTHER;
    }
    if (st->ident.fp_len > RQ_TAIL_FP_BYTES || st->before_len > RQ_TAIL_BEFORE_BYTES)
        return -EINVAL;
    if ((uint64_t)sb.st_size < st->ident.fp_len) {
        rq_errf(why, whylen, "same inode, but shorter than its fingerprint (truncated or reused)");
        return RQ_TAIL_REWRITTEN;
    }
    n = pread_full(fd, buf, st->ident.fp_len, 0);
    if (n < 0)
        return (int)n;
    if ((size_t)n != st->ident.fp_len || rq_tail_hash(buf, (size_t)n) != st->ident.fp) {
        rq_errf(why, whylen, "same inode, but its first bytes differ (inode reused or rewritten)");
        return RQ_TAIL_REWRITTEN;
    }
    if ((int64_t)sb.st_size < st->offset) {
        rq_errf(why, whylen, "same file, but shorter than the saved offset (truncated)");
        return RQ_TAIL_REWRITTEN;
    }
    n = pread_full(fd, buf, st->before_len, st->offset - (int64_t)st->before_len);
    if (n < 0)
        return (int)n;
    if ((size_t)n != st->before_len || rq_tail_hash(buf, (size_t)n) != st->before_hash) {
        rq_errf(why, whylen,
                "same file, but the bytes before the saved offset differ "
                "(copytruncate or rewritten)");
        return RQ_TAIL_REWRITTEN;
    }
    return RQ_TAIL_SAME;
}

int rq_tail_state_hash_before(rq_tail_state_t *st, int fd)
{
    unsigned char buf[RQ_TAIL_BEFORE_BYTES];
    size_t want = st->offset < RQ_TAIL_BEFORE_BYTES ? (size_t)st->offset : RQ_TAIL_BEFORE_BYTES;
    ssize_t n;

    if (st->offset < 0)
        return -EINVAL;
    n = pread_full(fd, buf, want, st->offset - (int64_t)want);
    if (n < 0)
        return (int)n;
    if ((size_t)n != want)
        return -EIO;
    st->before_len = (uint32_t)want;
    st->before_hash = rq_tail_hash(buf, want);
    return 0;
}

/* Renders st into buf; returns the length, or -1 when it does not fit. */
static int render(const rq_tail_state_t *st, char *buf, size_t len)
{
    int n = snprintf(buf, len,
                     STATE_MAGIC "\n"
                                 "file_id %s\n"
                                 "dev %" PRIu64 "\n"
                                 "ino %" PRIu64 "\n"
                                 "fp_len %" PRIu32 "\n"
                                 "fp %016" PRIx64 "\n"
                                 "offset %" PRId64 "\n"
                                 "before_len %" PRIu32 "\n"
                                 "before %016" PRIx64 "\n",
                     st->file_id, st->ident.dev, st->ident.ino, st->ident.fp_len, st->ident.fp,
                     st->offset, st->before_len, st->before_hash);
    int m;

    if (n < 0 || (size_t)n >= len)
        return -1;
    m = snprintf(buf + n, len - (size_t)n, "sum %016" PRIx64 "\n", rq_tail_hash(buf, (size_t)n));
    if (m < 0 || (size_t)m >= len - (size_t)n)
        return -1;
    return n + m;
}

/* fsyncs the folder holding path, so a rename in it is durable. */
static int fsync_parent(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    int fd, rc;

    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

int rq_tail_state_save(const char *path, const rq_tail_state_t *st, char *err, size_t errlen)
{
    char tmp[4200], text[1024], ebuf[RQ_STRERROR_LEN];
    int fd = -1, len, rc = -1;
    size_t off = 0;

    if (!rq_tail_file_id_valid(st->file_id))
        return rq_errf(err, errlen, "invalid file id");
    len = render(st, text, sizeof(text));
    if (len < 0)
        return rq_errf(err, errlen, "state does not fit");
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        return rq_errf(err, errlen, "state path too long");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rq_errf(err, errlen, "open %s: %s", tmp, rq_strerror(errno, ebuf, sizeof(ebuf)));
        goto out;
    }
    while (off < (size_t)len) {
        ssize_t w = write(fd, text + off, (size_t)len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rq_errf(err, errlen, "write %s: %s", tmp,
                    w < 0 ? rq_strerror(errno, ebuf, sizeof(ebuf)) : "short write");
            goto out;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        rq_errf(err, errlen, "fsync %s: %s", tmp, rq_strerror(errno, ebuf, sizeof(ebuf)));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rq_errf(err, errlen, "close %s: %s", tmp, rq_strerror(errno, ebuf, sizeof(ebuf)));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rq_errf(err, errlen, "rename %s: %s", tmp, rq_strerror(errno, ebuf, sizeof(ebuf)));
        goto out;
    }
    if (fsync_parent(path) != 0) {
        rq_errf(err, errlen, "fsync the folder of %s: %s", path,
                rq_strerror(errno, ebuf, sizeof(ebuf)));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (rc != 0)
        unlink(tmp);
    return rc;
}

/* Parses "<key> <value>\n" at *p; returns the value (NUL-terminated in place) or NULL. */
static char *take(char **p, const char *key)
{
    size_t klen = strlen(key);
    char *line = *p, *nl;

    if (strncmp(line, key, klen) != 0 || line[klen] != ' ')
        return NULL;
    nl = strchr(line, '\n');
    if (nl == NULL)
        return NULL;
    *nl = '\0';
    *p = nl + 1;
    return line + klen + 1;
}

static int parse_u64(const char *s, int base, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (*s == '\0' || *s == '-' || *s == '+' || *s == ' ')
        return -1;
    errno = 0;
    v = strtoull(s, &end, base);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static int parse_hash(const char *s, uint64_t *out)
{
    if (strlen(s) != 16 || strspn(s, "0123456789abcdef") != 16)
        return -1;
    return parse_u64(s, 16, out);
}

/* The numeric lines after file_id, in file order, with their largest allowed value. */
static const struct {
    const char *key;
    int hex;
    uint64_t max;
} fields[] = {
    {"dev", 0, UINT64_MAX},    {"ino", 0, UINT64_MAX},   {"fp_len", 0, RQ_TAIL_FP_BYTES},
    {"fp", 1, UINT64_MAX},     {"offset", 0, INT64_MAX}, {"before_len", 0, RQ_TAIL_BEFORE_BYTES},
    {"before", 1, UINT64_MAX},
};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

/* Reads the state file at path into buf (room for STATE_MAX_BYTES + 1), NUL-terminated,
 * its length in *len. Returns 0; 1 when there is no such file; -1 with err filled when it
 * cannot be read, is too large for a state file or holds a NUL byte. */
static int read_state_file(const char *path, char *buf, size_t *len, char *err, size_t errlen)
{
    char ebuf[RQ_STRERROR_LEN];
    int fd, rc = -1;

    *len = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        return rq_errf(err, errlen, "open %s: %s", path, rq_strerror(errno, ebuf, sizeof(ebuf)));
    }
    for (;;) {
        ssize_t r = read(fd, buf + *len, STATE_MAX_BYTES - *len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rq_errf(err, errlen, "read %s: %s", path, rq_strerror(errno, ebuf, sizeof(ebuf)));
            goto out;
        }
        if (r == 0)
            break;
        *len += (size_t)r;
        if (*len >= STATE_MAX_BYTES) {
            rq_errf(err, errlen, "%s: larger than any state file", path);
            goto out;
        }
    }
    buf[*len] = '\0';
    if (strlen(buf) != *len) {
        rq_errf(err, errlen, "%s: NUL byte in the state file", path);
        goto out;
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

/* Checks the magic line and the checksum of the state text buf. Returns the start of its
 * "sum" line, or NULL with err filled. */
static char *check_state_sum(const char *path, char *buf, char *err, size_t errlen)
{
    char *sum_line = strstr(buf, "\nsum "), *p, *v;
    uint64_t sum;

    if (strncmp(buf, STATE_MAGIC "\n", sizeof(STATE_MAGIC)) != 0 || sum_line == NULL) {
        rq_errf(err, errlen, "%s: not a version 1 tail state file (or cut short)", path);
        return NULL;
    }
    sum_line++;
    p = sum_line;
    if ((v = take(&p, "sum")) == NULL || parse_hash(v, &sum) != 0 || *p != '\0') {
        rq_errf(err, errlen, "%s: bad checksum line", path);
        return NULL;
    }
    if (sum != rq_tail_hash(buf, (size_t)(sum_line - buf))) {
        rq_errf(err, errlen, "%s: checksum mismatch (damaged)", path);
        return NULL;
    }
    return sum_line;
}

/* Parses the lines between the magic line and sum_line of buf into *st. Returns 0, or -1
 * with err filled (st then partly filled). */
static int parse_state_fields(const char *path, char *buf, char *sum_line, rq_tail_state_t *st,
                              char *err, size_t errlen)
{
    char *p = buf + sizeof(STATE_MAGIC), *v;
    uint64_t val[NFIELDS];

    if ((v = take(&p, "file_id")) == NULL || !rq_tail_file_id_valid(v))
        return rq_errf(err, errlen, "%s: bad or missing file_id", path);
    snprintf(st->file_id, sizeof(st->file_id), "%s", v);
    for (size_t i = 0; i < NFIELDS; i++) {
        v = take(&p, fields[i].key);
        if (v == NULL || (fields[i].hex ? parse_hash(v, &val[i]) : parse_u64(v, 10, &val[i])) ||
            val[i] > fields[i].max)
            return rq_errf(err, errlen, "%s: bad or missing %s", path, fields[i].key);
    }
    st->ident.dev = val[0];
    st->ident.ino = val[1];
    st->ident.fp_len = (uint32_t)val[2];
    st->ident.fp = val[3];
    st->offset = (int64_t)val[4];
    st->before_len = (uint32_t)val[5];
    st->before_hash = val[6];
    if ((int64_t)st->before_len > st->offset)
        return rq_errf(err, errlen, "%s: before_len exceeds offset", path);
    if (p != sum_line)
        return rq_errf(err, errlen, "%s: unexpected lines", path);
    return 0;
}

int rq_tail_state_load(const char *path, rq_tail_state_t *st, char *err, size_t errlen)
{
    char buf[STATE_MAX_BYTES + 1], *sum_line;
    size_t len;
    int rc;

    memset(st, 0, sizeof(*st));
    rc = read_state_file(path, buf, &len, err, errlen);
    if (rc != 0)
        return rc; /* 1: no state file; -1: unreadable */
    sum_line = check_state_sum(path, buf, err, errlen);
    if (sum_line == NULL || parse_state_fields(path, buf, sum_line, st, err, errlen) != 0) {
        memset(st, 0, sizeof(*st));
        return -1;
    }
    return 0;
}

int rq_tail_state_path(const char *dir, const char *input, char *out, size_t outlen)
{
    char abs[4096], base[101];
    const char *b = strrchr(input, '/');
    size_t i, n;

    if (input[0] == '/') {
        if ((size_t)snprintf(abs, sizeof(abs), "%s", input) >= sizeof(abs))
            return -1;
    } else {
        char cwd[4096];
        if (getcwd(cwd, sizeof(cwd)) == NULL)
            return -1;
        if ((size_t)snprintf(abs, sizeof(abs), "%s/%s", cwd, input) >= sizeof(abs))
            return -1;
    }
    b = b ? b + 1 : input;
    for (i = 0, n = 0; b[i] && n < sizeof(base) - 1; i++) {
        char c = b[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        base[n++] = ok ? c : '_';
    }
    base[n] = '\0';
    if (n == 0)
        snprintf(base, sizeof(base), "input");
    n = (size_t)snprintf(out, outlen, "%s/%s.%016" PRIx64 ".state", dir, base,
                         rq_tail_hash(abs, strlen(abs)));
    return n < outlen ? 0 : -1;
}
