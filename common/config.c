/* config.c - the settings table and everything it drives.
 *
 * `settings[]` below is the only place a setting is described. Defaults, validation,
 * `.env` files, the environment, `--help` and `.env.example` all walk that table, so adding a
 * setting is one line here plus its field in config.h.
 */
#include "config.h"
#include "amqp_nodes.h"
#include "config_table.h"
#include "log.h"
#include "util.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const queue_types[] = {"classic", "quorum", NULL};
static const char *const tail_froms[] = {"head", "end", NULL};
static const char *const address_orders[] = {"in-order", "shuffle", NULL};
static const char *const tail_overlongs[] = {"split", "skip", NULL};

/* An enum setting stores the index of its choice: the lists above are in enum order. */
_Static_assert(RQ_LOG_DEBUG == 0 && RQ_LOG_INFO == 1 && RQ_LOG_WARN == 2 && RQ_LOG_ERROR == 3,
               "log_levels[] is in rq_log_level_t order");
_Static_assert(RQ_QUEUE_CLASSIC == 0 && RQ_QUEUE_QUORUM == 1, "queue_types[] order");
_Static_assert(RQ_ADDRESS_IN_ORDER == 0 && RQ_ADDRESS_SHUFFLE == 1, "address_orders[] order");
_Static_assert(RQ_TAIL_FROM_HEAD == 0 && RQ_TAIL_FROM_END == 1, "tail_froms[] order");
_Static_assert(RQ_TAIL_OVERLONG_SPLIT == 0 && RQ_TAIL_OVERLONG_SKIP == 1, "tail_overlongs[] order");
_Static_assert(sizeof(rq_log_level_t) == sizeof(int) && sizeof(rq_queue_type_t) == sizeof(int) &&
                   sizeof(rq_tail_from_t) == sizeof(int) &&
                   sizeof(rq_tail_overlong_t) == sizeof(int),
               "enum settings are stored as int");

#define FIELD(f) offsetof(rq_config_t, f)
#define S_STR(name, def, f, lo, hi, svc, grp, flags, desc)                                         \
    {                                                                                              \
        name, RQ_CFG_STRING, def, FIELD(f), lo, hi, 0, 0, NULL, svc, flags, grp, desc, 0           \
    }
#define S_INT(name, def, f, lo, hi, svc, grp, desc)                                                \
    {                                                                                              \
        name, RQ_CFG_INT, def, FIELD(f), lo, hi, 0, 0, NULL, svc, 0, grp, desc, 0                  \
    }
#define S_I64(name, def, f, lo, hi, svc, grp, desc)                                                \
    {                                                                                              \
        name, RQ_CFG_INT64, def, FIELD(f), lo, hi, 0, 0, NULL, svc, 0, grp, desc, 0                \
    }
#define S_DBL(name, def, f, lo, hi, svc, grp, desc)                                                \
    {                                                                                              \
        name, RQ_CFG_DOUBLE, def, FIELD(f), 0, 0, lo, hi, NULL, svc, 0, grp, desc, 0               \
    }
#define S_ENUM(name, def, f, ef, choices, svc, grp, desc)                                          \
    {                                                                                              \
        name, RQ_CFG_ENUM, def, FIELD(f), 0, 0, 0, 0, choices, svc, 0, grp, desc, FIELD(ef)        \
    }
#define S_BOOL(name, def, f, svc, grp, desc)                                                       \
    {                                                                                              \
        name, RQ_CFG_BOOL, def, FIELD(f), 0, 0, 0, 0, NULL, svc, 0, grp, desc, 0                   \
    }

#define ALL RQ_SVC_ALL
#define PROD RQ_SVC_PRODUCER
#define CONS RQ_SVC_CONSUMER
#define G_GEN RQ_CFG_GROUP_GENERAL
#define G_MQ RQ_CFG_GROUP_RABBITMQ
#define G_PROD RQ_CFG_GROUP_PRODUCER
#define G_CONS RQ_CFG_GROUP_CONSUMER

