/* config.h - the configuration of both services, driven by one table.
 *
 * One table (config.c) lists every setting: environment variable, type, default, allowed
 * range or choices, the field it fills, which service reads it, and a description. The same
 * table parses the environment and `.env` files, validates, prints `--help`, and prints the
 * `.env.example` documentation (`--print-env-example`), so they never disagree.
 *
 * Precedence, lowest first: table defaults, the `--env-file` (or ENV_FILE) file, the process
 * environment. Unknown variables in a `.env` file are an error (a typo must not pass silently).
 *
 * Strings in the structs are heap copies owned by the struct; rq_config_free() releases them.
 */
#ifndef RQ_CONFIG_H
#define RQ_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

#define RQ_VERSION "0.1.0"

/* Which service reads a setting (a bit mask). */
enum {
    RQ_SVC_PRODUCER = 1u << 0,
    RQ_SVC_CONSUMER = 1u << 1,
    RQ_SVC_ALL = RQ_SVC_PRODUCER | RQ_SVC_CONSUMER,
};

/* The enum settings (RQ_CFG_ENUM) are parsed once, at load: each fills its canonical text
 * (for logs and broker arguments) and the index of that choice in the table's list, which is
 * the value of these enums. Use sites compare the enum, never the text. */
typedef enum rq_queue_type {
    RQ_QUEUE_CLASSIC = 0, /* "classic" */
    RQ_QUEUE_QUORUM = 1,  /* "quorum" */
} rq_queue_type_t;

typedef enum rq_address_order {
    RQ_ADDRESS_IN_ORDER = 0, /* "in-order" */
    RQ_ADDRESS_SHUFFLE = 1,  /* "shuffle" */
} rq_address_order_t;

typedef enum rq_tail_from {
    RQ_TAIL_FROM_HEAD = 0, /* "head" */
    RQ_TAIL_FROM_END = 1,  /* "end" */
} rq_tail_from_t;

typedef enum rq_tail_overlong {
    RQ_TAIL_OVERLONG_SPLIT = 0, /* "split" */
    RQ_TAIL_OVERLONG_SKIP = 1,  /* "skip" */
} rq_tail_overlong_t;

/* The broker connection and topology, shared by both services. */
typedef struct RabbitMQConfig {
    char *host;          /* RABBITMQ_HOST, default "localhost" */
    int port;            /* RABBITMQ_PORT, 1..65535, default 5672 */
    char *addresses;     /* RABBITMQ_ADDRESSES: "host[:port],..." (a cluster's nodes), default
                            "" (RABBITMQ_HOST:RABBITMQ_PORT); checked by rq_config_load() */
    char *address_order; /* RABBITMQ_ADDRESS_ORDER, "in-order" | "shuffle", default
                            "in-order" */
    rq_address_order_t address_order_id; /* RABBITMQ_ADDRESS_ORDER as an enum */
    char *user;                          /* RABBITMQ_USER, default "guest" */
    char *password;                      /* RABBITMQ_PASS, default "guest"; never logged */
    char *vhost;                         /* RABBITMQ_VHOST, default "/" */
    int heartbeat;          /* RABBITMQ_HEARTBEAT seconds, 0..3600 (0 disables), default 30 */
    int connect_timeout_ms; /* RABBITMQ_CONNECT_TIMEOUT_MS, 100..120000, default 5000 */
    char *request_queue;    /* REQUEST_QUEUE, default "request_queue" */
    char *queue_type;       /* QUEUE_TYPE, "classic" | "quorum", default "quorum" */
    rq_queue_type_t queue_type_id; /* QUEUE_TYPE as an enum (set with queue_type) */
    int prefetch;                  /* PREFETCH_COUNT, 1..65535, default 100 */
    int max_retries;   /* MAX_RETRIES, 0..20, default 5: delay queues <queue>.retry.1..N */
    int retry_base_ms; /* RETRY_BASE_MS, 10..3600000, default 1000: delay of retry 1 */
    bool tls;          /* RABBITMQ_TLS: AMQPS (TLS) instead of plain TCP, default false */
    char *tls_ca;      /* RABBITMQ_TLS_CA: CA bundle (PEM) to verify the broker, default "" (system
                          bundle) */
    char *tls_cert;    /* RABBITMQ_TLS_CERT: client certificate chain (PEM), default "" (none) */
    char *tls_key;     /* RABBITMQ_TLS_KEY: client private key (PEM, unencrypted), default "" */
    bool tls_verify; /* RABBITMQ_TLS_VERIFY: verify the broker's certificate and host name, default
                        true */
    char *status_stream;      /* STATUS_STREAM: lifecycle events (status_log.h), default
                                 "relayq.status", "" none */
    int64_t status_max_age_s; /* STATUS_MAX_AGE_S, 60..31536000, default 86400 */
    int64_t status_max_bytes; /* STATUS_MAX_BYTES, 4 MiB..1 TiB, default 1 GiB */
    int status_reply_max;     /* STATUS_REPLY_MAX, 0..1048576, default 4096 */
    char *management_url;     /* RABBITMQ_MANAGEMENT_URL (producer): "" derives
                                 http://RABBITMQ_HOST:15672, "off" disables */
} RabbitMQConfig;

