/* linesplit.h - splits a byte stream into lines. Pure: no I/O, no clock, no threads.
 *
 * A line is the bytes before a '\n'; the '\n' itself is not part of it. Every other byte is
 * kept as it is: '\r' (a "\r\n" line ends in '\r'), NUL, tabs, bytes that are not UTF-8, and
 * empty lines. Bytes after the last '\n' are a partial line: kept until its '\n' arrives (or
 * handed out by rq_linesplit_flush()).
 *
 * Every record carries its stream offsets: `offset` of its first byte and `end` just past it
 * (past its '\n' when it has one). Records tile the stream with no gap: each record's offset
 * is the previous record's end, so "end of the last confirmed record" is always a valid place
 * to resume, and a record read again from there gets the same offset.
 *
 * Lines longer than `max_line` bytes ("overlong") follow the policy:
 *   RQ_OVERLONG_SPLIT  the line is handed out in pieces of exactly max_line bytes (kind PIECE,
 *                      no '\n') and a last piece of 1..max_line bytes that ends at the '\n'.
 *                      A piece is cut only once the byte after it is known not to be '\n',
 *                      so no piece is empty and resuming at a piece boundary gives the same
 *                      pieces again.
 *   RQ_OVERLONG_SKIP   the line is dropped: once max_line + 1 bytes without '\n' are seen its
 *                      bytes are discarded as they arrive (memory stays bounded), and at its
 *                      '\n' one SKIPPED record (data NULL) covers it, so the offset moves on.
 * Either way the line is counted once (rq_linesplit_overlong()) when it is recognised.
 *
 * Memory: the buffer holds at most one partial line (<= max_line bytes) plus what was fed
 * since the last rq_linesplit_next() that returned 0.
 *
 * Not thread-safe: one owner at a time.
 */
#ifndef RQ_LINESPLIT_H
#define RQ_LINESPLIT_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of stream kept just before the end of the last record (see rq_linesplit_window). */
#define RQ_LINESPLIT_WINDOW 64

typedef struct rq_linesplit rq_linesplit_t;

typedef enum {
    RQ_OVERLONG_SPLIT = 0,
    RQ_OVERLONG_SKIP = 1,
} rq_overlong_t;

typedef enum {
    RQ_LINE_FULL = 0, /* a line of at most max_line bytes, ended by '\n' */
    RQ_LINE_PIECE,    /* split: a piece of an overlong line; `newline` set on the last one */
    RQ_LINE_SKIPPED,  /* skip: an overlong line dropped; data is NULL, len its length */
    RQ_LINE_PARTIAL,  /* rq_linesplit_flush(): trailing bytes with no '\n' */
} rq_line_kind_t;

typedef struct rq_line {
    const char *data;    /* borrowed: valid until the next call that feeds or resets */
    size_t len;          /* bytes in the record, without the '\n' */
    int64_t offset;      /* stream offset of the record's first byte */
    int64_t end;         /* stream offset just past the record (and its '\n') */
    int newline;         /* 1 when the record consumed a '\n' */
    rq_line_kind_t kind; /* see above */
} rq_line_t;

/* Creates a splitter at stream offset 0. max_line >= 1. Returns NULL on allocation failure
 * or max_line == 0. Free with rq_linesplit_free(). */
rq_linesplit_t *rq_linesplit_new(size_t max_line, rq_overlong_t policy);

/* Frees the splitter and its buffer. NULL is a no-op. */
void rq_linesplit_free(rq_linesplit_t *ls);

/* Drops every buffered byte and restarts at stream offset `offset`. `before` (may be NULL
 * when before_len is 0) holds the up to RQ_LINESPLIT_WINDOW bytes just before `offset`; it
 * seeds the window. Never fails. */
void rq_linesplit_reset(rq_linesplit_t *ls, int64_t offset, const void *before, size_t before_len);

/* Returns a pointer to at least 1 and at most `want` writable bytes at the end of the
 * buffer (their count in *got), for a read(2) straight into the splitter; follow with
 * rq_linesplit_commit(). Invalidates records handed out earlier. Returns NULL on allocation
 * failure (the splitter is unchanged). */
char *rq_linesplit_space(rq_linesplit_t *ls, size_t want, size_t *got);

/* Appends the first n bytes written into the space (n <= *got of the last space call). */
void rq_linesplit_commit(rq_linesplit_t *ls, size_t n);

/* Copies len bytes into the splitter (space + commit). Returns 0, or -1 on allocation
 * failure (nothing appended). Invalidates records handed out earlier. */
int rq_linesplit_feed(rq_linesplit_t *ls, const void *data, size_t len);

/* Hands out the next record in *line. Returns 1 with a record, 0 when no complete record is
 * buffered (more bytes are needed). The record's data stays valid until the next feed, space
 * or reset call (several records from one feed may be held at the same time). */
int rq_linesplit_next(rq_linesplit_t *ls, rq_line_t *line);

/* For a stream that will not grow (a rotated file): hands out the buffered partial line as
 * one PARTIAL record (or, while an overlong line is being skipped, a SKIPPED record up to the
 * last byte fed). Call when rq_linesplit_next() returned 0. Returns 1 with a record, 0 when
 * nothing is buffered. */
int rq_linesplit_flush(rq_linesplit_t *ls, rq_line_t *line);

/* Stream offset just past the last record handed out (where to resume). */
int64_t rq_linesplit_offset(const rq_linesplit_t *ls);

/* Stream offset just past the last byte fed. */
int64_t rq_linesplit_fed(const rq_linesplit_t *ls);

/* Bytes fed and not yet covered by a record (a partial line, or a skipped line's bytes). */
size_t rq_linesplit_pending(const rq_linesplit_t *ls);

/* Overlong lines recognised since creation (both policies; not reset by reset()). */
uint64_t rq_linesplit_overlong(const rq_linesplit_t *ls);

/* Copies the up to RQ_LINESPLIT_WINDOW stream bytes just before rq_linesplit_offset() into
 * out (RQ_LINESPLIT_WINDOW bytes of room) and returns how many; fewer when the stream (or the
 * bytes given to reset) is shorter. Used to save a hash of the bytes before an offset. */
size_t rq_linesplit_window(const rq_linesplit_t *ls, void *out);

/* Appends n bytes to a window of RQ_LINESPLIT_WINDOW bytes (win), keeping the last ones;
 * *wlen is the window's fill. Used for the bytes before a resume offset. */
void rq_window_push(unsigned char *win, size_t *wlen, const void *data, size_t n);

#endif