/* Every setting, in the order --help and .env.example print them (grouped). */
static const rq_cfg_desc_t settings[] = {
    S_ENUM("LOG_LEVEL", "info", log_level, log_level_id, log_levels, ALL, G_GEN,
           "Lowest level of the JSON log lines written to stderr; case-insensitive, and the "
           "spellings of Python's logging and syslog work too: warning (warn), critical, crit, "
           "fatal and err (error), notice (info), trace (debug)"),
    S_INT("HTTP_CONNECTION_TIMEOUT_S", "30", http_connection_timeout_s, 0, 86400, ALL, G_GEN,
          "An HTTP connection idle (nothing received or sent) this many seconds is closed, "
          "which frees the slot of a slow client (slowloris); requests waiting for the broker "
          "are not affected; 0 disables the timeout"),
    S_INT("HTTP_MAX_CONNECTIONS", "8192", http_max_connections, 1, 1000000, ALL, G_GEN,
          "Most open HTTP connections per service; beyond, new connections are closed at once "
          "(counted in http_connections_rejected_total)"),
    S_INT("HTTP_MAX_CONNECTIONS_PER_IP", "0", http_max_connections_per_ip, 0, 1000000, ALL, G_GEN,
          "Most open HTTP connections from one client address; beyond, new ones are closed at "
          "once; 0 sets no per-address limit"),
    S_INT("MAX_HEADER_BYTES", "36864", max_header_bytes, 4096, 1048576, ALL, G_GEN,
          "Memory per HTTP connection for the request line and headers (libmicrohttpd's "
          "connection memory limit); a longer URL gets 414, larger headers 431. Over 32768, "
          "libmicrohttpd maps each connection's pool: pages it does not touch cost nothing and "
          "all of it goes back to the system at the close (at 32768 or less it is heap memory)"),
    S_STR("HTTP_TLS_CERT", "", http_tls_cert, 0, 4095, ALL, G_GEN, 0,
          "PEM certificate chain file: with HTTP_TLS_KEY the HTTP port speaks HTTPS only; "
          "empty: plain HTTP"),
    S_STR("HTTP_TLS_KEY", "", http_tls_key, 0, 4095, ALL, G_GEN, 0,
          "PEM private key file (unencrypted) of HTTP_TLS_CERT; keep it readable by the "
          "service only"),

    S_STR("RABBITMQ_HOST", "localhost", rabbitmq.host, 1, 255, ALL, G_MQ, 0,
          "Broker host name or IP address"),
    S_INT("RABBITMQ_PORT", "5672", rabbitmq.port, 1, 65535, ALL, G_MQ, "Broker AMQP port"),
    S_STR("RABBITMQ_ADDRESSES", "", rabbitmq.addresses, 0, 4095, ALL, G_MQ, 0,
          "A cluster's nodes, host[:port] separated by commas (a port left out is RABBITMQ_PORT; "
          "IPv6 in brackets, [::1]:5672), at most 16; the service connects to the first that "
          "answers, stays on it while it works and fails over to the next when it is lost; "
          "empty: the one node RABBITMQ_HOST:RABBITMQ_PORT"),
    S_ENUM("RABBITMQ_ADDRESS_ORDER", "in-order", rabbitmq.address_order, rabbitmq.address_order_id,
           address_orders, ALL, G_MQ,
           "Order in which RABBITMQ_ADDRESSES are tried: in-order (as listed) or shuffle (a "
           "random order per process, so replicas spread over the nodes)"),
    S_STR("RABBITMQ_USER", "guest", rabbitmq.user, 1, 255, ALL, G_MQ, 0, "Broker user name"),
    S_STR("RABBITMQ_PASS", "guest", rabbitmq.password, 0, 1024, ALL, G_MQ, RQ_CFG_SECRET,
          "Broker password; never logged or echoed"),
    S_STR("RABBITMQ_VHOST", "/", rabbitmq.vhost, 1, 255, ALL, G_MQ, 0, "Broker virtual host"),
    S_INT("RABBITMQ_HEARTBEAT", "30", rabbitmq.heartbeat, 0, 3600, ALL, G_MQ,
          "AMQP heartbeat interval in seconds; 0 disables heartbeats"),
    S_INT("RABBITMQ_CONNECT_TIMEOUT_MS", "5000", rabbitmq.connect_timeout_ms, 100, 120000, ALL,
          G_MQ,
          "Deadline for connecting, logging in, each broker RPC, and each send while "
          "connecting, in milliseconds"),
    S_BOOL("RABBITMQ_TLS", "false", rabbitmq.tls, ALL, G_MQ,
           "Connect with AMQPS (TLS); set RABBITMQ_PORT to the broker's TLS listener, usually "
           "5671"),
    S_STR("RABBITMQ_TLS_CA", "", rabbitmq.tls_ca, 0, 4095, ALL, G_MQ, 0,
          "PEM file of the CA certificates trusted to sign the broker's certificate; empty: "
          "the system bundle /etc/ssl/certs/ca-certificates.crt"),
    S_STR("RABBITMQ_TLS_CERT", "", rabbitmq.tls_cert, 0, 4095, ALL, G_MQ, 0,
          "PEM client certificate chain for brokers that require one (with RABBITMQ_TLS_KEY); "
          "empty: none"),
    S_STR("RABBITMQ_TLS_KEY", "", rabbitmq.tls_key, 0, 4095, ALL, G_MQ, 0,
          "PEM private key (unencrypted) of RABBITMQ_TLS_CERT"),
    S_BOOL("RABBITMQ_TLS_VERIFY", "true", rabbitmq.tls_verify, ALL, G_MQ,
           "Verify the broker's certificate chain and that it names RABBITMQ_HOST; turn off "
           "only for a test broker"),
    S_STR("RABBITMQ_MANAGEMENT_URL", "", rabbitmq.management_url, 0, 1024, PROD, G_MQ, 0,
          "Base URL (plain http://host[:port][/prefix]) of the broker's management HTTP API, "
          "used with RABBITMQ_USER/RABBITMQ_PASS by GET /queues (list) and for unacked counts; "
          "empty: http://RABBITMQ_HOST:15672; off: none (GET /queues answers 503)"),
    S_STR("STATUS_STREAM", "relayq.status", rabbitmq.status_stream, 0, 200, ALL, G_MQ, 0,
          "RabbitMQ stream that both services append message lifecycle events to and every "
          "producer replica reads (GET /messages/{id} on any replica, after a restart, and "
          "idempotency keys); empty: no stream (each producer knows only its own messages)"),
    S_I64("STATUS_MAX_AGE_S", "86400", rabbitmq.status_max_age_s, 60, 31536000, ALL, G_MQ,
          "Status stream retention by age, in seconds (x-max-age); also the longest an "
          "idempotency key can be remembered"),
    S_I64("STATUS_MAX_BYTES", "1073741824", rabbitmq.status_max_bytes, 4194304, 1099511627776LL,
          ALL, G_MQ, "Status stream retention by size, in bytes (x-max-length-bytes)"),
    S_INT("STATUS_REPLY_MAX", "4096", rabbitmq.status_reply_max, 0, 1048576, ALL, G_MQ,
          "Longest reply kept in a replied event, in bytes; a longer one is cut and marked "
          "truncated"),
    S_STR("REQUEST_QUEUE", "request_queue", rabbitmq.request_queue, 1, 200, ALL, G_MQ, 0,
          "Durable queue the producer publishes to and consumers read; derived queues add a "
          "suffix"),
    S_ENUM("QUEUE_TYPE", "quorum", rabbitmq.queue_type, rabbitmq.queue_type_id, queue_types, ALL,
           G_MQ,
           "Type of relayq's queues: quorum (replicated Raft log, confirms after its fsync) "
           "or classic (one node); both services must agree"),
    S_INT("PREFETCH_COUNT", "100", rabbitmq.prefetch, 1, 65535, ALL, G_MQ,
          "Deliveries a consumer may hold unacknowledged: the basic.qos prefetch count"),
    S_INT("MAX_RETRIES", "5", rabbitmq.max_retries, 0, 20, ALL, G_MQ,
          "Processing attempts retried through the delay queues before a message goes to the "
          "dead-letter queue; both services must agree (it shapes the topology)"),
    S_INT("RETRY_BASE_MS", "1000", rabbitmq.retry_base_ms, 10, 3600000, ALL, G_MQ,
          "Delay before the first retry; retry n waits RETRY_BASE_MS * 2^(n-1); both services "
          "must agree"),

    S_STR("PRODUCER_BIND", "127.0.0.1", producer_bind, 1, 255, PROD, G_PROD, 0,
          "Address the producer's HTTP API listens on"),
    S_INT("PRODUCER_PORT", "5000", producer_port, 1, 65535, PROD, G_PROD,
          "TCP port of the producer's HTTP API"),
    S_I64("MAX_BODY_BYTES", "1048576", max_body_bytes, 1024, 67108864, PROD, G_PROD,
          "Largest accepted HTTP request body in bytes; a larger one gets 413"),
    S_INT("MAX_BATCH_SIZE", "1000", max_batch_size, 1, 100000, PROD, G_PROD,
          "Most messages in one batch request; a larger batch gets 413"),
    S_DBL("MAX_PROCESSING_TIME", "60", max_processing_time, 0, 3600, PROD, G_PROD,
          "Largest accepted processing_time of a message, in seconds"),
    S_INT("PUBLISH_TIMEOUT_MS", "5000", publish_timeout_ms, 100, 120000, PROD, G_PROD,
          "Deadline for the broker to confirm a publish, in milliseconds; then 503"),
    S_INT("CONFIRM_STALL_MS", "3000", confirm_stall_ms, 0, 600000, PROD, G_PROD,
          "A broker connection with publishes in flight that gets no confirm (ack or nack) "
          "for this long, while the broker does not block it (an alarm), is treated as lost: "
          "its node is left for another and the messages are published again there (a node "
          "in a minority partition); 0 turns this off"),
    S_INT("REPLY_TIMEOUT_MS", "30000", reply_timeout_ms, 100, 600000, PROD, G_PROD,
          "Deadline for a consumer's reply when the client waits for it, in milliseconds; "
          "then 504"),
    S_INT("MESSAGE_STORE_SIZE", "10000", message_store_size, 0, 10000000, PROD, G_PROD,
          "Recent messages kept for GET /messages/{id}; 0 keeps none"),
    S_I64("STATUS_REPLAY_S", "0", status_replay_s, 0, 31536000, PROD, G_PROD,
          "How far back a starting producer reads the status stream, in seconds; 0: from the "
          "start of its retention"),
    S_I64("IDEMPOTENCY_TTL_S", "86400", idempotency_ttl_s, 1, 31536000, PROD, G_PROD,
          "How long an Idempotency-Key is remembered, in seconds (at most STATUS_MAX_AGE_S "
          "across replicas and restarts)"),
    S_INT("IDEMPOTENCY_KEYS_MAX", "1000000", idempotency_keys_max, 0, 100000000, PROD, G_PROD,
          "Idempotency keys a producer remembers at most (the oldest forgotten first)"),
    S_INT("MAX_PENDING", "100000", max_pending, 1, 10000000, PROD, G_PROD,
          "Messages the publisher may hold unconfirmed before requests get 503"),
    S_INT("HTTP_THREADS", "2", http_threads, 1, 64, PROD, G_PROD,
          "Threads serving the producer's HTTP API"),
    S_INT("LEASE_MAX_OUTSTANDING", "10000", lease_max_outstanding, 1, 1000000, PROD, G_PROD,
          "Messages one producer may hold leased (pulled, not yet acked) at once; a pull past "
          "it gets 503"),
    S_I64("LEASE_MAX_BYTES", "67108864", lease_max_bytes, 1048576, 17179869184LL, PROD, G_PROD,
          "Memory of the leased and buffered messages of the pull engine (body + 4 KiB each); "
          "past it pulls get 503 and the queue consumers pause"),
    S_INT("LEASE_MAX_WAITERS", "1000", lease_max_waiters, 1, 100000, PROD, G_PROD,
          "Long-polls (GET /queues/{id}/messages with wait_s) waiting at once; more get 503"),
    S_INT("LEASE_IDLE_MS", "5000", lease_idle_ms, 100, 600000, PROD, G_PROD,
          "A queue nobody pulled from for this long has its pull consumer cancelled and its "
          "buffered (not leased) messages given back to the broker"),
    S_INT("RT_MAX_SUBSCRIPTIONS", "2000", rt_max_subscriptions, 0, 100000, PROD, G_PROD,
          "Real-time subscriptions (SSE and WebSocket, topics and queues) a producer serves at "
          "once; more get 503; 0 turns the subscription routes off"),
    S_INT("RT_MAX_SUBSCRIPTIONS_PER_KEY", "100", rt_max_subscriptions_per_key, 0, 100000, PROD,
          G_PROD,
          "Real-time subscriptions one API key or token may hold at once (429 past it); 0: no "
          "per-key limit. Not applied without authentication"),
    S_I64("RT_SEND_BUFFER_BYTES", "1048576", rt_send_buffer_bytes, 4096, 67108864, PROD, G_PROD,
          "Bytes waiting to be sent to one subscriber; past it the subscriber is disconnected "
          "as too slow (told why) and counted in producer_rt_slow_disconnects_total"),
    S_INT("RT_HEARTBEAT_S", "15", rt_heartbeat_s, 1, 3600, PROD, G_PROD,
          "Seconds between heartbeats on an idle subscription (an SSE comment, a WebSocket "
          "ping), so that proxies keep the connection open"),
    S_INT("RT_QUEUE_PREFETCH", "100", rt_queue_prefetch, 1, 10000, PROD, G_PROD,
          "Messages a queue subscription (GET /queues/{id}/events or /ws) holds unacked at once"),
    S_I64("WS_MAX_FRAME_BYTES", "1048576", ws_max_frame_bytes, 125, 16777216, PROD, G_PROD,
          "Largest WebSocket message a client may send (a frame or a fragmented message); "
          "larger closes the socket with 1009"),
    S_STR("DOCS_UI_DIR", "", docs_ui_dir, 0, 4095, PROD, G_PROD, 0,
          "Folder of the Swagger UI files (npm's swagger-ui-dist) that GET /docs serves; empty: "
          "next to the binary (../npm/node_modules/swagger-ui-dist), then "
          "/usr/share/relayq/swagger-ui"),
    S_STR("API_KEYS_FILE", "", api_keys_file, 0, 4095, PROD, G_PROD, 0,
          "File of API keys, one `key-id:secret[:scopes]` or `key-id:sha256:<hex>[:scopes]` "
          "per line (# comments); when keys are set, every endpoint but /health* and /metrics "
          "needs `Authorization: Bearer <secret>`; re-read on SIGHUP"),
    S_STR("API_KEYS", "", api_keys, 0, 65535, PROD, G_PROD, RQ_CFG_SECRET,
          "API keys as comma-separated entries in the API_KEYS_FILE format, added to the "
          "file's; scopes are produce, batch, dlq, messages, *, and per queue "
          "produce:<pattern>, consume:<pattern>, admin:<pattern>, and per topic "
          "publish:<pattern>, subscribe:<pattern> ('*' globs; default: all)"),
    S_DBL("RATE_LIMIT_RPS", "0", rate_limit_rps, 0, 1000000, PROD, G_PROD,
          "Requests per second allowed per API key (per client address without keys), as a "
          "token bucket; beyond, 429 with Retry-After; 0 turns rate limiting off"),
    S_INT("RATE_LIMIT_BURST", "0", rate_limit_burst, 0, 1000000, PROD, G_PROD,
          "Requests a client may send at once above the rate (the bucket size); 0 means "
          "RATE_LIMIT_RPS rounded up (at least 1)"),
    S_INT("RATE_LIMIT_MAX_CLIENTS", "10000", rate_limit_max_clients, 16, 10000000, PROD, G_PROD,
          "Rate-limit buckets kept in memory (about 200 bytes each); the least recently seen "
          "client is forgotten beyond"),
    S_DBL("QUEUE_RATE_LIMIT_RPS", "0", queue_rate_limit_rps, 0, 1000000, PROD, G_PROD,
          "Requests per second allowed per queue on the queue routes (but acks, nacks and "
          "lease extensions) and /produce, /batch-produce for the default queue, shared by "
          "every client, as a token bucket after the per-key one; beyond, 429 with "
          "Retry-After; 0 turns it off"),
    S_INT("QUEUE_RATE_LIMIT_BURST", "0", queue_rate_limit_burst, 0, 1000000, PROD, G_PROD,
          "Bucket size of the per-queue rate limit; 0 means QUEUE_RATE_LIMIT_RPS rounded up "
          "(at least 1); at most RATE_LIMIT_MAX_CLIENTS queue buckets are kept"),
    S_STR("JWKS_FILE", "", jwks_file, 0, 4095, PROD, G_PROD, 0,
          "JWKS file (RSA and EC P-256 public keys) against which OAuth2 bearer tokens (JWTs "
          "signed RS256 or ES256) are verified; needs JWT_ISSUER and JWT_AUDIENCE; turns "
          "authentication on even without API keys; re-read on SIGHUP"),
    S_STR("JWT_ISSUER", "", jwt_issuer, 0, 1024, PROD, G_PROD, 0,
          "The iss a token must carry (exact match); required with JWKS_FILE"),
    S_STR("JWT_AUDIENCE", "", jwt_audience, 0, 1024, PROD, G_PROD, 0,
          "The audience a token's aud (a string or an array) must hold; required with "
          "JWKS_FILE"),
    S_STR("JWT_SCOPE_CLAIM", "scope", jwt_scope_claim, 1, 64, PROD, G_PROD, 0,
          "Token claim holding the permissions, as API key scopes (produce, "
          "produce:orders.*, consume:<pattern>, admin:<pattern>, publish:<pattern>, "
          "subscribe:<pattern>, *): a space-separated string "
          "(scope) or an array of strings (roles); unknown pieces are ignored"),
    S_INT("JWT_LEEWAY_S", "60", jwt_leeway_s, 0, 3600, PROD, G_PROD,
          "Clock skew allowed on a token's exp, nbf and iat, in seconds"),
    S_INT("MAX_JSON_DEPTH", "64", max_json_depth, 1, 1000, PROD, G_PROD,
          "Deepest nesting of arrays and objects accepted in a request body; deeper gets 400"),
    S_STR("INPUT_FILE", "", input_file, 0, 4095, PROD, G_PROD, 0,
          "File the producer tails: every line appended to it is published to the request "
          "queue, in order, at least once (rotation by rename, copytruncate and delete plus "
          "recreate are followed); empty: no tailing"),
    S_STR("TAIL_STATE_DIR", "tail-state", tail_state_dir, 1, 4000, PROD, G_PROD, 0,
          "Folder (created if missing) where the tail position is saved, advanced only past "
          "lines the broker confirmed; relative paths start at the working directory; keep it "
          "across restarts"),
    S_ENUM("TAIL_FROM", "head", tail_from, tail_from_id, tail_froms, PROD, G_PROD,
           "Where tailing starts in a file that exists at startup when no position is saved: "
           "head (its first line) or end (only lines appended later); files appearing later "
           "and saved positions always start at their head or resume exactly"),
    S_I64("TAIL_MAX_LINE_BYTES", "1048576", tail_max_line_bytes, 1, 67108864, PROD, G_PROD,
          "Longest tailed line in bytes; a longer line follows TAIL_OVERLONG and is counted in "
          "producer_tail_overlong_lines_total"),
    S_ENUM("TAIL_OVERLONG", "split", tail_overlong, tail_overlong_id, tail_overlongs, PROD, G_PROD,
           "What happens to a line longer than TAIL_MAX_LINE_BYTES: split sends it as messages "
           "of TAIL_MAX_LINE_BYTES bytes (the last one may be shorter), skip drops it"),
    S_INT("TAIL_POLL_MS", "250", tail_poll_ms, 10, 60000, PROD, G_PROD,
          "Interval of the stat polling that backs up inotify (the only watch when inotify is "
          "unavailable), in milliseconds"),
    S_INT("TAIL_ROTATE_WAIT_MS", "1000", tail_rotate_wait_ms, 0, 600000, PROD, G_PROD,
          "After a rotation (another file at the path) or deletion, how long the old file is "
          "still read for late writes before the new file is followed, in milliseconds"),
    S_INT("TAIL_BATCH_LINES", "500", tail_batch_lines, 1, 100000, PROD, G_PROD,
          "Most tailed lines handed to the publisher in one job"),
    S_INT("TAIL_MAX_INFLIGHT_JOBS", "16", tail_max_inflight_jobs, 1, 1024, PROD, G_PROD,
          "Most tail jobs waiting for the broker's confirms at once; reading pauses beyond"),
    S_INT("TAIL_CHUNK_BYTES", "8192", tail_chunk_bytes, 1, 16777216, PROD, G_PROD,
          "Most bytes of consecutive tailed lines carried by one message (a longer line, or "
          "piece of one, travels alone); the consumer holds up to PREFETCH_COUNT of them"),

    S_STR("CONSUMER_BIND", "127.0.0.1", consumer_bind, 1, 255, CONS, G_CONS, 0,
          "Address of the consumer's metrics and health HTTP server"),
    S_INT("CONSUMER_PORT", "8000", consumer_port, 0, 65535, CONS, G_CONS,
          "TCP port of the consumer's metrics and health HTTP server; 0 runs no HTTP server"),
    S_STR("OUTPUT_FILE", "", output_file, 0, 4095, CONS, G_CONS, 0,
          "File the consumer appends each processed payload to, one per line; empty: none"),
    S_INT("BATCH_WAIT_MS", "0", batch_wait_ms, 0, 1000, CONS, G_CONS,
          "Group-commit window: how long the consumer waits, after the first message of a "
          "group finished, for more to finish before one write, fsync and ack, in "
          "milliseconds; 0 commits what has finished at once"),
    S_INT("DEDUP_ID_WINDOW", "50000", dedup_id_window, 1, 10000000, CONS, G_CONS,
          "Message ids the exactly-once output writer remembers (about 24 bytes each): a "
          "redelivery of an older id would be written again"),
    S_STR("HANDLER", "echo", handler, 1, 4095, CONS, G_CONS, 0,
          "What processing a message means: echo replies \"Consumer processed: \" and the payload "
          "after its processing_time; an http:// or https:// URL POSTs the payload there (2xx: "
          "the body is the reply, 4xx: to the DLQ, 5xx or no answer: retried); exec:COMMAND "
          "[ARGS] runs the command per message (words split as a shell would, with ' \" and \\ "
          "quoting, but no shell: nothing of the message is in the command line) with the "
          "payload on stdin and the metadata in RELAYQ_* variables (exit 0: stdout is the "
          "reply, else retried)"),
    S_INT("HANDLER_TIMEOUT_MS", "30000", handler_timeout_ms, 1, 3600000, CONS, G_CONS,
          "A webhook request or command running longer than this fails and is retried (a "
          "command is killed), in milliseconds"),
    S_INT("HANDLER_CONCURRENCY", "0", handler_concurrency, 0, 65535, CONS, G_CONS,
          "Most messages a consumer processes at once (webhook requests, commands, echo "
          "timers); 0: PREFETCH_COUNT"),
};

