/* tail_state.h - where the tailer is in which file, saved atomically, and checked on resume.
 *
 * A tailed file is identified by (st_dev, st_ino) plus a fingerprint: a hash of its first
 * fp_len bytes (fp_len = min(RQ_TAIL_FP_BYTES, size when taken)), because inode numbers are
 * reused. A saved position is an offset plus a hash of the up to RQ_TAIL_BEFORE_BYTES bytes
 * just before it: resuming is allowed only when the file at hand has the same identity and
 * still holds those bytes, so copytruncate, truncation and a reused inode are recognised.
 *
 * Each generation of a file's content (a new file, or the same file truncated) gets a file
 * id, "<dev hex>-<ino hex>-<16 hex random>", saved with the position before any of its lines
 * is published. Message ids are "<file id>:<offset>": the same line published again after a
 * restart carries the same id, and different content never shares one.
 *
 * The state file is text (see rq_tail_state_save), written to a temporary file, fsync'd,
 * renamed over the old one, and the folder fsync'd: a crash leaves the old or the new state,
 * never a mix. A checksum line makes damage visible.
 *
 * All functions are reentrant; none keeps state between calls.
 */
#ifndef RQ_TAIL_STATE_H
#define RQ_TAIL_STATE_H

#include <stddef.h>
#include <stdint.h>

#define RQ_TAIL_FP_BYTES 64     /* the fingerprint covers at most this many leading bytes */
#define RQ_TAIL_BEFORE_BYTES 64 /* bytes before the offset covered by the saved hash */
#define RQ_TAIL_FILE_ID_MAX 64  /* room for a file id and its NUL */

typedef struct rq_tail_ident {
    uint64_t dev, ino;
    uint32_t fp_len; /* bytes hashed into fp: 0..RQ_TAIL_FP_BYTES */
    uint64_t fp;     /* rq_tail_hash() of the first fp_len bytes */
} rq_tail_ident_t;

typedef struct rq_tail_state {
    char file_id[RQ_TAIL_FILE_ID_MAX];
    rq_tail_ident_t ident;
    int64_t offset;       /* everything before it is confirmed by the broker */
    uint32_t before_len;  /* bytes hashed into before_hash: min(offset, BEFORE_BYTES) */
    uint64_t before_hash; /* rq_tail_hash() of the before_len bytes just before offset */
} rq_tail_state_t;

/* The result of comparing a saved state with a file. */
typedef enum {
    RQ_TAIL_SAME = 0,  /* same identity, still holds the bytes before the offset: resume */
    RQ_TAIL_REWRITTEN, /* same dev/ino but other content (copytruncate, truncation, a
                          reused inode): start again at 0 as a new generation */
    RQ_TAIL_OTHER,     /* another file (dev/ino differ) */
} rq_tail_match_t;

/* 64-bit FNV-1a of data[0..len). Stable across builds and hosts (it is saved on disk). */
uint64_t rq_tail_hash(const void *data, size_t len);

/* Fills *id for the open file fd: fstat's st_dev/st_ino and the fingerprint of the first
 * min(RQ_TAIL_FP_BYTES, size) bytes (pread, the file position is untouched). When `head` is
 * not NULL it receives those bytes (RQ_TAIL_FP_BYTES of room). Returns 0, or -errno. */
int rq_tail_ident_of_fd(int fd, rq_tail_ident_t *id, unsigned char *head);

/* Writes a new file id for a generation of the file `id` into out (RQ_TAIL_FILE_ID_MAX
 * bytes): dev and inode in hex and 64 random bits (getrandom, or clock and pid mixed when
 * that fails). */
void rq_tail_new_file_id(const rq_tail_ident_t *id, char *out);

/* Returns 1 when s is a well-formed file id (1..63 of [0-9a-f-]), else 0. */
int rq_tail_file_id_valid(const char *s);

/* Compares the saved state st with the open file fd (fstat + preads; the file position is
 * untouched). Returns an rq_tail_match_t, or -errno when the file cannot be read. `why`
 * (may be NULL) receives a short reason for anything but RQ_TAIL_SAME. */
int rq_tail_state_verify(const rq_tail_state_t *st, int fd, char *why, size_t whylen);

/* Fills st->before_len/before_hash from fd: the up to RQ_TAIL_BEFORE_BYTES bytes before
 * st->offset (pread). Returns 0, or -errno (-EIO when the file is shorter than offset). */
int rq_tail_state_hash_before(rq_tail_state_t *st, int fd);

/* Saves st at `path` atomically: writes "<path>.tmp", fsyncs it, renames it over path and
 * fsyncs the folder. Returns 0, or -1 with err (may be NULL) naming the step that failed. */
int rq_tail_state_save(const char *path, const rq_tail_state_t *st, char *err, size_t errlen);

/* Loads st from `path`. Returns 0 when loaded; 1 when there is no state file (st zeroed);
 * -1 when it exists but cannot be read or is damaged, incomplete or of another version
 * (err says why; st zeroed). */
int rq_tail_state_load(const char *path, rq_tail_state_t *st, char *err, size_t errlen);

/* Writes the state file path for tailing `input` into out: "<dir>/<base>.<16 hex>.state",
 * the hex a hash of input's absolute path, so two inputs with the same name in different
 * folders never share a state. Returns 0, or -1 when it does not fit or the current
 * directory is unknown (a relative input). */
int rq_tail_state_path(const char *dir, const char *input, char *out, size_t outlen);

#endif
