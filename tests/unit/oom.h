/* oom.h - allocation-failure injection for unit tests, in Jansson's style.
 *
 * Include it in exactly one test file (it defines malloc, calloc, realloc, free, strdup and
 * strndup for the whole test program, jansson included: the executable's definitions
 * interpose the C library's and the sanitizer's). The real functions are found with
 * dlsym(RTLD_NEXT), so under ASan every allocation still goes through ASan and LSan still
 * sees leaks. Between oom_start(n) and oom_stop() the n-th allocation (1-based) fails and
 * the others succeed. A test loops n = 1, 2, ... until a run finishes without a failure
 * injected, so every allocation of the code under test fails once.
 *
 * Not thread-safe: the code under test runs on the test's thread.
 */
#ifndef RQ_TEST_OOM_H
#define RQ_TEST_OOM_H
#include <dlfcn.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif
#include <errno.h>
#include <stddef.h>
#include <string.h>

static void *(*oom_real_malloc)(size_t);
static void *(*oom_real_calloc)(size_t, size_t);
static void *(*oom_real_realloc)(void *, size_t);
static void (*oom_real_free)(void *);
static int oom_resolving;
static unsigned char oom_boot[8192]; /* allocations made by dlsym() while resolving */
static size_t oom_boot_used;

static int oom_active;
static unsigned long oom_count, oom_fail_at;
static int oom_injected;

static void *oom_boot_alloc(size_t n)
{
    size_t at = (oom_boot_used + 15) & ~(size_t)15;

    if (at + n > sizeof(oom_boot))
        return NULL;
    oom_boot_used = at + n;
    return memset(oom_boot + at, 0, n);
}

static int oom_is_boot(const void *p)
{
    return (const unsigned char *)p >= oom_boot &&
           (const unsigned char *)p < oom_boot + sizeof(oom_boot);
}

static void oom_resolve(void)
{
    if (oom_real_free != NULL || oom_resolving)
        return;
    oom_resolving = 1;
    oom_real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    oom_real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    oom_real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    oom_real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    oom_resolving = 0;
}

/* Returns 1 when this allocation must fail. */
static int oom_fail_now(void)
{
    if (!oom_active)
        return 0;
    if (++oom_count != oom_fail_at)
        return 0;
    oom_injected = 1;
    errno = ENOMEM; /* as the C library's would */
    return 1;
}

/* Starts counting allocations: the fail_at-th fails (0: none). */
static void oom_start(unsigned long fail_at)
{
    oom_count = 0;
    oom_fail_at = fail_at;
    oom_injected = 0;
    oom_active = 1;
}

/* Stops counting. Returns 1 when a failure was injected since oom_start(). */
static int oom_stop(void)
{
    oom_active = 0;
    return oom_injected;
}

void *malloc(size_t n)
{
    oom_resolve();
    if (oom_real_malloc == NULL)
        return oom_boot_alloc(n);
    return oom_fail_now() ? NULL : oom_real_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    oom_resolve();
    if (oom_real_calloc == NULL)
        return size != 0 && n > sizeof(oom_boot) / size ? NULL : oom_boot_alloc(n * size);
    return oom_fail_now() ? NULL : oom_real_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    oom_resolve();
    if (oom_real_realloc == NULL || oom_is_boot(p)) {
        void *q = oom_real_malloc != NULL ? oom_real_malloc(n) : oom_boot_alloc(n);
        if (q != NULL && p != NULL) /* a boot block: copy what may be there */
            memcpy(q, p,
                   n < (size_t)(oom_boot + sizeof(oom_boot) - (unsigned char *)p)
                       ? n
                       : (size_t)(oom_boot + sizeof(oom_boot) - (unsigned char *)p));
        return q;
    }
    return oom_fail_now() ? NULL : oom_real_realloc(p, n);
}

void free(void *p)
{
    if (p == NULL || oom_is_boot(p))
        return;
    oom_resolve();
    oom_real_free(p);
}

char *strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);

    return p != NULL ? memcpy(p, s, n) : NULL;
}

char *strndup(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    char *p = malloc(n + 1);

    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Returns 1 when LeakSanitizer finds memory leaked so far (its report goes to stderr), 0
 * when it finds none or the build has no sanitizer. Criterion's test processes do not exit
 * through LSan's check, so a test calls this at its end to fail on a leak. */
static int oom_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return __lsan_do_recoverable_leak_check() != 0;
#else
    return 0;
#endif
}

#endif