#define N_SETTINGS (sizeof settings / sizeof settings[0])

static const char *const group_titles[RQ_CFG_GROUP_COUNT] = {
    [RQ_CFG_GROUP_GENERAL] = "General",
    [RQ_CFG_GROUP_RABBITMQ] = "RabbitMQ",
    [RQ_CFG_GROUP_PRODUCER] = "Producer",
    [RQ_CFG_GROUP_CONSUMER] = "Consumer",
};

static const char *const bool_true[] = {"true", "1", "yes", NULL};
static const char *const bool_false[] = {"false", "0", "no", NULL};

const rq_cfg_desc_t *rq_config_table(size_t *n)
{
    if (n)
        *n = N_SETTINGS;
    return settings;
}

/* Fills err (if any) with printf-formatted text (rq_verrf). Always returns -1. */
__attribute__((format(printf, 2, 3))) static int fail(rq_config_error_t *err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rq_verrf(err ? err->text : NULL, sizeof err->text, fmt, ap);
    va_end(ap);
    return -1;
}

static const rq_cfg_desc_t *find_setting(const char *name)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (strcmp(settings[i].name, name) == 0)
            return &settings[i];
    }
    return NULL;
}

/* Appends the printf-formatted text to buf at *pos, never overflowing (len > 0). */
__attribute__((format(printf, 4, 5))) static void append(char *buf, size_t len, size_t *pos,
                                                         const char *fmt, ...)
{
    va_list ap;
    int n;

    if (*pos >= len - 1)
        return;
    va_start(ap, fmt);
    n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    *pos = (size_t)n >= len - *pos ? len - 1 : *pos + (size_t)n;
}

