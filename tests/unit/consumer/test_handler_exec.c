/* Unit tests for consumer/handler_exec.c with real commands: stdin to stdout, exit statuses
 * and stderr in why, a timeout that kills, a 4 MiB payload through cat, overlapping
 * commands, the environment, no leaked descriptors, no zombies, the command line's words. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "handler.h"
#include "metrics.h"
#include "util.h"
#include "handler_test.h"

static rq_config_t cfg;

static void setup(void)
{
    /* the test process keeps SIGPIPE's default: the handler must not raise it */
    signal(SIGPIPE, SIG_DFL);
    cr_assert_eq(rq_config_defaults(&cfg), 0);
}

static void teardown(void)
{
    rq_config_free(&cfg);
}

TestSuite(handler_exec, .init = setup, .fini = teardown, .timeout = 30);

static rq_handler_t *exec_h(const char *cmd)
{
    char spec[512], err[256] = "";
    rq_handler_t *h;

    snprintf(spec, sizeof(spec), "exec:%s", cmd);
    free(cfg.handler);
    cfg.handler = strdup(spec);
    h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    cr_assert_not_null(h, "%s: %s", spec, err);
    cr_assert_str_eq(rq_handler_kind(h), "exec");
    return h;
}

/* Drives h until n jobs came back or limit_ms passed (handler_test.h). */
static int run(rq_handler_t *h, int n, int limit_ms)
{
    return run_waiting(h, n, limit_ms, 100);
}

static rq_handler_job_t one(const char *cmd, const char *payload, int limit_ms)
{
    rq_handler_t *h = exec_h(cmd);
    rq_handler_job_t j;

    job_init(&j, payload);
    cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, limit_ms), 1, "%s: no end in %d ms", cmd, limit_ms);
    rq_handler_free(h);
    return j;
}

/* 1 when some child of ours is left (a zombie or running). */
static int children_left(void)
{
    return waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD;
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;

    cr_assert_not_null(d);
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the DIR's own */
}

Test(handler_exec, cat_echoes_stdin_as_the_reply)
{
    rq_handler_job_t j = one("/bin/cat", "{\"n\":0.1}\nline two", 5000);

    cr_assert_eq(j.outcome, RQ_HANDLER_OK);
    cr_assert_eq(j.status, 0);
    cr_assert_str_eq(j.reply, "{\"n\":0.1}\nline two");
    cr_assert_eq(j.reply_len, 18);
    cr_assert_eq(children_left(), 0);
    free(j.reply);
}

Test(handler_exec, nonzero_exit_retries_with_stderr)
{
    rq_handler_job_t j = one("/bin/sh -c 'echo \"it broke\nbadly\" >&2; exit 3'", "x", 5000);

    cr_assert_eq(j.outcome, RQ_HANDLER_RETRY);
    cr_assert_eq(j.status, 3);
    cr_assert_str_eq(j.why, "command exited with status 3: it broke badly ");
    cr_assert_null(j.reply);
    cr_assert_eq(children_left(), 0);
}

Test(handler_exec, exit_without_reading_a_big_payload)
{
    size_t n = 1 << 20;
    char *big = malloc(n + 1);
    rq_handler_job_t j;

    memset(big, 'a', n);
    big[n] = '\0';
    j = one("/bin/sh -c 'exit 3'", big, 5000); /* EPIPE on stdin: no SIGPIPE kills us */
    cr_assert_eq(j.outcome, RQ_HANDLER_RETRY);
    cr_assert_eq(j.status, 3);
    cr_assert_str_eq(j.why, "command exited with status 3: ");
    free(big);
}

Test(handler_exec, killed_by_a_signal_retries)
{
    rq_handler_job_t j = one("/bin/sh -c 'kill -TERM $$'", "", 5000);

    cr_assert_eq(j.outcome, RQ_HANDLER_RETRY);
    cr_assert_eq(j.status, 128 + SIGTERM);
    cr_assert(strstr(j.why, "killed by signal 15") != NULL, "%s", j.why);
}

Test(handler_exec, timeout_kills_the_process_group)
{
    int64_t t0 = rq_mono_ms();
    rq_handler_job_t j;

    cfg.handler_timeout_ms = 200;
    /* a grandchild holding stdout open must be killed too */
    j = one("/bin/sh -c 'sleep 10 & sleep 10'", "", 5000);
    cr_assert_eq(j.outcome, RQ_HANDLER_RETRY);
    cr_assert(strstr(j.why, "timed out after 200 ms") != NULL, "%s", j.why);
    cr_assert_eq(j.status, 128 + SIGKILL);
    cr_assert_lt(rq_mono_ms() - t0, 1500);
    cr_assert_eq(children_left(), 0);
}

