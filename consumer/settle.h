/* settle.h - planning the acks, rejects and requeues that settle a group of deliveries.
 *
 * A group holds deliveries in delivery-tag order, each with a disposition. The broker's
 * `multiple` flag settles every outstanding tag up to and including the one named, so a
 * group is settled as runs of equal dispositions, in ascending order: each run settles only
 * itself because every lower tag has been settled by an earlier run. A tag named in a frame
 * is always still outstanding (naming a settled tag is a PRECONDITION_FAILED channel error:
 * "unknown delivery tag").
 * The consumer finishes deliveries in any order (issue 14): when a group is settled, other
 * deliveries of the channel may still be outstanding (being processed), with tags between
 * or below the group's. A `multiple` frame must never reach one of them, so a run is merged
 * only while its tags are below the lowest such outstanding tag; from that tag on every
 * delivery of the group gets a frame of its own.
 *
 * Pure functions, thread-safe.
 */
#ifndef RQ_CONSUMER_SETTLE_H
#define RQ_CONSUMER_SETTLE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    RQ_DISP_ACK = 0,     /* processed: basic.ack */
    RQ_DISP_REJECT = 1,  /* undecodable: basic.reject / basic.nack with requeue=false */
    RQ_DISP_REQUEUE = 2, /* not processed (shutdown, output error): basic.nack requeue=true */
} rq_disp_t;

/* One frame to send: ack/reject/nack of `tag`, with `multiple` (0 or 1). */
typedef struct rq_settle_op {
    rq_disp_t disp;
    uint64_t tag;
    int multiple;
} rq_settle_op_t;

/* Plans the frames that settle n deliveries (tags[i] with disp[i]) into ops, which must have
 * room for n entries. `other` is the lowest delivery tag of the channel still outstanding
 * that is not among tags (RQ_SETTLE_NO_OTHER when there is none). When the tags are strictly
 * ascending, consecutive equal dispositions whose tags are below `other` are merged into one
 * frame with multiple=1 (a run of one uses multiple=0); every other delivery gets its own
 * frame with multiple=0. Returns the number of ops written (0 for n == 0). */
#define RQ_SETTLE_NO_OTHER UINT64_MAX
size_t rq_settle_plan(const uint64_t *tags, const rq_disp_t *disp, size_t n, uint64_t other,
                      rq_settle_op_t *ops);

/* "ack", "reject" or "requeue". */
const char *rq_disp_name(rq_disp_t d);

#endif