void rq_cfg_describe_range(const rq_cfg_desc_t *d, char *buf, size_t len)
{
    size_t pos = 0;

    if (len == 0)
        return;
    buf[0] = '\0';
    switch (d->type) {
    case RQ_CFG_STRING:
        append(buf, len, &pos, "%" PRId64 "..%" PRId64 " characters", d->min, d->max);
        break;
    case RQ_CFG_INT:
    case RQ_CFG_INT64:
        append(buf, len, &pos, "%" PRId64 "..%" PRId64, d->min, d->max);
        break;
    case RQ_CFG_DOUBLE:
        append(buf, len, &pos, "%g..%g", d->dmin, d->dmax);
        break;
    case RQ_CFG_BOOL:
        append(buf, len, &pos, "true|false|1|0|yes|no");
        break;
    case RQ_CFG_ENUM:
        for (size_t i = 0; d->choices && d->choices[i]; i++)
            append(buf, len, &pos, "%s%s", i ? "|" : "", d->choices[i]);
        break;
    }
}

/* Writes `"value"` with control and non-ASCII bytes escaped and long values cut, or
 * "the value" for a secret, into buf: error texts must be printable and never leak. */
static void show_value(const rq_cfg_desc_t *d, const char *value, char *buf, size_t len)
{
    size_t pos = 0, i;
    const size_t max_shown = 64;

    buf[0] = '\0';
    if (d->flags & RQ_CFG_SECRET) {
        append(buf, len, &pos, "the value");
        return;
    }
    append(buf, len, &pos, "\"");
    for (i = 0; value[i] && i < max_shown; i++) {
        unsigned char ch = (unsigned char)value[i];
        if (ch == '"' || ch == '\\')
            append(buf, len, &pos, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            append(buf, len, &pos, "\\x%02x", ch);
        else
            append(buf, len, &pos, "%c", ch);
    }
    append(buf, len, &pos, value[i] ? "...\"" : "\"");
}

/* Parses a whole decimal integer: optional sign, digits, nothing else (no spaces, no
 * "12abc", no empty text). Returns 0, -1 (not an integer) or -2 (does not fit int64). */
static int parse_int64(const char *s, int64_t *out)
{
    const char *p = s;
    char *end;
    long long v;

    if (*p == '+' || *p == '-')
        p++;
    if (*p == '\0')
        return -1;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return -2;
    if (*end != '\0')
        return -1;
    *out = (int64_t)v;
    return 0;
}

/* Parses a finite decimal number ("60", "0.5", "1e2"); rejects inf, nan, hex and garbage. */
static int parse_double(const char *s, double *out)
{
    char *end;
    double v;

    if (*s == '\0' || strspn(s, "0123456789+-.eE") != strlen(s))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (end == s || *end != '\0')
        return -1;
    if (errno == ERANGE || !isfinite(v))
        return -2;
    *out = v;
    return 0;
}

static const char *match_choice(const char *const *choices, const char *value)
{
    for (size_t i = 0; choices && choices[i]; i++) {
        if (strcasecmp(choices[i], value) == 0)
            return choices[i];
    }
    return NULL;
}

/* Replaces the string field at slot with a copy of value. */
static int store_string(const rq_cfg_desc_t *d, char **slot, const char *value,
                        rq_config_error_t *err)
{
    char *copy = strdup(value);

    if (!copy)
        return fail(err, "%s: out of memory", d->name);
    free(*slot);
    *slot = copy;
    return 0;
}

/* Stores the canonical choice of an RQ_CFG_ENUM: its text (a copy) and its index in
 * d->choices at base + d->enum_offset, both or (out of memory) neither. */
static int store_enum(const rq_cfg_desc_t *d, void *base, const char *choice,
                      rq_config_error_t *err)
{
    int index = 0;

    while (d->choices[index] && strcmp(d->choices[index], choice) != 0)
        index++;
    assert(d->choices[index] != NULL); /* choice is one of d->choices, canonical spelling */
    if (store_string(d, (char **)(void *)((char *)base + d->offset), choice, err) != 0)
        return -1;
    if (d->enum_offset != 0) /* 0: no enum field (offset 0 of rq_config_t is a string) */
        *(int *)(void *)((char *)base + d->enum_offset) = index;
    return 0;
}

int rq_cfg_parse(const rq_cfg_desc_t *d, void *base, const char *value, rq_config_error_t *err)
{
    char *field = (char *)base + d->offset;
    char range[256], shown[300];
    int64_t iv = 0;
    double dv = 0;
    int rc;

    rq_cfg_describe_range(d, range, sizeof range);
    show_value(d, value, shown, sizeof shown);
    switch (d->type) {
    case RQ_CFG_STRING: {
        size_t len = strlen(value);
        if (len < (uint64_t)d->min || len > (uint64_t)d->max)
            return fail(err, "%s: %s must be %s long", d->name, shown, range);
        return store_string(d, (char **)(void *)field, value, err);
    }
    case RQ_CFG_INT:
    case RQ_CFG_INT64:
        rc = parse_int64(value, &iv);
        if (rc == -1)
            return fail(err, "%s: %s is not an integer (allowed: %s)", d->name, shown, range);
        if (rc == -2 || iv < d->min || iv > d->max)
            return fail(err, "%s: %s is out of range %s", d->name, shown, range);
        if (d->type == RQ_CFG_INT)
            *(int *)(void *)field = (int)iv;
        else
            *(int64_t *)(void *)field = iv;
        return 0;
    case RQ_CFG_DOUBLE:
        rc = parse_double(value, &dv);
        if (rc == -1)
            return fail(err, "%s: %s is not a number (allowed: %s)", d->name, shown, range);
        if (rc == -2 || dv < d->dmin || dv > d->dmax)
            return fail(err, "%s: %s is out of range %s", d->name, shown, range);
        *(double *)(void *)field = dv;
        return 0;
    case RQ_CFG_BOOL:
        if (match_choice(bool_true, value))
            *(bool *)(void *)field = true;
        else if (match_choice(bool_false, value))
            *(bool *)(void *)field = false;
        else
            return fail(err, "%s: %s is not a boolean (allowed: %s)", d->name, shown, range);
        return 0;
    case RQ_CFG_ENUM: {
        const char *choice = match_choice(d->choices, value);
        rq_log_level_t level;
        /* LOG_LEVEL also takes the other names rq_log_level_parse knows (WARNING, CRITICAL). */
        if (!choice && d->choices == log_levels && rq_log_level_parse(value, &level) == 0)
            choice = rq_log_level_name(level);
        if (!choice && d->choices == log_levels)
            return fail(err,
                        "%s: %s is not one of %s (any case; also trace, notice, warning, err, "
                        "crit, critical, fatal)",
                        d->name, shown, range);
        if (!choice)
            return fail(err, "%s: %s is not one of %s", d->name, shown, range);
        return store_enum(d, base, choice, err);
    }
    }
    return fail(err, "%s: bad setting type", d->name);
}

void rq_config_free(rq_config_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const rq_cfg_desc_t *d = &settings[i];
        if (d->type == RQ_CFG_STRING || d->type == RQ_CFG_ENUM) {
            char **slot = (char **)(void *)((char *)c + d->offset);
            free(*slot);
            *slot = NULL;
        }
    }
    memset(c, 0, sizeof *c);
}