Test(handler_exec, four_mib_through_cat)
{
    size_t n = 4u << 20;
    char *big = malloc(n + 1);
    rq_handler_job_t j;

    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    big[n] = '\0';
    j = one("cat", big, 20000); /* PATH lookup; both pipes full at once: no deadlock */
    cr_assert_eq(j.outcome, RQ_HANDLER_OK, "%s", j.why);
    cr_assert_eq(j.reply_len, n);
    cr_assert_eq(memcmp(j.reply, big, n), 0);
    free(j.reply);
    free(big);
}

Test(handler_exec, five_sleeps_overlap)
{
    rq_handler_t *h = exec_h("/bin/sleep 0.3");
    rq_handler_job_t j[5];
    int64_t t0 = rq_mono_ms();

    for (int i = 0; i < 5; i++) {
        job_init(&j[i], "");
        cr_assert_eq(rq_handler_start(h, &j[i], rq_mono_ms()), 0);
    }
    cr_assert_eq(rq_handler_active(h), 5);
    cr_assert_eq(run(h, 5, 5000), 5);
    cr_assert_lt(rq_mono_ms() - t0, 900, "5 x 0.3 s took %lld ms", (long long)(rq_mono_ms() - t0));
    for (int i = 0; i < 5; i++)
        cr_assert_eq(j[i].outcome, RQ_HANDLER_OK);
    cr_assert_eq(children_left(), 0);
    rq_handler_free(h);
}

Test(handler_exec, concurrency_is_capped)
{
    rq_handler_t *h;
    rq_handler_job_t j[3];

    cfg.handler_concurrency = 2;
    h = exec_h("/bin/true");
    for (int i = 0; i < 3; i++)
        job_init(&j[i], "");
    cr_assert_eq(rq_handler_start(h, &j[0], rq_mono_ms()), 0);
    cr_assert_eq(rq_handler_start(h, &j[1], rq_mono_ms()), 0);
    cr_assert_eq(rq_handler_start(h, &j[2], rq_mono_ms()), -1);
    cr_assert_eq(run(h, 2, 5000), 2);
    cr_assert_eq(rq_handler_start(h, &j[2], rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, 5000), 1);
    rq_handler_free(h);
}

Test(handler_exec, metadata_in_the_environment)
{
    rq_handler_t *h;
    rq_handler_job_t j;

    setenv("TRACEPARENT", "00-stale-stale-00", 1); /* inherited: must not reach the child */
    setenv("RELAYQ_TEST_KEEP", "kept", 1);
    h = exec_h("/bin/sh -c 'env | grep -E \"^(RELAYQ_|TRACE)\" | sort'");
    job_init(&j, "");
    j.message_id = "m-1";
    j.correlation_id = "c 1; $(touch /tmp/relayq-pwned)";
    j.attempt = 4;
    j.source = "tail";
    j.content_type = "text/plain";
    j.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    j.tracestate = "a=b";
    cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, 5000), 1);
    cr_assert_eq(j.outcome, RQ_HANDLER_OK, "%s", j.why);
    cr_assert_str_eq(j.reply,
                     "RELAYQ_ATTEMPT=4\n"
                     "RELAYQ_CONTENT_TYPE=text/plain\n"
                     "RELAYQ_CORRELATION_ID=c 1; $(touch /tmp/relayq-pwned)\n"
                     "RELAYQ_MESSAGE_ID=m-1\n"
                     "RELAYQ_SOURCE=tail\n"
                     "RELAYQ_TEST_KEEP=kept\n"
                     "TRACEPARENT=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n"
                     "TRACESTATE=a=b\n");
    free(j.reply);

    job_init(&j, ""); /* nothing set: empty RELAYQ_*, no trace context, JSON by default */
    cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, 5000), 1);
    cr_assert_str_eq(j.reply, "RELAYQ_ATTEMPT=0\n"
                              "RELAYQ_CONTENT_TYPE=application/json\n"
                              "RELAYQ_CORRELATION_ID=\n"
                              "RELAYQ_MESSAGE_ID=\n"
                              "RELAYQ_SOURCE=\n"
                              "RELAYQ_TEST_KEEP=kept\n");
    free(j.reply);
    rq_handler_free(h);
}

Test(handler_exec, payload_is_never_the_command_line)
{
    rq_handler_job_t j = one("/bin/echo ok", "; touch /tmp/relayq-pwned-2", 5000);

    cr_assert_str_eq(j.reply, "ok\n");
    cr_assert_neq(access("/tmp/relayq-pwned-2", F_OK), 0);
    free(j.reply);
}

Test(handler_exec, no_descriptor_leaks_into_the_child_nor_stays_open)
{
    int secret = open("/dev/null", O_RDONLY); /* no O_CLOEXEC, like a careless library's */
    int before;
    rq_handler_job_t j;
    char want[64];

    cr_assert(secret > 2);
    before = open_fds();
    j = one("/bin/sh -c 'ls /proc/self/fd | sort -n | tr \"\\n\" \" \"'", "", 5000);
    cr_assert_eq(j.outcome, RQ_HANDLER_OK, "%s", j.why);
    /* 0 1 2 and the one ls opens for the directory (3) */
    snprintf(want, sizeof(want), "0 1 2 3 ");
    cr_assert_str_eq(j.reply, want);
    cr_assert_eq(open_fds(), before, "descriptors left open in the consumer");
    free(j.reply);
    close(secret);
}

