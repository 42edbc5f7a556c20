/* main.c - the relayq consumer: configuration, signals, metrics/health HTTP, the worker.
 *
 * With STATUS_STREAM set (the default "relayq.status"), the worker's lifecycle events go to
 * that stream through an append-only status log (status_log.h: its own thread and
 * connection, so a stream outage never stops consuming); STATUS_STREAM="" makes none.
 *
 * SIGHUP reopens OUTPUT_FILE (a rotated file is let go of) and the log (stderr, when it was a
 * regular file at start-up: the same path is opened again), and never stops the consumer.
 *
 * Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 when start-up fails (output file,
 * HTTP listener, memory), 2 on a configuration error (including a HANDLER that cannot be
 * used: the handler's reason is logged).
 */
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "amqp_nodes.h"
#include "config.h"
#include "handler.h"
#include "http_server.h"
#include "http_util.h"
#include "json_alloc.h"
#include "log.h"
#include "metrics.h"
#include "output.h"
#include "procmetrics.h"
#include "status_log.h"
#include "util.h"
#include "worker.h"

static volatile sig_atomic_t g_stop;
static volatile sig_atomic_t g_reopen;

/* Where stderr (the log) went at start-up, when it is a regular file: SIGHUP reopens that
 * path, so that after logrotate renamed the log the records go to the new file. */
static char g_log_path[4096];

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void on_hup(int sig)
{
    (void)sig;
    g_reopen = 1;
}

static int install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_signal;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        return -1;
    /* SIGHUP (logrotate's postrotate) reopens the output file and the log; never stops. */
    sa.sa_handler = on_hup;
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGHUP, &sa, NULL) < 0)
        return -1;
    sa.sa_flags = 0;
    sa.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &sa, NULL);
}

/* Remembers the path of stderr when it is a regular file (else: a pipe, a terminal or
 * journald, nothing to reopen). */
static void note_log_path(void)
{
    struct stat st;
    ssize_t n;

    g_log_path[0] = '\0';
    if (fstat(STDERR_FILENO, &st) < 0 || !S_ISREG(st.st_mode))
        return;
    n = readlink("/proc/self/fd/2", g_log_path, sizeof(g_log_path) - 1);
    if (n <= 0 || g_log_path[0] != '/') {
        g_log_path[0] = '\0';
        return;
    }
    g_log_path[n] = '\0';
}

/* The worker's reopen hook (worker thread, on SIGHUP): points stderr at a fresh open of the
 * log path, created when logrotate renamed the old file away. */
static void reopen_log(void *arg)
{
    int fd;

    (void)arg;
    if (g_log_path[0] == '\0')
        return;
    fd = open(g_log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        rq_error("SIGHUP: cannot reopen the log %s: %s", g_log_path, RQ_STRERR(errno));
        return;
    }
    if (dup2(fd, STDERR_FILENO) < 0)
        rq_error("SIGHUP: cannot reopen the log %s: %s", g_log_path, RQ_STRERR(errno));
    close(fd);
}

static enum MHD_Result handle_http(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **con_cls)
{
    const rq_http_common_t *common = cls;
    enum MHD_Result ret;

    if (rq_http_serve_common(common, conn, method, url, &ret))
        return ret;
    return rq_http_reply_error(conn, 404, "not found");
}

/* Starts the HTTP server on bind:port with the shared limits and optional HTTPS of `srv`
 * (prepared, outliving the daemon). Returns the daemon, or NULL (logged). */
static struct MHD_Daemon *start_http(const char *bind, int port, rq_http_common_t *common,
                                     rq_http_server_t *srv)
{
    struct addrinfo hints;
    struct addrinfo *ai = NULL;
    struct MHD_Daemon *d = NULL;
    unsigned int flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | rq_http_server_flags(srv);
    char portstr[16];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = getaddrinfo(bind, portstr, &hints, &ai);
    if (rc != 0) {
        rq_error("CONSUMER_BIND %s: %s", bind, gai_strerror(rc));
        goto out;
    }
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Timeout, connection caps, header memory, HTTPS and the logger come from the array. */
    d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handle_http, common, MHD_OPTION_ARRAY,
                         rq_http_server_options(srv), MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                         MHD_OPTION_END);
    if (d == NULL)
        rq_error("cannot start the HTTP server on %s:%d: %s", bind, port,
                 errno != 0 ? RQ_STRERR(errno) : "unknown error");
out:
    if (ai != NULL)
        freeaddrinfo(ai);
    return d;
}

/* Creates the HANDLER (handler.h; its metrics in `metrics`) and opens OUTPUT_FILE when set.
 * Returns 0, 2 when the handler cannot be made (a bad HANDLER: a configuration error), or 1
 * when the output file cannot be opened; the reason is logged. What was made is left in
 * *handler and *out for the caller to free. */
static int open_parts(const rq_config_t *cfg, rq_metrics_t *metrics, rq_handler_t **handler,
                      rq_output_t **out)
{
    char err[512];

    *handler = rq_handler_new(cfg, metrics, err, sizeof(err));
    if (*handler == NULL) {
        rq_error("%s", err);
        return 2;
    }
    if (cfg->output_file != NULL && cfg->output_file[0] != '\0') {
        *out = rq_output_open(cfg->output_file, (size_t)cfg->dedup_id_window, err, sizeof(err));
        if (*out == NULL) {
            rq_error("%s", err);
            return 1;
        }
    }
    return 0;
}