int rq_config_defaults(rq_config_t *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (rq_cfg_parse(&settings[i], c, settings[i].def, NULL) != 0)
            goto err;
    }
    return 0;
err:
    rq_config_free(c);
    return -1;
}

int rq_config_set(rq_config_t *c, const char *name, const char *value, rq_config_error_t *err)
{
    const rq_cfg_desc_t *d = find_setting(name);

    if (!d)
        return fail(err, "unknown setting %s", name);
    return rq_cfg_parse(d, c, value, err);
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool is_space(char ch)
{
    return is_blank(ch) || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f';
}

static bool is_name_start(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_';
}

static bool is_name_char(char ch)
{
    return is_name_start(ch) || (ch >= '0' && ch <= '9');
}

/* Unescapes a double-quoted value in place; p points just after the opening quote.
 * Returns the position after the closing quote, or NULL when the quote is not closed. */
static char *unquote_double(char *p)
{
    char *w = p;

    for (;;) {
        if (*p == '\0')
            return NULL;
        if (*p == '"')
            break;
        if (*p == '\\') {
            char next = p[1];
            if (next == '\0')
                return NULL;
            if (next == 'n' || next == '"' || next == '\\') {
                *w++ = next == 'n' ? '\n' : next;
                p += 2;
                continue;
            }
            *w++ = *p++; /* an unknown escape stays as written */
        }
        *w++ = *p++;
    }
    *w = '\0'; /* w <= p: the closing quote is overwritten at worst */
    return p + 1;
}

int rq_env_parse_line(char *line, char **name, char **value, rq_config_error_t *err)
{
    char *p = line, *name_start, *name_end, *val, *open;

    *name = NULL;
    *value = NULL;
    while (is_space(*p))
        p++;
    if (*p == '\0' || *p == '#')
        return 0;
    if (strncmp(p, "export", 6) == 0 && is_blank(p[6])) {
        p += 6;
        while (is_blank(*p))
            p++;
    }
    if (!is_name_start(*p))
        return fail(err, "column %d: expected a variable name ([A-Za-z_][A-Za-z0-9_]*)",
                    (int)(p - line) + 1);
    name_start = p;
    while (is_name_char(*p))
        p++;
    name_end = p;
    while (is_blank(*p))
        p++;
    if (*p != '=') {
        int shown = name_end - name_start > 64 ? 64 : (int)(name_end - name_start);
        if (*p == '\0' || is_space(*p))
            return fail(err, "missing '=' after %.*s", shown, name_start);
        return fail(err, "column %d: invalid character in variable name %.*s", (int)(p - line) + 1,
                    shown, name_start);
    }
    p++;
    *name_end = '\0'; /* may overwrite the '=' itself, which has been consumed */
    while (is_blank(*p))
        p++;

    if (*p == '\'' || *p == '"') {
        open = p;
        val = p + 1;
        if (*p == '\'') {
            char *close = strchr(val, '\'');
            if (!close)
                return fail(err, "column %d: unterminated single quote", (int)(open - line) + 1);
            *close = '\0';
            p = close + 1;
        } else {
            p = unquote_double(val);
            if (!p)
                return fail(err, "column %d: unterminated double quote", (int)(open - line) + 1);
        }
        while (is_space(*p))
            p++;
        if (*p != '\0' && *p != '#')
            return fail(err, "column %d: unexpected text after the closing quote",
                        (int)(p - line) + 1);
    } else {
        /* Bare: up to a '#' that follows whitespace (a comment), minus trailing spaces. */
        char *end;
        val = p;
        for (end = p; *end; end++) {
            if (*end == '#' && end > line && is_space(end[-1]))
                break;
        }
        while (end > val && is_space(end[-1]))
            end--;
        *end = '\0';
    }
    *name = name_start;
    *value = val;
    return 0;
}

/* Applies the settings of `services` found in the `.env` file at path. Names of the other
 * service are accepted and skipped (one file serves both); unknown names are an error. */
static int load_env_file(rq_config_t *c, unsigned services, const char *path,
                         rq_config_error_t *err)
{
    int rc = -1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned lineno = 0;
    rq_config_error_t lerr;
    char ebuf[RQ_STRERROR_LEN];
    FILE *f = fopen(path, "r");

    if (!f)
        return fail(err, "%s: %s", path, rq_strerror(errno, ebuf, sizeof ebuf));
    for (;;) {
        char *name, *value;
        const rq_cfg_desc_t *d;

        errno = 0;
        n = getline(&line, &cap, f);
        if (n < 0)
            break;
        lineno++;
        if (strlen(line) != (size_t)n) {
            fail(err, "%s:%u: NUL byte in line", path, lineno);
            goto out;
        }
        if (rq_env_parse_line(line, &name, &value, &lerr) != 0) {
            fail(err, "%s:%u: %s", path, lineno, lerr.text);
            goto out;
        }
        if (!name)
            continue;
        d = find_setting(name);
        if (!d) {
            fail(err, "%s:%u: unknown variable %s", path, lineno, name);
            goto out;
        }
        if (!(d->services & services))
            continue;
        if (rq_cfg_parse(d, c, value, &lerr) != 0) {
            fail(err, "%s:%u: %s", path, lineno, lerr.text);
            goto out;
        }
    }
    if (ferror(f) || !feof(f)) { /* not at the end: getline() failed (ENOMEM) */
        fail(err, "%s: read error: %s", path, rq_strerror(errno ? errno : EIO, ebuf, sizeof ebuf));
        goto out;
    }
    rc = 0;
out:
    free(line);
    fclose(f);
    return rc;
}

/* RABBITMQ_ADDRESSES must parse (a mistake there is a start-up error, not a reconnect loop). */
static int check_addresses(const rq_config_t *c, rq_config_error_t *err)
{
    rq_amqp_node_t nodes[RQ_AMQP_MAX_NODES];

    if (rq_amqp_nodes_of(&c->rabbitmq, nodes, err->text, sizeof(err->text)) < 0)
        return -1;
    return 0;
}

int rq_config_load(rq_config_t *c, unsigned services, const char *env_file, rq_config_error_t *err)
{
    if (rq_config_defaults(c) != 0) {
        fail(err, "out of memory");
        goto err;
    }
    if (env_file && load_env_file(c, services, env_file, err) != 0)
        goto err;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const rq_cfg_desc_t *d = &settings[i];
        const char *v;

        if (!(d->services & services))
            continue;
        v = getenv(d->name);
        if (v && rq_cfg_parse(d, c, v, err) != 0)
            goto err;
    }
    if (check_addresses(c, err) != 0)
        goto err;
    return 0;
err:
    rq_config_free(c);
    return -1;
}