typedef struct rq_config {
    RabbitMQConfig rabbitmq;
    char *log_level; /* LOG_LEVEL: debug|info|warn|error (canonical form), default info */
    rq_log_level_t log_level_id; /* LOG_LEVEL as an enum (set with log_level) */

    /* HTTP servers of both services (limits against hostile clients, TLS) */
    int http_connection_timeout_s;   /* HTTP_CONNECTION_TIMEOUT_S: idle connection timeout, 0..86400
                                        (0 = none), default 30 */
    int http_max_connections;        /* HTTP_MAX_CONNECTIONS: open connections in total, 1..1000000,
                                        default 8192 */
    int http_max_connections_per_ip; /* HTTP_MAX_CONNECTIONS_PER_IP: 0..1000000 (0 = no limit),
                                        default 0 */
    int max_header_bytes; /* MAX_HEADER_BYTES: per-connection memory for request line + headers,
                             4096..1048576, default 32768 */
    char *
        http_tls_cert; /* HTTP_TLS_CERT: PEM certificate chain for HTTPS, default "" (plain HTTP) */
    char *http_tls_key; /* HTTP_TLS_KEY: PEM private key for HTTPS, default "" */

    /* producer */
    char *producer_bind;        /* PRODUCER_BIND, default 127.0.0.1 */
    int producer_port;          /* PRODUCER_PORT, 1..65535, default 5000 */
    int64_t max_body_bytes;     /* MAX_BODY_BYTES, 1 KiB..64 MiB, default 1 MiB */
    int max_batch_size;         /* MAX_BATCH_SIZE, 1..100000, default 1000 */
    double max_processing_time; /* MAX_PROCESSING_TIME seconds, 0..3600, default 60 */
    int publish_timeout_ms; /* PUBLISH_TIMEOUT_MS: deadline for a confirm, 100..120000, default 5000
                             */
    int confirm_stall_ms;   /* CONFIRM_STALL_MS: no confirm for this long with publishes in
                               flight drops the connection (publisher.c), 0..600000 (0: off),
                               default 3000 */
    int reply_timeout_ms;   /* REPLY_TIMEOUT_MS: deadline for a reply (wait), 100..600000, default
                               30000 */
    int64_t status_replay_s;   /* STATUS_REPLAY_S: 0 from the stream's start, else that far back */
    int64_t idempotency_ttl_s; /* IDEMPOTENCY_TTL_S, 1..31536000, default 86400 */
    int idempotency_keys_max;  /* IDEMPOTENCY_KEYS_MAX, 0..100000000, default 1000000 */
    int message_store_size;    /* MESSAGE_STORE_SIZE: recent messages kept for GET /messages/{id},
                                  0..10000000, default 10000 */
    int max_pending; /* MAX_PENDING: messages held by the publisher before 503, 1..10000000, default
                        100000 */
    int http_threads;          /* HTTP_THREADS, 1..64, default 2 */
    int lease_max_outstanding; /* LEASE_MAX_OUTSTANDING: leases held, 1..1000000, default 10000 */
    int64_t lease_max_bytes;   /* LEASE_MAX_BYTES: leased + buffered bytes, 1 MiB..16 GiB, default
                                  64 MiB */
    int lease_max_waiters;     /* LEASE_MAX_WAITERS: long-polls, 1..100000, default 1000 */
    int lease_idle_ms; /* LEASE_IDLE_MS: unpulled queue's buffer given back, 100..600000, default
                          5000 */
    /* real-time delivery (issue 18, producer/rt/) */
    int rt_max_subscriptions;         /* RT_MAX_SUBSCRIPTIONS, 0..100000, default 2000 */
    int rt_max_subscriptions_per_key; /* RT_MAX_SUBSCRIPTIONS_PER_KEY, 0..100000, default 100 */
    int64_t rt_send_buffer_bytes;     /* RT_SEND_BUFFER_BYTES, 4 KiB..64 MiB, default 1 MiB */
    int rt_heartbeat_s;               /* RT_HEARTBEAT_S, 1..3600, default 15 */
    int rt_queue_prefetch;            /* RT_QUEUE_PREFETCH, 1..10000, default 100 */
    int64_t ws_max_frame_bytes;       /* WS_MAX_FRAME_BYTES, 125..16 MiB, default 1 MiB */
    char *docs_ui_dir;                /* DOCS_UI_DIR: Swagger UI files for GET /docs, default "" */

    /* producer: access control and abuse limits (producer/api/auth.h, producer/api/ratelimit.h) */
    char *api_keys_file;   /* API_KEYS_FILE: key file (reloaded on SIGHUP), default "" */
    char *api_keys;        /* API_KEYS: comma-separated key entries, default ""; secret */
    double rate_limit_rps; /* RATE_LIMIT_RPS: requests per second per key/address, 0..1000000 (0 =
                              off), default 0 */
    int rate_limit_burst;  /* RATE_LIMIT_BURST: bucket size, 0..1000000 (0 = max(1, ceil(RPS))),
                              default 0 */
    int rate_limit_max_clients;  /* RATE_LIMIT_MAX_CLIENTS: buckets kept (least recently used
                                    evicted), 16..10000000, default 10000 */
    double queue_rate_limit_rps; /* QUEUE_RATE_LIMIT_RPS: requests/s per queue, 0 = off */
    int queue_rate_limit_burst;  /* QUEUE_RATE_LIMIT_BURST: 0 = max(1, ceil(RPS)) */
    char *jwks_file;             /* JWKS_FILE: JWT keys (reloaded on SIGHUP), default "" */
    char *jwt_issuer;            /* JWT_ISSUER: required iss, default "" */
    char *jwt_audience;          /* JWT_AUDIENCE: required aud, default "" */
    char *jwt_scope_claim;       /* JWT_SCOPE_CLAIM: permissions claim, default "scope" */
    int jwt_leeway_s;            /* JWT_LEEWAY_S: clock skew, 0..3600, default 60 */
    int max_json_depth; /* MAX_JSON_DEPTH: nesting of arrays/objects in a body, 1..1000, default 64
                         */

    /* producer: file tailing (producer/tail/tailer.h) */
    char *input_file; /* INPUT_FILE: file to tail, default "" (no tailing) */
    char *
        tail_state_dir; /* TAIL_STATE_DIR: where the tail position is saved, default "tail-state" */
    char *tail_from;    /* TAIL_FROM: head|end, where to start with no saved state, default head */
    rq_tail_from_t tail_from_id;         /* TAIL_FROM as an enum (set with tail_from) */
    int64_t tail_max_line_bytes;         /* TAIL_MAX_LINE_BYTES, 1..67108864, default 1048576 */
    char *tail_overlong;                 /* TAIL_OVERLONG: split|skip, default split */
    rq_tail_overlong_t tail_overlong_id; /* TAIL_OVERLONG as an enum (set with tail_overlong) */
    int tail_poll_ms;        /* TAIL_POLL_MS: stat polling interval, 10..60000, default 250 */
    int tail_rotate_wait_ms; /* TAIL_ROTATE_WAIT_MS: drain a rotated file, 0..600000, default 1000
                              */
    int tail_batch_lines;    /* TAIL_BATCH_LINES: lines per publisher job, 1..100000, default 500 */
    int tail_max_inflight_jobs; /* TAIL_MAX_INFLIGHT_JOBS, 1..1024, default 16 */
    int tail_chunk_bytes;       /* TAIL_CHUNK_BYTES: bytes per tail message, 1..16 MiB, 8192 */

    /* consumer */
    char *consumer_bind; /* CONSUMER_BIND, default 127.0.0.1 */
    int consumer_port;   /* CONSUMER_PORT, 0..65535 (0 = no HTTP), default 8000 */
    char *output_file;   /* OUTPUT_FILE, default "" (none) */
    int batch_wait_ms;   /* BATCH_WAIT_MS: group-commit window, 0..1000, default 0 */
    int dedup_id_window; /* DEDUP_ID_WINDOW: message ids remembered by the exactly-once
                            writer, 1..10000000, default 50000 */

    /* consumer: what processing means (consumer/handler.h) */
    char *handler; /* HANDLER: echo | http(s)://URL | exec:COMMAND [ARGS], default "echo" */
    int handler_timeout_ms;  /* HANDLER_TIMEOUT_MS, 1..3600000, default 30000 */
    int handler_concurrency; /* HANDLER_CONCURRENCY, 0..65535 (0 = PREFETCH_COUNT), default 0 */
} rq_config_t;

