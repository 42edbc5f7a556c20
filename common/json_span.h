/* json_span.h - byte spans of values inside a JSON text, so that a relay can pass a value on
 * as the bytes its client sent (jansson's round trip changes numbers, escapes and big
 * integers: FAILURE-CLASSES.md, "Bytes in, same bytes out").
 *
 * The functions locate values; they do not validate. Call them on a text that jansson has
 * already accepted (json_loadb()): on such a text the spans are the values jansson decoded.
 * On any other text they stay within the given bounds and either fail or return some span.
 * Iterative (no recursion), pure, thread-safe, allocation-free.
 */
#ifndef RQ_JSON_SPAN_H
#define RQ_JSON_SPAN_H

#include <stddef.h>

/* A value's bytes: p[0..len), borrowed from the text searched. */
typedef struct rq_json_span {
    const char *p;
    size_t len;
} rq_json_span_t;

/* The value text[0..len) without the JSON whitespace (space, tab, CR, LF) around it. */
rq_json_span_t rq_json_trim(const char *text, size_t len);

/* Looks up member `key` (ASCII, NUL-terminated) of the object text[0..len) (whitespace around
 * it allowed). Keys are compared decoded ("pay\u006coad" is "payload"); when a key occurs
 * more than once the last one counts, as in jansson's loader. Returns 1 with *out set to the
 * member's value (no surrounding whitespace), 0 when the object has no such member, -1 when
 * the text is not an object. */
int rq_json_member(const char *text, size_t len, const char *key, rq_json_span_t *out);

/* Fills out[0..max) with the elements of the array text[0..len) (whitespace around it
 * allowed), in order. Returns how many the array holds (which may be more than max: only the
 * first max are stored), or -1 when the text is not an array. */
long rq_json_elements(const char *text, size_t len, rq_json_span_t *out, size_t max);

/* 1 when s is a JSON number written as an integer (an optional '-' then digits: no fraction,
 * no exponent), else 0. */
int rq_json_is_integer_token(rq_json_span_t s);

/* Returns 1 when the JSON text buf[0..len) nests arrays and objects more than max_depth
 * levels deep (the top-level value is level 1; brackets inside strings, escapes included,
 * do not count), else 0. A linear pre-scan that bounds the work and recursion of the parser
 * before json_loadb() sees hostile input; it does not validate the text. Pure. */
int rq_json_too_deep(const char *buf, size_t len, size_t max_depth);

#endif
