/* wakeup.c - rq_wakeup_t on a non-blocking eventfd: signal adds 1, drain reads the sum. */
#include "wakeup.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct rq_wakeup {
    int fd;
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

    /* EAGAIN: the counter is saturated, so the fd is readable already (coalesced). */
    if (write(w->fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        return -errno;
    return 0;
}

int rq_wakeup_drain(rq_wakeup_t *w)
{
    uint64_t n;

    if (read(w->fd, &n, sizeof(n)) < 0)
        return errno == EAGAIN ? 0 : -errno;
    return 1;
}

int rq_wakeup_fd(const rq_wakeup_t *w)
{
    return w->fd;
}
