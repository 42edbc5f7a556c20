/* json_alloc.h - jansson's allocator, noting allocation failures per thread.
 *
 * jansson (2.14) does not always report a failed allocation as one: json_loadb() may return
 * a syntax error for valid text, or even a value with a character dropped from a string (a
 * failed append in its lexer is ignored), and json_dumps() may return text with an object key
 * missing. With rq_json_alloc_init() installed, code that must not mistake an allocation
 * failure for bad input or corrupt data clears the flag, calls jansson, and checks it:
 *
 *     rq_json_oom_clear();
 *     root = json_loadb(...);
 *     if (rq_json_oom()) ... out of memory, whatever root is ...
 *
 * Without rq_json_alloc_init() the flag is never set (jansson's plain malloc/free).
 */
#ifndef RQ_JSON_ALLOC_H
#define RQ_JSON_ALLOC_H

/* Installs the allocator (json_set_alloc_funcs(): malloc and free, noting a NULL from malloc
 * on the calling thread). Call once at start-up, before any thread uses jansson. */
void rq_json_alloc_init(void);

/* Clears this thread's failure flag. */
void rq_json_oom_clear(void);

/* Returns 1 when an allocation by jansson failed on this thread since rq_json_oom_clear(). */
int rq_json_oom(void);

#endif