/* Writes v as a `.env` value that rq_env_parse_line() reads back unchanged: bare when
 * safe, else single-quoted, else double-quoted with escapes. */
static void format_env_value(const char *v, char *buf, size_t len)
{
    size_t pos = 0;
    const char *safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:@%+,-";

    buf[0] = '\0';
    if (strspn(v, safe) == strlen(v)) {
        append(buf, len, &pos, "%s", v);
    } else if (!strchr(v, '\'') && !strchr(v, '\n')) {
        append(buf, len, &pos, "'%s'", v);
    } else {
        append(buf, len, &pos, "\"");
        for (; *v; v++) {
            if (*v == '\n')
                append(buf, len, &pos, "\\n");
            else if (*v == '"' || *v == '\\')
                append(buf, len, &pos, "\\%c", *v);
            else
                append(buf, len, &pos, "%c", *v);
        }
        append(buf, len, &pos, "\"");
    }
}

static unsigned group_services(rq_cfg_group_t g)
{
    unsigned svc = 0;

    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (settings[i].group == g)
            svc |= settings[i].services;
    }
    return svc;
}

static const char *services_text(unsigned svc)
{
    if ((svc & RQ_SVC_ALL) == RQ_SVC_ALL)
        return "producer and consumer";
    if (svc & RQ_SVC_PRODUCER)
        return "producer";
    if (svc & RQ_SVC_CONSUMER)
        return "consumer";
    return "no service";
}

