/* main.c - the relayq producer: HTTP API + publisher thread (+ the tailer with INPUT_FILE). */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "amqp_nodes.h"
#include "api.h"
#include "config.h"
#include "json_alloc.h"
#include "log.h"
#include "metrics.h"
#include "procmetrics.h"
#include "publisher.h"
#include "results.h"
#include "tailer.h"
#include "util.h"

static volatile sig_atomic_t stop_signal;
static volatile sig_atomic_t reload_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* SIGHUP: the main loop re-reads the API keys (the handler only sets a flag). */
static void on_hup(int sig)
{
    reload_signal = sig;
}

/* Every reply, waited for or not, marks its message processed in the index. */
static void on_reply(const char *message_id, const char *body, size_t len, void *arg)
{
    rq_results_replied(arg, message_id, body, len);
}

/* The tailer hands its jobs to the publisher. */
static int tail_submit(void *arg, rq_pub_job_t *job)
{
    return rq_publisher_submit(arg, job);
}

/* Thousands of concurrent callers need thousands of descriptors. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The parts of a running producer, started in this order and stopped in reverse. */
typedef struct producer {
    rq_metrics_t *metrics;
    rq_results_t *results;
    rq_publisher_t *pub;
    rq_api_t *api;
    rq_tailer_t *tailer; /* NULL without INPUT_FILE */
} producer_t;

/* Phase "load config": reads the command line and settings into *cfg, starts the log and
 * jansson's allocator, raises the descriptor limit. Returns -1 to go on (*cfg loaded), else
 * the exit code: 0 after --help or --version, 2 when the settings are wrong (printed). */
static int load_config(rq_config_t *cfg, int argc, char **argv)
{
    rq_log_level_t level = RQ_LOG_INFO;
    int rc;

    rq_config_set_help_epilog(rq_api_help_text);
    rc = rq_config_from_args(cfg, argc, argv, "producer", RQ_SVC_PRODUCER);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    level = cfg->log_level_id; /* parsed and validated once, by rq_config_load */
    rq_log_init("producer", level);
    rq_json_alloc_init(); /* before any thread uses jansson */
    raise_fd_limit();
    return -1;
}

/* SIGTERM and SIGINT ask the main loop to stop, SIGHUP to reload the keys; SIGPIPE ignored. */
static void install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Phase "start parts": metrics, the message index (and status stream), publisher, HTTP API (logs
 * where it listens), then the tailer with INPUT_FILE. Returns 0, or -1 with the reason logged (what
 * started stays in *p for free_parts()). */
static int start_parts(producer_t *p, const rq_config_t *cfg)
{
    p->metrics = rq_metrics_new();
    if (p->metrics == NULL || rq_amqp_nodes_metrics(p->metrics) < 0 ||
        rq_procmetrics_register(p->metrics) < 0 ||
        (p->results = rq_results_new(cfg, p->metrics)) == NULL) {
        rq_error("out of memory");
        return -1;
    }
    if (rq_results_start(p->results) != 0) {
        rq_error("cannot start the status stream's thread");
        return -1;
    }
    p->pub = rq_publisher_new(cfg, p->metrics, on_reply, p->results);
    if (p->pub == NULL) {
        rq_error("cannot start the publisher thread");
        return -1;
    }
    p->api = rq_api_new(cfg, p->metrics, p->pub, p->results);
    if (p->api == NULL)
        return -1;
    if (cfg->rabbitmq.addresses[0] != '\0')
        rq_info("producer %s listening on %s://%s:%d (broker nodes %s%s, queue %s)", RQ_VERSION,
                rq_api_scheme(p->api), cfg->producer_bind, cfg->producer_port,
                cfg->rabbitmq.tls ? "amqps://" : "", cfg->rabbitmq.addresses,
                cfg->rabbitmq.request_queue);
    else
        rq_info("producer %s listening on %s://%s:%d (broker %s%s:%d, queue %s)", RQ_VERSION,
                rq_api_scheme(p->api), cfg->producer_bind, cfg->producer_port,
                cfg->rabbitmq.tls ? "amqps://" : "", cfg->rabbitmq.host, cfg->rabbitmq.port,
                cfg->rabbitmq.request_queue);
    if (cfg->input_file[0] != '\0') {
        rq_tail_opts_t to;
        char err[512];

        rq_tail_opts_from_config(&to, cfg);
        p->tailer = rq_tailer_new(&to, p->metrics, tail_submit, p->pub, err, sizeof(err));
        if (p->tailer == NULL) {
            rq_error("cannot tail %s: %s", cfg->input_file, err);
            return -1;
        }
    }
    return 0;
}

/* Phase "loop": waits for a stop signal, reloading the API keys on SIGHUP. */
static void run_loop(producer_t *p)
{
    while (!stop_signal) {
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        if (reload_signal) {
            reload_signal = 0;
            rq_api_reload_keys(p->api);
        }
    }
}

/* Phase "stop": the graceful stop after a signal. New connections are refused, the tailer
 * and the publisher finish within one PUBLISH_TIMEOUT_MS, then the answers in flight reach
 * their clients. Leaves every part stopped but not freed. */
static void stop_parts(producer_t *p, const rq_config_t *cfg)
{
    int64_t stop_deadline, grace;

    rq_info("signal %d: stopping; finishing in-flight requests", (int)stop_signal);
    rq_api_quiesce(p->api);
    /* Long polls and requests waiting on the status stream answer now; jobs done from now on
     * answer without waiting for the stream. */
    rq_results_stop(p->results);
    /* Stop reading, let the tail jobs in flight be confirmed and save the position, then
     * stop the publisher: both within one PUBLISH_TIMEOUT_MS window. */
    stop_deadline = rq_mono_ms() + cfg->publish_timeout_ms;
    rq_tailer_stop(p->tailer, cfg->publish_timeout_ms);
    grace = stop_deadline - rq_mono_ms();
    rq_publisher_stop(p->pub, grace > 0 ? (int)grace : 0);
    /* Every job is done now and its connection resumed: let those answers reach their
     * clients (and the DLQ worker's cancelled jobs answer) before MHD stops. */
    rq_api_drain(p->api, RQ_API_DRAIN_MS);
}

/* Frees every part of *p, started or not, in the order their threads allow. */
static void free_parts(producer_t *p)
{
    rq_api_free(p->api);
    rq_tailer_stop(p->tailer, 0);
    /* The publisher completes every job it still holds; only then may the tailer's go. */
    rq_publisher_free(p->pub);
    rq_tailer_free(p->tailer);
    rq_results_free(p->results);
    rq_amqp_nodes_metrics(NULL);
    rq_metrics_free(p->metrics);
}

/* load config -> start parts -> loop -> stop, then free. */
int main(int argc, char **argv)
{
    rq_config_t cfg;
    producer_t p;
    int rc, status = 1;

    memset(&cfg, 0, sizeof(cfg));
    memset(&p, 0, sizeof(p));
    rc = load_config(&cfg, argc, argv);
    if (rc >= 0)
        return rc;
    install_signals();
    if (start_parts(&p, &cfg) != 0)
        goto out;
    run_loop(&p);
    stop_parts(&p, &cfg);
    status = 0;

out:
    free_parts(&p);
    rq_config_free(&cfg);
    if (status == 0)
        rq_info("stopped");
    return status;
}
