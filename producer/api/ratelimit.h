/* ratelimit.h - token-bucket rate limits per client (an API key, or an address).
 *
 * Each client has a bucket of `burst` tokens, refilled at `rate` tokens per second; a request
 * takes one token or is refused with the number of seconds until one is there (Retry-After).
 * Buckets live in a map bounded to `max_clients` entries: when it is full, the least recently
 * seen client's bucket is dropped (an idle client's bucket is full anyway, so forgetting it
 * changes nothing; a flood of new addresses only costs the dropped clients their debt).
 * IPv6 clients are bucketed by their /64 prefix, the block one host usually controls.
 */
#ifndef RQ_RATELIMIT_H
#define RQ_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define RQ_CLIENT_KEY_MAX 80 /* bytes of a client key, NUL included */

/* One bucket. Pure: the caller supplies the time. */
typedef struct rq_bucket {
    double tokens;
    int64_t last_ns; /* when tokens was computed */
} rq_bucket_t;

/* Fills b for a client first seen at now_ns: a full bucket. */
void rq_bucket_init(rq_bucket_t *b, double burst, int64_t now_ns);

/* Refills b up to now_ns and takes one token. Returns 0 when taken; 1 when the bucket holds
 * less than one token, with *retry_after_s (>= 1, whole seconds rounded up) set to the wait
 * until it will. A clock that went backwards refills nothing. */
int rq_bucket_take(rq_bucket_t *b, double rate, double burst, int64_t now_ns,
                   unsigned *retry_after_s);

typedef struct rq_ratelimit rq_ratelimit_t;

/* Creates a limiter: `rate` tokens per second (> 0), bursts of `burst` (>= 1), at most
 * `max_clients` buckets (>= 1). NULL on allocation failure or bad arguments. */
rq_ratelimit_t *rq_ratelimit_new(double rate, double burst, size_t max_clients);

/* Takes a token from the bucket of `client` (a NUL-terminated key shorter than
 * RQ_CLIENT_KEY_MAX; longer ones are cut), creating it full when new. Returns 0 (allowed) or
 * 1 (limited, *retry_after_s set). Thread-safe (one short mutex hold). */
int rq_ratelimit_take(rq_ratelimit_t *rl, const char *client, int64_t now_ns,
                      unsigned *retry_after_s);

/* Number of buckets held. Thread-safe. */
size_t rq_ratelimit_size(rq_ratelimit_t *rl);

/* Frees the limiter. NULL is a no-op. */
void rq_ratelimit_free(rq_ratelimit_t *rl);

/* Writes the rate-limit key of a peer address into buf: "ip:<IPv4>" or "ip6:<first 64 bits>"
 * (an IPv4-mapped IPv6 address counts as IPv4). Returns 0, or -1 for another family (buf is
 * then "ip:?"). */
int rq_ratelimit_client_key(const struct sockaddr *sa, char *buf, size_t len);

/* Writes the rate-limit key of a name (a queue) into buf (len >= RQ_CLIENT_KEY_MAX):
 * prefix + name when it fits, else prefix + "#" + the SHA-256 hex of name (so two long
 * names never share a bucket by a common beginning). */
void rq_ratelimit_name_key(const char *prefix, const char *name, char *buf, size_t len);

/* ---- bounded label values ---- */

/* The first `max` distinct values seen keep their own metric label; later ones share an
 * overflow label, so that names a client makes up cannot grow the label sets without
 * bound. */
typedef struct rq_labelset rq_labelset_t;

/* A new set admitting max (>= 1) values; NULL on allocation failure. */
rq_labelset_t *rq_labelset_new(size_t max);

/* Returns value when it is (or now becomes) one of the admitted values, else overflow.
 * Thread-safe; the returned pointer is value or overflow itself. */
const char *rq_labelset_pick(rq_labelset_t *ls, const char *value, const char *overflow);

/* Frees the set. NULL is a no-op. */
void rq_labelset_free(rq_labelset_t *ls);

#endif