/* Prints text word-wrapped to `width` columns, every line starting with `prefix`. */
static void print_wrapped(FILE *out, const char *prefix, const char *text, size_t width)
{
    size_t col = 0;
    bool fresh = true;

    while (*text == ' ')
        text++;
    while (*text) {
        size_t wlen = strcspn(text, " ");
        if (!fresh && col + 1 + wlen > width) {
            fputc('\n', out);
            fresh = true;
        }
        if (fresh) {
            fputs(prefix, out);
            col = strlen(prefix);
            fresh = false;
        } else {
            fputc(' ', out);
            col++;
        }
        fwrite(text, 1, wlen, out);
        col += wlen;
        text += wlen;
        while (*text == ' ')
            text++;
    }
    fputc('\n', out);
}

/* Printed after the settings by rq_config_print_help (rq_config_set_help_epilog). */
static const char *help_epilog;

void rq_config_print_help(FILE *out, const char *prog, unsigned services)
{
    char range[256], def[300], text[600];

    if (!prog)
        prog = "relayq";
    fprintf(out,
            "Usage: %s [OPTIONS]\n"
            "\n"
            "Options:\n"
            "  -h, --help               Print this help and exit.\n"
            "  -V, --version            Print the version and exit.\n"
            "      --env-file PATH      Read settings from the .env file PATH (default: the\n"
            "                           file named by the ENV_FILE environment variable).\n"
            "      --print-env-example  Print a commented .env file with every setting and\n"
            "                           exit.\n"
            "\n"
            "Settings come from environment variables, which override the env file, which\n"
            "overrides the defaults shown. Unknown names in the env file are an error.\n",
            prog);
    for (int g = 0; g < RQ_CFG_GROUP_COUNT; g++) {
        bool header = false;
        for (size_t i = 0; i < N_SETTINGS; i++) {
            const rq_cfg_desc_t *d = &settings[i];
            if ((int)d->group != g || !(d->services & services))
                continue;
            if (!header) {
                fprintf(out, "\n%s:\n", group_titles[g]);
                header = true;
            }
            rq_cfg_describe_range(d, range, sizeof range);
            format_env_value(d->def, def, sizeof def);
            snprintf(text, sizeof text, "%s (%s)", d->desc, range);
            fprintf(out, "  %s=%s\n", d->name, def);
            print_wrapped(out, "      ", text, 79);
        }
    }
    if (help_epilog != NULL)
        fprintf(out, "\n%s", help_epilog);
}

