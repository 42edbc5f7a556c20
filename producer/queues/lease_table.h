/* lease_table.h - the pull engine's lease table: leases by id, and by expiry (a min-heap).
 *
 * A lease is one unacked delivery the leaser thread holds for an HTTP client. Its id is
 * "<replica>-<32 hex>": the replica's id (8 hex characters, random per process, not secret:
 * it tells which producer holds the delivery) then 128 bits from getrandom(2), so a lease id
 * cannot be guessed or derived from another one. The table maps ids to leases (a hash map) and
 * keeps a min-heap on the expiry so that the next expiry is found in O(1) and removed in
 * O(log n), never by a scan. It is bounded: at most `max` leases.
 *
 * Not thread-safe: the leaser thread owns its table. The table owns no lease memory: the
 * caller allocates each lease and frees it after removing it.
 */
#ifndef RQ_LEASE_TABLE_H
#define RQ_LEASE_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define RQ_LEASE_REPLICA_LEN 8                          /* hex characters */
#define RQ_LEASE_ID_LEN (RQ_LEASE_REPLICA_LEN + 1 + 32) /* without the NUL */

typedef struct rq_lease_entry {
    char id[RQ_LEASE_ID_LEN + 1];
    int64_t expires_ms; /* monotonic ms */
    size_t heap_i;      /* the table's: its place in the heap */
    void *data;         /* the caller's */
} rq_lease_entry_t;

typedef struct rq_lease_table rq_lease_table_t;

/* Writes a new replica id (8 lowercase hex characters from getrandom) into out
 * (RQ_LEASE_REPLICA_LEN + 1 bytes). Returns 0, or -1 when getrandom fails. */
int rq_lease_replica_id(char *out);

/* Writes a new lease id "<replica>-<32 hex>" into out (RQ_LEASE_ID_LEN + 1 bytes), the 128
 * random bits from getrandom(2) (read in blocks and kept per thread). Returns 0, or -1 when
 * getrandom fails (then out is ""). Thread-safe. */
int rq_lease_id_new(const char *replica, char *out);

/* 1 when id has the shape of a lease id (any replica), else 0. */
int rq_lease_id_valid(const char *id);

/* Creates an empty table for at most max (>= 1) leases. NULL when out of memory. */
rq_lease_table_t *rq_lease_table_new(size_t max);

/* Frees the table (not the leases still in it). NULL is a no-op. */
void rq_lease_table_free(rq_lease_table_t *t);

/* Adds e (its id and expires_ms set; borrowed until removed). Returns 0, -1 when the table
 * is full (or out of memory), -2 when the id is already there. */
int rq_lease_table_add(rq_lease_table_t *t, rq_lease_entry_t *e);

/* The lease with this id, or NULL. */
rq_lease_entry_t *rq_lease_table_get(const rq_lease_table_t *t, const char *id);

/* Removes e (which must be in t). */
void rq_lease_table_remove(rq_lease_table_t *t, rq_lease_entry_t *e);

/* Moves e's expiry to expires_ms (later or earlier) and reorders the heap. */
void rq_lease_table_set_expiry(rq_lease_table_t *t, rq_lease_entry_t *e, int64_t expires_ms);

/* Removes and returns the lease that expires first if it expired at now_ms (expires_ms <=
 * now_ms), else NULL. */
rq_lease_entry_t *rq_lease_table_pop_expired(rq_lease_table_t *t, int64_t now_ms);

/* The earliest expiry, or INT64_MAX when the table is empty. */
int64_t rq_lease_table_next_expiry(const rq_lease_table_t *t);

/* Removes and returns any lease (the heap's last), or NULL when empty: to clear the table. */
rq_lease_entry_t *rq_lease_table_pop_any(rq_lease_table_t *t);

/* Calls fn(e, arg) for every lease in t, in no order; fn must not change the table. */
void rq_lease_table_each(const rq_lease_table_t *t, void (*fn)(rq_lease_entry_t *e, void *arg),
                         void *arg);

size_t rq_lease_table_len(const rq_lease_table_t *t);
size_t rq_lease_table_max(const rq_lease_table_t *t);

#endif
