/* filter.h - subscription filters (issue 18): a small expression language evaluated per
 * message on its headers, routing key, id and JSON payload. A subscription gives one with
 * `?filter=<expr>` (URL-encoded); only the messages it matches are delivered.
 *
 *   payload.level == "error" && headers.region != "eu"
 *   (payload.n >= 10 || routing_key == "a.b") && !exists(headers.trace)
 *   payload.items[0].sku in ["A-1", "B-2"] || contains(payload.tags, "urgent")
 *
 * Grammar (whitespace - space, tab, CR, LF - may separate any two tokens; within a path
 * only inside its brackets: `payload.items[ 0 ]`, not `payload . items`):
 *
 *   filter     = or
 *   or         = and { "||" and }
 *   and        = unary { "&&" unary }
 *   unary      = "!" unary | "(" or ")" | function | comparison
 *   comparison = path ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) literal
 *              | path "in" "[" [ literal { "," literal } ] "]"
 *   function   = "exists" "(" path ")"
 *              | "contains" "(" path "," string ")"
 *              | "starts_with" "(" path "," string ")"
 *   path       = "payload" { step } | "headers" { step } | "routing_key" | "id"
 *   step       = "." name | "[" index "]" | "[" string "]"
 *   name       = 1 or more of A-Z a-z 0-9 _ -        (payload.user_id, headers.x-trace-id)
 *   index      = 0 | [1-9][0-9]*  (at most 999999)    (payload.items[0])
 *   literal    = string | number | "true" | "false" | "null"
 *   string     = a JSON string: "..." with the escapes \" \\ \/ \b \f \n \r \t \uXXXX
 *                (surrogate pairs for characters beyond U+FFFF); control characters must be
 *                escaped; the decoded text must be valid UTF-8
 *   number     = a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
 *
 * Precedence, loosest first: ||, &&, ! (so `a || b && !c` is `a || (b && (!c))`); && and ||
 * evaluate left to right and stop as soon as the result is known. The left side of a
 * comparison is always a path, the right side a literal.
 *
 * Paths: `payload` is the message body parsed as JSON (absent when the body is not JSON);
 * `.name` and `["key"]` select an object member (`payload["odd key"]`, `payload["a.b"]`,
 * keys are compared bytewise), `[n]` an array element; `headers.name` is an application
 * header (a JSON object of them); `routing_key` and `id` are the message's routing key and
 * message id (strings). A path is missing when any step finds nothing: no such member, an
 * index past the end, a step into something that is not an object or array, no payload.
 *
 * Semantics:
 * - == is true when the value and the literal have the same type and value: strings
 *   bytewise, numbers numerically (1 == 1.0; two integers exactly, else as doubles), true,
 *   false, null (a JSON null is present: `payload.x == null` is true for {"x": null} and
 *   false when x is missing; use exists()). Objects and arrays equal no literal.
 * - != is the negation of ==: true for a missing path and for a different type.
 * - < <= > >= compare two numbers numerically or two strings bytewise (UTF-8 bytes, so
 *   "B" < "a"); across types, with an object, array, boolean or null, or on a missing path
 *   they are false (so `!(x < 1)` is true for a string x, and for a missing one).
 *   Their literal must be a number or a string (else a parse error).
 * - `path in [l1, l2, ...]` is `path == l1 || path == l2 || ...` (false for `in []`).
 * - exists(path) is true when the path is present, even as null.
 * - contains(path, "s") is true when the value is a string containing s (bytewise) or an
 *   array with an element equal to the string s; starts_with(path, "s") when the value is a
 *   string beginning with s. Both are false for anything else, missing included.
 *
 * Limits: at most RQ_FILTER_MAX_BYTES bytes of text, RQ_FILTER_MAX_DEPTH levels of nesting
 * (each "(" and each "!" is a level), RQ_FILTER_MAX_NODES terms (each comparison, function,
 * "!", list literal, and each run of && or || counts one). A filter that breaks a limit or
 * the grammar is refused with a message and the 0-based byte position of the error (the
 * subscription routes answer 400 {"error": "filter: <message> at position N", "position":
 * N}).
 *
 * A filter is parsed once per subscription and evaluated per message; evaluation never
 * allocates, never fails (a missing field or mismatched types compare as described), takes
 * time linear in the filter and the values it reads (contains() is KMP), and recurses no
 * deeper than the filter nests.
 */
#ifndef RQ_FILTER_H
#define RQ_FILTER_H

#include <jansson.h>
#include <stddef.h>

#define RQ_FILTER_MAX_BYTES 4096 /* longest filter text */
#define RQ_FILTER_MAX_DEPTH 32   /* nesting levels: each '(' and each '!' */
#define RQ_FILTER_MAX_NODES 256  /* terms of a parsed filter */

typedef struct rq_filter rq_filter_t;

/* The message a filter looks at; every field may be NULL (absent). */
typedef struct rq_filter_msg {
    const json_t *payload;   /* the body parsed as JSON; NULL when it is not JSON */
    const json_t *headers;   /* an object of the application headers, or NULL */
    const char *routing_key; /* NUL-terminated */
    const char *id;          /* the message id */
} rq_filter_msg_t;

/* Parses text[0..len) (need not be NUL-terminated; text may be NULL when len is 0). Returns a
 * new filter (free with rq_filter_free), or NULL with err filled ("expected ')', found
 * the end of the filter"; err may be NULL) and *pos (may be NULL) the 0-based byte offset
 * where parsing failed (RQ_FILTER_MAX_BYTES for a text too long, len at the end of the
 * text). An empty or blank text is an error. Thread-safe. */
rq_filter_t *rq_filter_parse(const char *text, size_t len, char *err, size_t errlen, size_t *pos);

/* 1 when m matches f, else 0. f NULL (no filter) matches everything; m NULL is a message
 * with every field absent. Never allocates; thread-safe on an unchanging filter (and
 * unchanging message). */
int rq_filter_eval(const rq_filter_t *f, const rq_filter_msg_t *m);

/* Frees f. NULL is a no-op. */
void rq_filter_free(rq_filter_t *f);

#endif
