/* api.h - the producer's HTTP API on libmicrohttpd.
 *
 *   POST /produce           one message        -> 201 (confirmed) | 200 with reply (wait)
 *   POST /batch-produce     {"messages":[...]} -> 201 | 200 with replies (wait)
 *   GET  /messages/{id}     a message's status and timeline (results.h; ?wait=N long polls)
 *   GET  /health, /health/live, /health/ready, /metrics
 *   GET  /dlq, POST /dlq/retry
 *
 * With API keys (producer/api/auth.h) every route but /health* and /metrics needs a Bearer key
 * with the route's scope (401/403); RATE_LIMIT_RPS adds a token bucket per key or client
 * address (429). The HTTP limits and HTTPS come from common/http_server.h.
 *
 * HTTP threads never block on the broker. A produce request is handed to the publisher and
 * its MHD connection suspended until the job completes (resumed from the publisher thread).
 * GET /dlq and POST /dlq/retry are handed to the DLQ worker thread (producer/api/dlq.h: one
 * thread, a bounded queue, a short-lived broker connection per call) and suspended likewise
 * until it is done (resumed from that thread); a full queue or a stopping worker is 503 at
 * once.
 */
#ifndef RQ_API_H
#define RQ_API_H

#include "config.h"
#include "metrics.h"
#include "publisher.h"
#include "results.h"

typedef struct rq_api rq_api_t;

/* The routes, for `producer --help` (rq_config_set_help_epilog). */
extern const char rq_api_help_text[];

/* Registers the API's metrics, loads the API keys (and logs who may call), creates the rate
 * limiter (RATE_LIMIT_RPS), starts the DLQ worker thread and the HTTP server on
 * cfg->producer_bind:producer_port. `cfg`, `metrics`, `pub` and `results` must outlive the API.
 * Returns NULL on failure, with a reason logged (for example the port is taken), except when
 * the API's own struct cannot be allocated. */
rq_api_t *rq_api_new(const rq_config_t *cfg, rq_metrics_t *metrics, rq_publisher_t *pub,
                     struct rq_results *results);

/* Re-reads the API keys (API_KEYS_FILE and API_KEYS) and swaps them in without disturbing
 * requests in flight; on any error the current keys stay. Logs the outcome (key ids, never
 * secrets). Returns the key count or -1. Call from one thread at a time (the main loop on
 * SIGHUP); safe while requests are served. */
int rq_api_reload_keys(rq_api_t *api);

/* "https" when HTTP_TLS_CERT/KEY are set, else "http" (for the start-up log line). */
const char *rq_api_scheme(const rq_api_t *api);

/* Stops accepting new connections (existing ones are still served). NULL is a no-op. */
void rq_api_quiesce(rq_api_t *api);

/* Lets the requests in flight get their answers before the server stops: stops the DLQ
 * worker (its jobs end, cancelled, and their connections are resumed with an answer; a job
 * running a broker call ends at its next round trip, which this waits for), then waits up to
 * timeout_ms more until every request whose headers were read has been answered and its
 * answer sent (or its client went away). Call after rq_api_quiesce() and after the publisher
 * stopped (its jobs, done, resume theirs), before rq_api_free(). Returns the number of
 * requests still open at the end (0: all answered; else logged as cut off). NULL: 0. */
int rq_api_drain(rq_api_t *api, int timeout_ms);

/* How long the producer's shutdown waits in rq_api_drain(). */
#define RQ_API_DRAIN_MS 2000

/* Stops the DLQ worker (if rq_api_drain() did not), then the server, and frees it. Every job
 * handed to the publisher must have completed (stop the publisher first); a request still
 * open is cut off (rq_api_drain() first lets them finish). NULL is a no-op. */
void rq_api_free(rq_api_t *api);

#endif
