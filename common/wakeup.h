/* wakeup.h - the one thread-safe wake-up between threads (libuv's uv_async_send, on eventfd).
 *
 * A loop that sleeps in poll() polls rq_wakeup_fd() for POLLIN beside its other fds; other
 * threads call rq_wakeup_signal() after they hand it work (through a queue under a mutex).
 * Signals coalesce, like uv_async_send(): several signals before the loop wakes give one
 * wake-up, so the loop must take everything queued (not one item per wake-up). A signal sent
 * before the loop sleeps is not lost: the fd stays readable until rq_wakeup_drain(). Drain
 * before looking at the queue, never after, or a signal sent in between is dropped.
 *
 * A signal writes to the fd only once per drain. A busy loop can also spare the signalling
 * threads their write (and itself the wake-up it would find nothing new by) while it works:
 * rq_wakeup_hold() after the drain, and before it sleeps rq_wakeup_arm(), then one more look
 * at its queue, and poll() only when that found nothing.
 */
#ifndef RQ_WAKEUP_H
#define RQ_WAKEUP_H

typedef struct rq_wakeup rq_wakeup_t;

/* Creates a wake-up, not signalled. Returns it (owned by the caller, release with
 * rq_wakeup_free()), or NULL with errno set (ENOMEM, or eventfd's EMFILE, ...). */
rq_wakeup_t *rq_wakeup_new(void);

/* Releases w and closes its fd; NULL is a no-op. No thread may signal it any more. */
void rq_wakeup_free(rq_wakeup_t *w);

/* Wakes the loop that polls w. Thread-safe and async-signal-safe; never blocks; coalesces
 * with signals not yet drained. Returns 0, or a negative errno from write(). */
int rq_wakeup_signal(rq_wakeup_t *w);

/* Clears w (the owning loop only, before it looks at its queue). Never blocks. Returns 1 when
 * w had been signalled, 0 when not, or a negative errno from read(). */
int rq_wakeup_drain(rq_wakeup_t *w);

/* The owning loop only, after rq_wakeup_drain(): it is awake and looks at its queue again
 * before it sleeps, so signals from now until rq_wakeup_arm() write nothing. */
void rq_wakeup_hold(rq_wakeup_t *w);

/* The owning loop only, before it sleeps after rq_wakeup_hold(): signals write again. The loop
 * must look at its queue after this call and sleep only when it found nothing there (work
 * handed over between its last look and this call sent no signal). */
void rq_wakeup_arm(rq_wakeup_t *w);

/* The fd to poll for POLLIN: readable while w is signalled. Borrowed: owned by w. */
int rq_wakeup_fd(const rq_wakeup_t *w);

#endif
