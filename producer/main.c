/* main.c - the relayq producer: HTTP API + publisher thread (+ the tailer with INPUT_FILE). */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "config.h"
#include "json_alloc.h"
#include "log.h"
#include "metrics.h"
#include "publisher.h"
#include "store.h"
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

/* Every reply, waited for or not, marks its message processed in the store. */
static void on_reply(const char *message_id, const char *body, size_t len, void *arg)
{
    if (message_id[0] != '\0')
        rq_store_processed(arg, message_id, body, len, rq_wall_ms());
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

int main(int argc, char **argv)
{
    rq_config_t cfg;
    rq_log_level_t level = RQ_LOG_INFO;
    rq_metrics_t *metrics = NULL;
    rq_store_t *store = NULL;
    rq_publisher_t *pub = NULL;
    rq_api_t *api = NULL;
    rq_tailer_t *tailer = NULL;
    int64_t stop_deadline, grace;
    struct sigaction sa;
    int rc, status = 1;

    memset(&cfg, 0, sizeof(cfg));
    rc = rq_config_from_args(&cfg, argc, argv, "producer", RQ_SVC_PRODUCER);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    rq_log_level_parse(cfg.log_level, &level);
    rq_log_init("producer", level);
    rq_json_alloc_init(); /* before any thread uses jansson */
    raise_fd_limit();

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    metrics = rq_metrics_new();
    store = rq_store_new((size_t)cfg.message_store_size);
    if (metrics == NULL || store == NULL) {
        rq_error("out of memory");
        goto out;
    }
    pub = rq_publisher_new(&cfg, metrics, on_reply, store);
    if (pub == NULL) {
        rq_error("cannot start the publisher thread");
        goto out;
    }
    api = rq_api_new(&cfg, metrics, pub, store);
    if (api == NULL)
        goto out;
    rq_info("producer %s listening on %s://%s:%d (broker %s%s:%d, queue %s)", RQ_VERSION,
            rq_api_scheme(api), cfg.producer_bind, cfg.producer_port,
            cfg.rabbitmq.tls ? "amqps://" : "", cfg.rabbitmq.host, cfg.rabbitmq.port,
            cfg.rabbitmq.request_queue);
    if (cfg.input_file[0] != '\0') {
        rq_tail_opts_t to;
        char err[512];

        rq_tail_opts_from_config(&to, &cfg);
        tailer = rq_tailer_new(&to, metrics, tail_submit, pub, err, sizeof(err));
        if (tailer == NULL) {
            rq_error("cannot tail %s: %s", cfg.input_file, err);
            goto out;
        }
    }

    while (!stop_signal) {
        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        if (reload_signal) {
            reload_signal = 0;
            rq_api_reload_keys(api);
        }
    }

    rq_info("signal %d: stopping; finishing in-flight requests", (int)stop_signal);
    rq_api_quiesce(api);
    /* Stop reading, let the tail jobs in flight be confirmed and save the position, then
     * stop the publisher: both within one PUBLISH_TIMEOUT_MS window. */
    stop_deadline = rq_mono_ms() + cfg.publish_timeout_ms;
    rq_tailer_stop(tailer, cfg.publish_timeout_ms);
    grace = stop_deadline - rq_mono_ms();
    rq_publisher_stop(pub, grace > 0 ? (int)grace : 0);
    /* Every job is done now and its connection resumed: let those answers reach their
     * clients (and the DLQ worker's cancelled jobs answer) before MHD stops. */
    rq_api_drain(api, RQ_API_DRAIN_MS);
    status = 0;

out:
    rq_api_free(api);
    rq_tailer_stop(tailer, 0);
    /* The publisher completes every job it still holds; only then may the tailer's go. */
    rq_publisher_free(pub);
    rq_tailer_free(tailer);
    rq_store_free(store);
    rq_metrics_free(metrics);
    rq_config_free(&cfg);
    if (status == 0)
        rq_info("stopped");
    return status;
}