#define STATUS_MAX_PENDING 100000                   /* events queued, at most */
#define STATUS_MAX_PENDING_BYTES (64 * 1024 * 1024) /* and their bytes */

/* The append-only status log of the lifecycle events (worker.h), started and given to the
 * worker, into *log; none (NULL) when STATUS_STREAM is "". Returns 0, or -1 when it cannot be
 * made or started (logged). */
static int open_status(const rq_config_t *cfg, rq_metrics_t *metrics, rq_worker_t *worker,
                       rq_status_log_t **log)
{
    rq_status_log_opts_t o;

    *log = NULL;
    if (cfg->rabbitmq.status_stream == NULL || cfg->rabbitmq.status_stream[0] == '\0')
        return 0;
    memset(&o, 0, sizeof(o));
    o.rabbitmq = &cfg->rabbitmq;
    o.stream = cfg->rabbitmq.status_stream;
    o.max_age_s = cfg->rabbitmq.status_max_age_s;
    o.max_bytes = cfg->rabbitmq.status_max_bytes;
    o.service = "consumer";
    o.max_pending = STATUS_MAX_PENDING;
    o.max_pending_bytes = STATUS_MAX_PENDING_BYTES;
    o.pack_max = 64 * 1024; /* the events of a group commit share stream messages */
    o.linger_ms = 5;
    *log = rq_status_log_new(&o, metrics);
    if (*log == NULL) {
        rq_error("cannot create the status log for stream %s", o.stream);
        return -1;
    }
    if (rq_status_log_start(*log) < 0) {
        rq_error("cannot start the status log for stream %s", o.stream);
        return -1;
    }
    rq_worker_set_status(worker, *log);
    rq_info("lifecycle events to stream %s", o.stream);
    return 0;
}

int main(int argc, char **argv)
{
    rq_config_t cfg;
    rq_log_level_t level = RQ_LOG_INFO;
    rq_metrics_t *metrics = NULL;
    rq_worker_metrics_t wm;
    rq_output_t *out = NULL;
    rq_handler_t *handler = NULL;
    rq_worker_t *worker = NULL;
    rq_status_log_t *slog = NULL;
    struct MHD_Daemon *http = NULL;
    rq_http_common_t common;
    rq_http_server_t srv;
    char err[512];
    int status = 1, rc;

    memset(&cfg, 0, sizeof(cfg));
    memset(&srv, 0, sizeof(srv));
    rc = rq_config_from_args(&cfg, argc, argv, "consumer", RQ_SVC_CONSUMER);
    if (rc == 1)
        return 0;
    if (rc < 0)
        return 2;
    level = cfg.log_level_id; /* parsed and validated once, by rq_config_load */
    rq_log_init("consumer", level);
    rq_json_alloc_init(); /* before any thread uses jansson */

    if (install_signals() < 0) {
        rq_error("cannot install signal handlers: %s", RQ_STRERR(errno));
        goto out;
    }
    metrics = rq_metrics_new();
    if (metrics == NULL || rq_worker_metrics_register(&wm, metrics) < 0 ||
        rq_amqp_nodes_metrics(metrics) < 0 || rq_procmetrics_register(metrics) < 0) {
        rq_error("cannot create the metrics registry");
        goto out;
    }
    rc = open_parts(&cfg, metrics, &handler, &out);
    if (rc != 0) {
        status = rc;
        goto out;
    }
    worker = rq_worker_new(&cfg, out, handler, &wm);
    if (worker == NULL) {
        rq_error("out of memory");
        goto out;
    }
    if (open_status(&cfg, metrics, worker, &slog) < 0)
        goto out;
    if (cfg.consumer_port > 0) {
        common.metrics = metrics;
        common.ready = rq_worker_ready;
        common.ready_arg = worker;
        if (rq_http_server_prepare(&srv, &cfg, NULL, err, sizeof(err)) != 0) {
            rq_error("%s", err);
            goto out;
        }
        http = start_http(cfg.consumer_bind, cfg.consumer_port, &common, &srv);
        if (http == NULL)
            goto out;
        rq_info("consumer %s: health and metrics on %s://%s:%d", RQ_VERSION,
                rq_http_server_scheme(&srv), cfg.consumer_bind, cfg.consumer_port);
    } else {
        rq_info("consumer %s: HTTP disabled (CONSUMER_PORT=0)", RQ_VERSION);
    }

    note_log_path();
    rq_worker_set_reopen(worker, &g_reopen, reopen_log, NULL);
    rq_worker_run(worker, &g_stop);
    status = 0;
out:
    if (http != NULL)
        MHD_stop_daemon(http);
    rq_http_server_clear(&srv);
    rq_worker_free(worker);
    rq_status_log_free(slog); /* after the worker: its last events are published (about 1 s) */
    rq_handler_free(handler);
    rq_output_free(out);
    rq_amqp_nodes_metrics(NULL);
    rq_metrics_free(metrics);
    rq_config_free(&cfg);
    return status;
}