Test(handler_exec, stdout_over_max_reply_kills)
{
    /* 16 MiB is the handler's bound: 17 MiB of zeros */
    rq_handler_job_t j = one("/bin/sh -c 'head -c 17825792 /dev/zero; sleep 10'", "", 10000);

    cr_assert_eq(j.outcome, RQ_HANDLER_RETRY);
    cr_assert(strstr(j.why, "more than 16777216 bytes") != NULL, "%s", j.why);
    cr_assert_null(j.reply);
    cr_assert_eq(children_left(), 0);
}

Test(handler_exec, cancel_all_kills_and_reaps)
{
    rq_handler_t *h = exec_h("/bin/sleep 10");
    rq_handler_job_t j[3], *done[3];
    int64_t t0 = rq_mono_ms();

    for (int i = 0; i < 3; i++) {
        job_init(&j[i], "");
        cr_assert_eq(rq_handler_start(h, &j[i], rq_mono_ms()), 0);
    }
    run(h, 3, 100);
    rq_handler_cancel_all(h);
    cr_assert_eq(rq_handler_active(h), 0);
    cr_assert_eq(children_left(), 0);
    cr_assert_lt(rq_mono_ms() - t0, 2000);
    cr_assert_eq(rq_handler_collect(h, rq_mono_ms(), done, 3), 0);
    rq_handler_free(h);
}

Test(handler_exec, command_line_words)
{
    rq_handler_job_t j = one("/usr/bin/printf '[%s]' a\\ b \"c \\\"d\\\"\" 'e  f' g", "", 5000);

    cr_assert_str_eq(j.reply, "[a b][c \"d\"][e  f][g]");
    free(j.reply);
}

Test(handler_exec, bad_commands_are_config_errors)
{
    static const char *const bad[] = {"exec:", "exec:  ", "exec:/no/such/cmd",
                                      "exec:no-such-cmd-relayq", "exec:/bin/sh -c 'x"};
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        free(cfg.handler);
        cfg.handler = strdup(bad[i]);
        cr_assert_null(rq_handler_new(&cfg, NULL, err, sizeof(err)), "%s accepted", bad[i]);
        cr_assert(strstr(err, "HANDLER") != NULL, "%s: %s", bad[i], err);
    }
}

Test(handler_exec, metrics_by_exit_status)
{
    char err[256] = "";
    rq_metrics_t *m = rq_metrics_new();
    rq_handler_t *h;
    rq_handler_job_t j;
    char *text;

    free(cfg.handler);
    cfg.handler = strdup("exec:/bin/sh -c 'exit 7'");
    h = rq_handler_new(&cfg, m, err, sizeof(err));
    job_init(&j, "");
    cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, 5000), 1);
    text = rq_metrics_render(m, NULL);
    cr_assert(strstr(text, "consumer_handler_outcomes_total{handler=\"exec\",outcome=\"retry\","
                           "status=\"7\"} 1") != NULL,
              "%s", text);
    free(text);
    rq_handler_free(h);
    rq_metrics_free(m);
}

/* Review of issue 14: a command that exited 0 is a success, even when the worker collects it
 * only after its deadline (a slow fdatasync held the thread), and even when a background
 * child it started keeps stdout open: never "timed out", never retried. */
Test(handler_exec, an_exit_seen_late_or_with_a_lingering_child_is_not_a_timeout)
{
    rq_handler_t *h;
    rq_handler_job_t j, *done[4];
    struct timespec ts = {0, 500000000};

    cfg.handler_timeout_ms = 200;
    h = exec_h("/bin/echo ok");
    job_init(&j, "");
    cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
    nanosleep(&ts, NULL); /* the worker was busy past the deadline */
    cr_assert_eq(run(h, 1, 2000), 1);
    (void)done;
    cr_expect_eq(j.outcome, RQ_HANDLER_OK, "late collect: %s", j.why);
    cr_expect_eq(j.status, 0);
    free(j.reply);
    rq_handler_free(h);

    /* sh itself may take longer than 200 ms to start and exit under ASan on a loaded
     * machine; the child it leaves behind outlives this timeout by far */
    cfg.handler_timeout_ms = 2000;
    j = one("/bin/sh -c 'sleep 3 & echo ok'", "", 2500);
    cr_expect_eq(j.outcome, RQ_HANDLER_OK, "lingering child: %s", j.why);
    cr_expect_eq(j.status, 0);
    cr_expect(j.reply != NULL && strncmp(j.reply, "ok", 2) == 0);
    free(j.reply);
}
