/* wakeup.c - rq_wakeup_t on a non-blocking eventfd: signal adds 1, drain reads the sum. */
#include "wakeup.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct rq_wakeup {
    int fd;
    /* 1: the next signal writes. A signal takes it (the fd is readable, or the loop holds);
     * rq_wakeup_drain() and rq_wakeup_arm() give it back. */
    atomic_int armed;
};

rq_wakeup_t *rq_wakeup_new(void)
{
    rq_wakeup_t *w = malloc(sizeof(*w));
    int saved;

    if (w == NULL)
        return NULL;
    w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->fd < 0)
        goto err;
    atomic_init(&w->armed, 1);
    return w;

err:
    saved = errno;
    free(w);
    errno = saved;
    return NULL;
}

void rq_wakeup_free(rq_wakeup_t *w)
{
    if (w == NULL)
        return;
    close(w->fd);
    free(w);
}

int rq_wakeup_signal(rq_wakeup_t *w)
{
    uint64_t one = 1;

    if (!atomic_exchange(&w->armed, 0))
        return 0; /* written since the last drain, or the loop holds */
    /* EAGAIN: the counter is saturated, so the fd is readable already (coalesced). */
    if (write(w->fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        int e = errno;
        atomic_store(&w->armed, 1); /* nothing was written: the next signal tries again */
        return -e;
    }
    return 0;
}

int rq_wakeup_drain(rq_wakeup_t *w)
{
    uint64_t n;

    ssize_t r = read(w->fd, &n, sizeof(n));
    int e = errno;

    /* After the read, never before: a signal between the two writes nothing, and its work
     * is queued already for the look the caller takes next; a signal after writes again. (A
     * store before the read let a signal write in between, the read consume it, and a later
     * signal then write nothing: lost.) */
    atomic_store(&w->armed, 1);
    if (r < 0)
        return e == EAGAIN ? 0 : -e;
    return 1;
}

void rq_wakeup_hold(rq_wakeup_t *w)
{
    atomic_store(&w->armed, 0);
}

void rq_wakeup_arm(rq_wakeup_t *w)
{
    atomic_store(&w->armed, 1);
}

int rq_wakeup_fd(const rq_wakeup_t *w)
{
    return w->fd;
}
