/* jbuf.h - a small JSON text writer: compact JSON appended to one growing buffer, written
 * byte for byte as jansson's json_dumps(JSON_COMPACT) writes the same values.
 *
 * For the hot paths (the message published for a request, the answer to POST /produce) that
 * used to build a jansson tree only to dump it: one allocation instead of a node per value.
 * Strings are escaped as jansson escapes them ('"', '\\', control characters as \b \f \n \r \t
 * or \u00XX, nothing else; UTF-8 kept as it is); reals as jansson formats them ("%.17g", with
 * ".0" added when the text would read as an integer, the exponent without '+' and leading
 * zeros). Errors are sticky: after a failed allocation every call is a no-op and
 * rq_jbuf_take() returns NULL. Not thread-safe (one writer per buffer); no global state.
 */
#ifndef RQ_JBUF_H
#define RQ_JBUF_H

#include <stddef.h>

typedef struct rq_jbuf {
    char *p; /* heap, NUL-terminated while not failed */
    size_t len, cap;
    int failed; /* an allocation failed: the text is lost */
} rq_jbuf_t;

/* Starts an empty buffer that allocates `hint` bytes (at least 64) on first use. Never fails
 * (allocates nothing yet). */
void rq_jbuf_init(rq_jbuf_t *b, size_t hint);

/* Appends the n bytes s as they are (JSON text the caller vouches for). */
void rq_jbuf_raw(rq_jbuf_t *b, const char *s, size_t n);

/* Cuts the text back to its first len bytes (len at most the current length; a position
 * noted before appending). No-op on a failed buffer. */
void rq_jbuf_truncate(rq_jbuf_t *b, size_t len);

/* Appends the NUL-terminated text s as it is. */
void rq_jbuf_lit(rq_jbuf_t *b, const char *s);

/* Appends s[0..n) as a quoted, escaped JSON string (NUL bytes as \u0000). Returns 0, or -1
 * with nothing appended when s is not valid UTF-8 (jansson refuses such a string: its
 * json_stringn() returns NULL). */
int rq_jbuf_str(rq_jbuf_t *b, const char *s, size_t n);

/* Appends a real as jansson dumps it (JSON_REAL_PRECISION 17). Returns 0, or -1 with nothing
 * appended for NaN or an infinity (jansson cannot hold them). */
int rq_jbuf_real(rq_jbuf_t *b, double v);

/* Appends an integer. */
void rq_jbuf_int(rq_jbuf_t *b, long long v);

/* 1 when s[0..n) is valid UTF-8 as jansson checks it (no overlong forms, no surrogates,
 * nothing above U+10FFFF), else 0. Pure. */
int rq_jbuf_utf8_valid(const char *s, size_t n);

/* Hands over the text: a NUL-terminated heap string (caller frees) with its length in *len
 * (may be NULL), or NULL when an allocation failed (the buffer is freed then). The buffer is
 * empty after, as after rq_jbuf_init(). */
char *rq_jbuf_take(rq_jbuf_t *b, size_t *len);

/* Frees the text, if any; the buffer is empty after. Safe on an initialised buffer. */
void rq_jbuf_free(rq_jbuf_t *b);

#endif