/* Error detail for load/validation failures: names the variable and the allowed range. */
typedef struct rq_config_error {
    char text[512];
} rq_config_error_t;

/* Fills *c with the table defaults (heap strings). Returns 0, or -1 on allocation failure. */
int rq_config_defaults(rq_config_t *c);

/* Sets one variable by name from text, validating it. Returns 0; -1 with err filled when the
 * name is unknown or the value is out of range / not one of the choices. */
int rq_config_set(rq_config_t *c, const char *name, const char *value, rq_config_error_t *err);

/* Loads defaults, then `env_file` (may be NULL), then the process environment, for the
 * settings of `services`. Returns 0, or -1 with err filled (the struct is then freed). */
int rq_config_load(rq_config_t *c, unsigned services, const char *env_file, rq_config_error_t *err);

/* Parses one `.env` line: blank lines and `# comments` yield 0 with *name = NULL; otherwise
 * `[export ]NAME=value` where value may be bare (trailing spaces and ` #comment` dropped),
 * 'single-quoted' (verbatim) or "double-quoted" (\n \" \\ escapes). On success *name and
 * *value point into `line`, which is modified in place. Returns 0, or -1 with err filled. */
int rq_env_parse_line(char *line, char **name, char **value, rq_config_error_t *err);

/* Frees the strings of *c (the struct itself is the caller's). Safe on a zeroed struct. */
void rq_config_free(rq_config_t *c);

/* Prints `--help` text for `prog`: usage, options, then every setting of `services` with its
 * default, range and description. */
void rq_config_print_help(FILE *out, const char *prog, unsigned services);

/* Sets a text (static, may be NULL) that rq_config_print_help prints after the settings: a
 * program's own reference (the producer's HTTP routes). Call before rq_config_from_args. */
void rq_config_set_help_epilog(const char *text);

/* Prints the `.env.example` document: every setting, commented, with its default. */
void rq_config_print_env_example(FILE *out);

/* Handles the command line shared by both programs: --help, --version, --env-file PATH,
 * --print-env-example. On 0 the caller continues with *c loaded; on 1 the caller exits 0
 * (help/version printed); on -1 the caller exits 2 (the error was printed to stderr). */
int rq_config_from_args(rq_config_t *c, int argc, char **argv, const char *prog, unsigned services);

#endif
