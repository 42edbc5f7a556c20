/* hmap.h - a string-keyed hash map (open addressing, linear probing, grows at 70 % load).
 *
 * Keys are copied into the map (rq_hmap_new_borrowed: not copied); values are opaque pointers
 * the map never frees. Not thread-safe: callers serialise access.
 */
#ifndef RQ_HMAP_H
#define RQ_HMAP_H

#include <stddef.h>

typedef struct rq_hmap rq_hmap_t;

/* Creates a map sized for about `hint` entries (0 for a default). NULL on allocation failure. */
rq_hmap_t *rq_hmap_new(size_t hint);

/* A map like rq_hmap_new's that keeps the caller's key pointers instead of copies (one
 * allocation fewer per entry): each key must stay alive and unchanged while it is in the map,
 * for example a string inside the value. A put that replaces a value also takes its key
 * pointer. NULL on allocation failure. */
rq_hmap_t *rq_hmap_new_borrowed(size_t hint);

/* Frees the map and its key copies (not the values). NULL is a no-op. */
void rq_hmap_free(rq_hmap_t *h);

/* Inserts or replaces key -> value. Returns 0, or -1 on allocation failure (map unchanged). */
int rq_hmap_put(rq_hmap_t *h, const char *key, void *value);

/* Returns the value for key, or NULL when absent. */
void *rq_hmap_get(const rq_hmap_t *h, const char *key);

/* Removes key and returns its value, or NULL when absent. */
void *rq_hmap_del(rq_hmap_t *h, const char *key);

/* Number of entries. */
size_t rq_hmap_len(const rq_hmap_t *h);

/* Calls fn(key, value, arg) for every entry, in no particular order. fn must not modify h. */
void rq_hmap_each(const rq_hmap_t *h, void (*fn)(const char *key, void *value, void *arg),
                  void *arg);

#endif