void rq_config_set_help_epilog(const char *text)
{
    help_epilog = text;
}

void rq_config_print_env_example(FILE *out)
{
    char range[256], def[300], text[600];

    fprintf(out,
            "# relayq configuration: copy to .env and change what you need.\n"
            "#\n"
            "# Generated from the settings table in common/config.c by `relayq_env_example`\n"
            "# (or `producer --print-env-example`); regenerate it rather than editing it.\n"
            "#\n"
            "# Precedence, lowest first: the defaults shown here, this file (given with\n"
            "# --env-file PATH or named by the ENV_FILE environment variable), then the\n"
            "# process environment. An unknown name in this file is an error. Values may be\n"
            "# bare (a ' #' starts a comment), 'single-quoted' (verbatim) or \"double-quoted\"\n"
            "# (with \\n \\\" \\\\ escapes). Every line below holds the default.\n");
    for (int g = 0; g < RQ_CFG_GROUP_COUNT; g++) {
        fprintf(out, "\n# ---- %s (read by the %s) ----\n", group_titles[g],
                services_text(group_services((rq_cfg_group_t)g)));
        for (size_t i = 0; i < N_SETTINGS; i++) {
            const rq_cfg_desc_t *d = &settings[i];
            if ((int)d->group != g)
                continue;
            rq_cfg_describe_range(d, range, sizeof range);
            format_env_value(d->def, def, sizeof def);
            snprintf(text, sizeof text, "%s (%s)", d->desc, range);
            fputc('\n', out);
            print_wrapped(out, "# ", text, 88);
            fprintf(out, "%s=%s\n", d->name, def);
        }
    }
}

int rq_config_from_args(rq_config_t *c, int argc, char **argv, const char *prog, unsigned services)
{
    const char *env_file = NULL;
    bool help = false, version = false, example = false;
    rq_config_error_t err;

    memset(c, 0, sizeof *c);
    if (!prog)
        prog = argc > 0 && argv[0] ? argv[0] : "relayq";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            help = true;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            version = true;
        } else if (strcmp(a, "--print-env-example") == 0) {
            example = true;
        } else if (strcmp(a, "--env-file") == 0 || strncmp(a, "--env-file=", 11) == 0) {
            if (a[10] == '=') {
                env_file = a + 11;
            } else if (i + 1 < argc) {
                env_file = argv[++i];
            } else {
                fprintf(stderr, "%s: option '--env-file' needs a PATH\n", prog);
                goto usage;
            }
            if (*env_file == '\0') {
                fprintf(stderr, "%s: option '--env-file' needs a non-empty PATH\n", prog);
                goto usage;
            }
        } else if (a[0] == '-') {
            fprintf(stderr, "%s: unknown option '%s'\n", prog, a);
            goto usage;
        } else {
            fprintf(stderr, "%s: unexpected argument '%s'\n", prog, a);
            goto usage;
        }
    }
    if (help) {
        rq_config_print_help(stdout, prog, services);
        return 1;
    }
    if (version) {
        printf("%s relayq %s\n", prog, RQ_VERSION);
        return 1;
    }
    if (example) {
        rq_config_print_env_example(stdout);
        return 1;
    }
    if (!env_file) {
        const char *e = getenv("ENV_FILE");
        if (e && *e)
            env_file = e;
    }
    if (rq_config_load(c, services, env_file, &err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err.text);
        return -1;
    }
    return 0;
usage:
    fprintf(stderr, "Try '%s --help' for more information.\n", prog);
    return -1;
}
