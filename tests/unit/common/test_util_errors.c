/* Unit tests for the error helpers of common/util.c: rq_errf, rq_verrf, rq_strerror. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

TestSuite(util_errors, .timeout = 30);

/* ---- rq_errf / rq_verrf ---- */

Test(util_errors, errf_formats_and_returns_minus_one)
{
    char err[64];

    memset(err, 'x', sizeof(err));
    cr_expect_eq(rq_errf(err, sizeof(err), "%s:%u: %s", "keys.txt", 3u, "bad entry"), -1);
    cr_expect_str_eq(err, "keys.txt:3: bad entry");
}

Test(util_errors, errf_with_null_or_empty_buffer_writes_nothing)
{
    char err[8] = "keep";

    cr_expect_eq(rq_errf(NULL, 0, "%s", "text"), -1);
    cr_expect_eq(rq_errf(NULL, 64, "%s", "text"), -1, "NULL with a length must not crash");
    cr_expect_eq(rq_errf(err, 0, "%s", "text"), -1);
    cr_expect_str_eq(err, "keep", "errlen 0 leaves the buffer alone");
}

Test(util_errors, errf_truncates_and_always_terminates)
{
    char err[8];

    memset(err, 'x', sizeof(err));
    cr_expect_eq(rq_errf(err, sizeof(err), "%s", "abcdefghijklmnop"), -1);
    cr_expect_str_eq(err, "abcdefg", "cut to errlen - 1 bytes");
    memset(err, 'x', sizeof(err));
    rq_errf(err, sizeof(err), "%s", "abcdefg"); /* exactly fits */
    cr_expect_str_eq(err, "abcdefg");
    memset(err, 'x', sizeof(err));
    rq_errf(err, 1, "%s", "abc");
    cr_expect_eq(err[0], '\0', "errlen 1 holds only the NUL");
    cr_expect_eq(err[1], 'x', "nothing written past errlen");
    memset(err, 'x', sizeof(err));
    rq_errf(err, sizeof(err), "%s", "");
    cr_expect_str_eq(err, "", "an empty message still terminates");
}

__attribute__((format(printf, 3, 4))) static int via_verrf(char *err, size_t errlen,
                                                           const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = rq_verrf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

Test(util_errors, verrf_is_the_same_formatter)
{
    char a[16], b[16];

    cr_expect_eq(via_verrf(a, sizeof(a), "%d-%s", 42, "a long tail of text"), -1);
    rq_errf(b, sizeof(b), "%d-%s", 42, "a long tail of text");
    cr_expect_str_eq(a, b);
    cr_expect_str_eq(a, "42-a long tail ");
    cr_expect_eq(via_verrf(NULL, 16, "%d", 1), -1);
}

/* ---- rq_strerror ---- */

Test(util_errors, strerror_words_errno_like_strerror)
{
    static const int nums[] = {EACCES, ENOENT, EIO, EINVAL, ENOSPC, EAGAIN, 0};
    char buf[RQ_STRERROR_LEN];

    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        char want[RQ_STRERROR_LEN];
        snprintf(want, sizeof(want), "%s", strerror(nums[i])); /* one thread: fine here */
        cr_expect_str_eq(rq_strerror(nums[i], buf, sizeof(buf)), want, "errno %d", nums[i]);
    }
    cr_expect_str_eq(rq_strerror(EACCES, buf, sizeof(buf)), "Permission denied");
}

Test(util_errors, strerror_of_an_unknown_number)
{
    char buf[RQ_STRERROR_LEN], want[RQ_STRERROR_LEN];

    snprintf(want, sizeof(want), "%s", strerror(99999));
    cr_expect_str_eq(rq_strerror(99999, buf, sizeof(buf)), want);
    cr_expect_str_eq(buf, "Unknown error 99999");
    cr_expect_str_eq(rq_strerror(-5, buf, sizeof(buf)), "Unknown error -5");
}

Test(util_errors, strerror_returns_buf_cuts_and_keeps_errno)
{
    char buf[6];
    const char *r;

    memset(buf, 'x', sizeof(buf));
    errno = ENOSPC;
    r = rq_strerror(EACCES, buf, sizeof(buf));
    cr_expect_eq(r, buf, "the text is in the caller's buffer");
    cr_expect_str_eq(buf, "Permi", "cut to len - 1 bytes, terminated");
    cr_expect_eq(errno, ENOSPC, "errno is preserved");
    r = rq_strerror(EACCES, buf, 0);
    cr_expect_not_null(r);
    cr_expect_str_eq(r, "");
    cr_expect_str_eq(buf, "Permi", "len 0 writes nothing");
    cr_expect_str_eq(rq_strerror(EACCES, NULL, 0), "");
}

/* Several threads each word their own errno value many times: every result must be the
 * text of that thread's value (strerror() may share one static buffer). */
typedef struct {
    int errnum;
    char want[RQ_STRERROR_LEN];
    int bad;
} strerror_job_t;

static void *strerror_worker(void *arg)
{
    strerror_job_t *j = arg;
    char buf[RQ_STRERROR_LEN];

    for (int i = 0; i < 20000; i++) {
        if (strcmp(rq_strerror(j->errnum, buf, sizeof(buf)), j->want) != 0)
            j->bad++;
    }
    return NULL;
}

Test(util_errors, strerror_is_thread_safe)
{
    strerror_job_t jobs[4] = {
        {.errnum = EACCES}, {.errnum = 4242}, {.errnum = ENOENT}, {.errnum = 5151}};
    pthread_t t[4];

    for (int i = 0; i < 4; i++)
        snprintf(jobs[i].want, sizeof(jobs[i].want), "%s", strerror(jobs[i].errnum));
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, strerror_worker, &jobs[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        cr_expect_eq(jobs[i].bad, 0, "errno %d worded wrongly %d times", jobs[i].errnum,
                     jobs[i].bad);
    }
}
