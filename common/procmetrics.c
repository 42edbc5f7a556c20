/* procmetrics.c - process_* metrics refreshed by a registry collector at each scrape.
 *
 * The collector runs under the registry's collector mutex (one at a time), so it keeps the CPU
 * time it last reported without a lock of its own and adds the difference to the counter.
 * /proc/self/stat, /proc/self/statm and /proc/self/fd are opened once, at registration, and
 * kept (close-on-exec): at the descriptor limit, when process_open_fds matters most, a scrape
 * could not open them.
 */
#define _GNU_SOURCE
#include "procmetrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "util.h"

/* AddressSanitizer's allocator replaces malloc: glibc's mallinfo2 then reads zeros. */
#if defined(__SANITIZE_ADDRESS__)
#define RQ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RQ_ASAN 1
#endif
#endif

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)) &&          \
    !defined(RQ_ASAN)
#define RQ_HAVE_MALLINFO2 1
#endif

typedef struct {
    rq_series_t *cpu, *rss, *vsz, *fds, *max_fds, *start, *threads;
    rq_series_t *heap_in_use, *heap_free; /* NULL without mallinfo2 */
    double cpu_reported;                  /* seconds added to the counter so far */
    int stat_fd, statm_fd;                /* /proc/self/stat, /proc/self/statm; -1 */
    DIR *fd_dir;                          /* /proc/self/fd; NULL */
} rq_procmetrics_t;

static void procmetrics_free(void *arg)
{
    rq_procmetrics_t *p = arg;

    if (p == NULL)
        return;
    if (p->stat_fd >= 0)
        close(p->stat_fd);
    if (p->statm_fd >= 0)
        close(p->statm_fd);
    if (p->fd_dir != NULL)
        closedir(p->fd_dir);
    free(p);
}

/* The whole of a small /proc file kept open, NUL-terminated, into buf; its length, or -1. */
static ssize_t read_proc(int fd, char *buf, size_t cap)
{
    size_t n = 0;

    if (fd < 0)
        return -1;
    while (n < cap - 1) {
        ssize_t r = pread(fd, buf + n, cap - 1 - n, (off_t)n);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return (ssize_t)n;
}

/* The one child of a new label-less family, or NULL. */
static rq_series_t *family(rq_metrics_t *m, int counter, const char *name, const char *help)
{
    rq_metric_t *f = counter ? rq_metrics_counter(m, name, help, 0, NULL)
                             : rq_metrics_gauge(m, name, help, 0, NULL);
    return f != NULL ? rq_metric_series(f, 0, NULL) : NULL;
}

static double cpu_seconds(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Open descriptors: the entries of /proc/self/fd (the three the collector keeps included); -1
 * when unread. */
static long open_fds(DIR *d)
{
    long n = 0;

    if (d == NULL)
        return -1;
    rewinddir(d); /* procfs lists the descriptors afresh */
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d))
        if (e->d_name[0] != '.')
            n++;
    return n;
}

/* Field 20 of /proc/self/stat (num_threads), after the command name's closing parenthesis. */
static long thread_count(int fd)
{
    char buf[1024], *p;
    long v = -1;

    if (read_proc(fd, buf, sizeof(buf)) < 0)
        return -1;
    p = strrchr(buf, ')');
    if (p != NULL && sscanf(p + 1,
                            " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d "
                            "%*d %*d %ld",
                            &v) != 1)
        v = -1;
    return v;
}

static void collect(void *arg)
{
    rq_procmetrics_t *p = arg;
    long page = sysconf(_SC_PAGESIZE), fds = open_fds(p->fd_dir),
         threads = thread_count(p->stat_fd);
    unsigned long vsz = 0, rss = 0;
    double cpu = cpu_seconds();
    struct rlimit rl;
    char statm[256];

    if (read_proc(p->statm_fd, statm, sizeof(statm)) > 0 &&
        sscanf(statm, "%lu %lu", &vsz, &rss) == 2) {
        rq_series_set(p->vsz, (double)vsz * (double)page);
        rq_series_set(p->rss, (double)rss * (double)page);
    }
    if (cpu > p->cpu_reported) {
        rq_series_add(p->cpu, cpu - p->cpu_reported);
        p->cpu_reported = cpu;
    }
    if (fds >= 0)
        rq_series_set(p->fds, (double)fds);
    if (threads > 0)
        rq_series_set(p->threads, (double)threads);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        rq_series_set(p->max_fds, (double)rl.rlim_cur);
#ifdef RQ_HAVE_MALLINFO2
    if (p->heap_in_use != NULL) {
        struct mallinfo2 mi = mallinfo2();
        rq_series_set(p->heap_in_use, (double)(mi.uordblks + mi.hblkhd));
        rq_series_set(p->heap_free, (double)mi.fordblks);
    }
#endif
}

/* Registers process_heap_bytes{state}; 0 without mallinfo2, -1 on failure. */
static int register_heap(rq_metrics_t *m, rq_procmetrics_t *p)
{
#ifdef RQ_HAVE_MALLINFO2
    static const char *const state[] = {"state"};
    static const char *const in_use[] = {"in_use"}, *const free_[] = {"free"};
    rq_metric_t *f = rq_metrics_gauge(m, "process_heap_bytes",
                                      "Heap bytes by state (glibc mallinfo2): in_use, held by the "
                                      "program; free, kept by malloc for reuse.",
                                      1, state);

    if (f == NULL)
        return -1;
    p->heap_in_use = rq_metric_series(f, 1, in_use);
    p->heap_free = rq_metric_series(f, 1, free_);
    return p->heap_in_use != NULL && p->heap_free != NULL ? 0 : -1;
#else
    (void)m;
    (void)p;
    return 0;
#endif
}

int rq_procmetrics_register(rq_metrics_t *m)
{
    rq_procmetrics_t *p = m != NULL ? calloc(1, sizeof(*p)) : NULL;

    if (p == NULL)
        goto fail;
    p->stat_fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    p->statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    p->fd_dir = opendir("/proc/self/fd"); /* glibc opens it O_CLOEXEC */
    p->cpu = family(m, 1, "process_cpu_seconds_total",
                    "Total user and system CPU time spent in "
                    "seconds.");
    p->rss = family(m, 0, "process_resident_memory_bytes", "Resident memory size in bytes.");
    p->vsz = family(m, 0, "process_virtual_memory_bytes", "Virtual memory size in bytes.");
    p->fds = family(m, 0, "process_open_fds", "Number of open file descriptors.");
    p->max_fds = family(m, 0, "process_max_fds", "Maximum number of open file descriptors.");
    p->start = family(m, 0, "process_start_time_seconds",
                      "Start time of the process since unix epoch in seconds.");
    p->threads = family(m, 0, "process_threads", "Number of OS threads in the process.");
    if (p->cpu == NULL || p->rss == NULL || p->vsz == NULL || p->fds == NULL ||
        p->max_fds == NULL || p->start == NULL || p->threads == NULL || register_heap(m, p) != 0)
        goto fail;
    rq_series_set(p->start, (double)(rq_wall_ms() / 1000));
    if (rq_metrics_add_collector(m, collect, procmetrics_free, p) != 0)
        goto fail;
    return 0;
fail:
    procmetrics_free(p);
    return -1;
}
