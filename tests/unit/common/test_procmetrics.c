/* Unit tests for common/procmetrics.c: the process_* families read the process itself. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "procmetrics.h"

TestSuite(procmetrics, .timeout = 60);

/* The value of the first sample line that starts with `name` followed by a space or '{'
 * (labels included in `name` when given); -1 when absent. */
static double sample(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (strncmp(p, name, n) == 0 && (p[n] == ' ' || p[n] == '{'))
            return strtod(strchr(p + n, ' ') + 1, NULL);
    }
    return -1;
}

static double scrape(rq_metrics_t *m, const char *name)
{
    char *text = rq_metrics_render(m, NULL);
    double v = sample(text, name);
    free(text);
    return v;
}

Test(procmetrics, families_read_the_process)
{
    rq_metrics_t *m = rq_metrics_new();
    struct rlimit rl;

    cr_assert_eq(rq_procmetrics_register(m), 0);
    cr_assert_gt(scrape(m, "process_resident_memory_bytes"), 1 << 20);
    cr_assert_gt(scrape(m, "process_virtual_memory_bytes"),
                 scrape(m, "process_resident_memory_bytes"));
    cr_assert_geq(scrape(m, "process_threads"), 1);
    double start = scrape(m, "process_start_time_seconds"), now = (double)time(NULL);
    cr_assert(start > now - 60 && start <= now + 1, "start %f now %f", start, now);
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    cr_assert_eq(scrape(m, "process_max_fds"), (double)rl.rlim_cur);
    rq_metrics_free(m);
}

Test(procmetrics, open_fds_counts_a_new_descriptor)
{
    rq_metrics_t *m = rq_metrics_new();

    cr_assert_eq(rq_procmetrics_register(m), 0);
    double before = scrape(m, "process_open_fds");
    int fd[3];
    for (int i = 0; i < 3; i++)
        fd[i] = dup(2);
    double after = scrape(m, "process_open_fds");
    for (int i = 0; i < 3; i++)
        close(fd[i]);
    cr_assert_eq(after, before + 3, "before %f after %f", before, after);
    cr_assert_eq(scrape(m, "process_open_fds"), before);
    rq_metrics_free(m);
}

Test(procmetrics, cpu_seconds_grow_with_work)
{
    rq_metrics_t *m = rq_metrics_new();
    volatile double x = 0;

    cr_assert_eq(rq_procmetrics_register(m), 0);
    double before = scrape(m, "process_cpu_seconds_total");
    clock_t t0 = clock();
    while (clock() - t0 < CLOCKS_PER_SEC / 5)
        x += 1.0;
    double after = scrape(m, "process_cpu_seconds_total");
    cr_assert(after >= before + 0.15, "before %f after %f", before, after);
    cr_assert_geq(scrape(m, "process_cpu_seconds_total"), after, "a counter never goes down");
    rq_metrics_free(m);
}

#if defined(__SANITIZE_ADDRESS__)
#define RQ_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RQ_TEST_ASAN 1
#endif
#endif

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)) &&          \
    !defined(RQ_TEST_ASAN)
/* Globals, so that the compiler cannot drop the allocations. */
static char *volatile big;
static char *volatile chunks[100];

Test(procmetrics, heap_in_use_follows_allocations)
{
    rq_metrics_t *m = rq_metrics_new();
    const size_t size = 8u << 20, small = 100 * 1000;

    cr_assert_eq(rq_procmetrics_register(m), 0);
    double before = scrape(m, "process_heap_bytes{state=\"in_use\"}");
    big = malloc(size); /* an mmapped block */
    memset(big, 1, size);
    for (int i = 0; i < 100; i++) {
        chunks[i] = malloc(1000); /* 100 kB in arena chunks */
        memset(chunks[i], 1, 1000);
    }
    double held = scrape(m, "process_heap_bytes{state=\"in_use\"}");
    cr_assert(held >= before + size + small * 0.9, "before %f held %f", before, held);
    free(big);
    for (int i = 0; i < 100; i++)
        free(chunks[i]);
    double after = scrape(m, "process_heap_bytes{state=\"in_use\"}");
    cr_assert(after < held - size, "held %f after free %f", held, after);
    cr_assert_geq(scrape(m, "process_heap_bytes{state=\"free\"}"), 0);
    rq_metrics_free(m);
}
#else
Test(procmetrics, no_heap_family_where_mallinfo2_reads_nothing)
{
    rq_metrics_t *m = rq_metrics_new();

    cr_assert_eq(rq_procmetrics_register(m), 0);
    cr_assert_eq(scrape(m, "process_heap_bytes{state=\"in_use\"}"), -1, "not registered");
    rq_metrics_free(m);
}
#endif

Test(procmetrics, keeps_reading_at_the_descriptor_limit)
{
    rq_metrics_t *m = rq_metrics_new();
    struct rlimit old, low;
    int fds[64], n = 0;

    cr_assert_eq(rq_procmetrics_register(m), 0);
    double before = scrape(m, "process_open_fds");
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)before + 8;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    while (n < 64 && (fds[n] = dup(2)) >= 0) /* up to the limit */
        n++;
    cr_assert_lt(n, 64, "reached the limit");
    double at_limit = scrape(m, "process_open_fds");
    double threads = scrape(m, "process_threads"), rss = scrape(m, "process_resident_memory_bytes");
    while (n > 0)
        close(fds[--n]);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    cr_assert_eq(at_limit, (double)low.rlim_cur, "every descriptor counted at the limit (%f)",
                 at_limit);
    cr_assert_geq(threads, 1);
    cr_assert_gt(rss, 0);
    rq_metrics_free(m);
}

Test(procmetrics, a_second_registration_is_refused)
{
    rq_metrics_t *m = rq_metrics_new();

    cr_assert_eq(rq_procmetrics_register(m), 0);
    cr_assert_eq(rq_procmetrics_register(m), -1, "the names are taken");
    cr_assert_eq(rq_procmetrics_register(NULL), -1);
    free(rq_metrics_render(m, NULL));
    rq_metrics_free(m);
}

/* The command name in /proc/self/stat is the process's own choice (prctl, or the file it ran):
 * one holding ") R 1 (" and spaces must not shift the fields read after it. */
Test(procmetrics, a_hostile_command_name_does_not_shift_the_fields)
{
    rq_metrics_t *m = rq_metrics_new();

    cr_assert_eq(prctl(PR_SET_NAME, "a) R 1 (b 9 9", 0, 0, 0), 0);
    cr_assert_eq(rq_procmetrics_register(m), 0);
    double threads = scrape(m, "process_threads"), tasks = 0;
    DIR *d = opendir("/proc/self/task"); /* the oracle: one entry per thread */
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d))
        tasks += e->d_name[0] != '.';
    closedir(d);
    cr_assert_eq(threads, tasks, "%f threads, /proc/self/task lists %f", threads, tasks);
    rq_metrics_free(m);
}
