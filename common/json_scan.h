/* json_scan.h - a validating scanner for the JSON that ordinary messages and requests use,
 * without building values: it answers whether jansson would accept a text, so that a hot path
 * can pass the text on as it is instead of loading it and dumping it again.
 *
 * The subset: strings without escapes (UTF-8 checked as jansson checks it), numbers in the
 * JSON grammar (up to RQ_JSON_SCAN_NUM_MAX characters) that strtod() reads as finite and, for
 * an integer token without RQ_JSON_SCAN_INT_AS_REAL, that strtoll() reads without overflow
 * (jansson refuses "too big integer"), true/false/null, nesting up to RQ_JSON_SCAN_MAX_DEPTH,
 * at most RQ_JSON_SCAN_MAX_KEYS keys open at once, no duplicate keys in any object (what
 * JSON_REJECT_DUPLICATES refuses). What it accepts, json_loadb() with the matching flags
 * accepts with the same values; a text outside the subset is not accepted even when jansson
 * would take it (an escape, a long number, deep nesting): the caller falls back to jansson.
 * Pure, thread-safe, allocation-free (about 4 KiB of stack).
 */
#ifndef RQ_JSON_SCAN_H
#define RQ_JSON_SCAN_H

#include <stddef.h>

#define RQ_JSON_SCAN_MAX_DEPTH 32
#define RQ_JSON_SCAN_MAX_KEYS 256
#define RQ_JSON_SCAN_NUM_MAX 40

/* flags */
#define RQ_JSON_SCAN_INT_AS_REAL 1u /* integers as jansson's JSON_DECODE_INT_AS_REAL reads them */

/* 1 when text[0..len) is exactly one value of the subset (no whitespace before or after it;
 * any value at the top, as with JSON_DECODE_ANY) nested at most max_depth levels (0: only
 * RQ_JSON_SCAN_MAX_DEPTH), else 0. */
int rq_json_scan_valid(const char *text, size_t len, size_t max_depth, unsigned flags);

#endif
