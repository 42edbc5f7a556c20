/* auth.h - API keys of the producer: the key format, constant-time lookup, SIGHUP reload.
 *
 * Key entries (API_KEYS_FILE: one per line; API_KEYS: separated by commas):
 *
 *   <key-id>:<secret>[:<scopes>]
 *   <key-id>:sha256:<64 hex digits>[:<scopes>]     the SHA-256 of the secret instead
 *
 *   key-id   1..64 of [A-Za-z0-9_.-]; unique; it names the key in logs and metric labels
 *   secret   16..256 of [A-Za-z0-9-._~+/] with optional trailing '=' (the RFC 6750 token
 *            alphabet: what `openssl rand -base64 32` or `-hex 32` prints); unique
 *   scopes   comma-separated pieces, each an endpoint the key may use: produce (POST
 *            /produce), batch (POST /batch-produce), dlq (GET /dlq, POST /dlq/retry),
 *            messages (GET /messages/{id}), or * (every endpoint and every queue action);
 *            or a queue permission `<action>:<pattern>`: produce:<pattern> (POST
 *            /queues/{id}/messages), consume:<pattern> (GET /queues/{id}/messages, ack, nack,
 *            lease, GET /queues/{id}/dlq, GET /queues/{id}/events and /ws), admin:<pattern>
 *            (POST /queues, GET and DELETE /queues/{id}, POST /queues/{id}/messages/retry;
 *            on topics POST /topics, GET and DELETE /topics/{name}); and on topic names
 *            publish:<pattern> (POST /topics/{name}/messages) and subscribe:<pattern> (GET
 *            /topics/{name}/events and /topics/{name}/ws). A pattern is 1..200 of the queue
 *            name alphabet [A-Za-z0-9._-] and '*', a glob where '*' matches any run of
 *            characters, '.' included: orders.* matches orders.eu and orders.eu.x, * alone
 *            every queue (or topic). At most RQ_GRANTS_MAX queue permissions per key. Without
 *            the suffix: all (like *). Endpoint scopes do not grant queue routes and queue
 *            permissions do not grant the endpoints (/produce needs `produce`, even though it
 *            publishes to the default queue). publish: and subscribe: are topic permissions
 *            only: a key holding nothing else may not list or use queues (GET /queues is 403
 *            for it, rq_principal_any_queue), and produce:/consume: grant no topic route.
 *            Example: `k1:SECRET:produce:orders.*,consume:orders.*,subscribe:events.*`.
 *
 * The key ids produce, consume, admin, publish and subscribe are reserved (they would read as
 * scope pieces).
 * In a file, blank lines and lines starting with '#' are skipped, and surrounding spaces and
 * a CR are trimmed. In API_KEYS, a comma-separated piece that is an endpoint scope (no ':')
 * or a queue permission (produce:, consume:, admin:, publish: or subscribe: then a pattern)
 * continues the scope list of the entry before it, so `a:SECRET:produce,batch,b:SECRET2` is
 * two keys and `k1:SECRET:produce:orders.*,consume:orders.*` is one key with two queue
 * permissions.
 *
 * OAuth2 bearer tokens (JWKS_FILE, see jwt.h): a token that has the JWT shape and matches no
 * API key is verified as a JWT; its scope claim (JWT_SCOPE_CLAIM) holds the same pieces,
 * separated by spaces ("produce:orders.* consume:orders.eu"); pieces it does not know
 * (openid, email, ...) are ignored there, not refused.
 *
 * A client sends `Authorization: Bearer <secret>`. The presented token is hashed with
 * SHA-256 and compared with every key's digest in constant time (no early exit), so the
 * response time tells nothing about how close a guess was. Secrets are kept only as digests.
 */
#ifndef RQ_AUTH_H
#define RQ_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "jwt.h"
#include "sha256.h"

/* Endpoints a key may be limited to (a bit mask). */
enum {
    RQ_SCOPE_PRODUCE = 1u << 0,
    RQ_SCOPE_BATCH = 1u << 1,
    RQ_SCOPE_DLQ = 1u << 2,
    RQ_SCOPE_MESSAGES = 1u << 3,
    RQ_SCOPE_ALL = (1u << 4) - 1,
};

#define RQ_KEY_ID_MAX 64
#define RQ_SECRET_MIN 16
#define RQ_SECRET_MAX 256

/* Queue actions (queue routes). */
typedef enum rq_qaction {
    RQ_QACT_PRODUCE = 0,
    RQ_QACT_CONSUME,
    RQ_QACT_ADMIN,
    RQ_QACT_PUBLISH,   /* topics: POST /topics/{name}/messages */
    RQ_QACT_SUBSCRIBE, /* topics: GET /topics/{name}/events and /ws */
    RQ_QACT_COUNT
} rq_qaction_t;
#define RQ_QACT_ALL ((1u << RQ_QACT_COUNT) - 1) /* a mask of 1u << rq_qaction_t */
/* The actions that concern queues (GET /queues lists a queue for one of them) and those that
 * concern topics (admin covers both: POST /topics, GET and DELETE /topics/{name}). */
#define RQ_QACT_QUEUE_MASK                                                                         \
    ((1u << RQ_QACT_PRODUCE) | (1u << RQ_QACT_CONSUME) | (1u << RQ_QACT_ADMIN))
#define RQ_QACT_TOPIC_MASK                                                                         \
    ((1u << RQ_QACT_PUBLISH) | (1u << RQ_QACT_SUBSCRIBE) | (1u << RQ_QACT_ADMIN))

#define RQ_QPATTERN_MAX 200 /* bytes of a queue pattern */
#define RQ_GRANTS_MAX 64    /* queue permissions per key or token */

/* One queue permission: actions (1u << rq_qaction_t) on the queues matching pattern. */
typedef struct rq_qgrant {
    unsigned acts;
    char *pattern; /* heap, owned by the key (or principal) */
} rq_qgrant_t;

typedef struct rq_api_key {
    char id[RQ_KEY_ID_MAX + 1];
    uint8_t digest[RQ_SHA256_LEN]; /* SHA-256 of the secret */
    unsigned scopes;               /* RQ_SCOPE_* mask, 0 when it lists only queue permissions */
    unsigned all_queues;           /* actions granted on every queue ('*', or no scope list) */
    size_t n_grants;               /* queue permissions */
    rq_qgrant_t *grants;           /* owned by the key set */
} rq_api_key_t;

typedef struct rq_auth_error {
    char text[256]; /* names the line or entry; never contains a secret */
} rq_auth_error_t;

/* ---- key sets: pure, immutable once built ---- */

typedef struct rq_keyset rq_keyset_t;

/* Parses a key file's text (len bytes; NUL bytes are an error). `origin` names the source in
 * errors ("keys.txt"). Returns a new set (possibly empty; free with rq_keyset_free), or NULL
 * with err filled ("keys.txt:3: ..."). */
rq_keyset_t *rq_keyset_parse_text(const char *text, size_t len, const char *origin,
                                  rq_auth_error_t *err);

/* Parses an API_KEYS value (comma-separated entries, see above) and appends its keys to
 * `into` (which may be NULL: a new set is made). Returns the set, or NULL with err filled
 * ("API_KEYS entry 2: ..."); `into` is freed on error. */
rq_keyset_t *rq_keyset_parse_list(rq_keyset_t *into, const char *list, rq_auth_error_t *err);

/* Number of keys in the set (0 for NULL). */
size_t rq_keyset_count(const rq_keyset_t *ks);

/* Key i (0 <= i < count), owned by the set. */
const rq_api_key_t *rq_keyset_key(const rq_keyset_t *ks, size_t i);

/* Returns the index of the key whose secret is token[0..len), or -1. Hashes the token and
 * compares it with every key's digest in constant time. Thread-safe on an unchanging set. */
int rq_keyset_match(const rq_keyset_t *ks, const char *token, size_t len);

/* Frees the set (the digests are wiped). NULL is a no-op. */
void rq_keyset_free(rq_keyset_t *ks);

/* Parses one scope name (len bytes): "produce", "batch", "dlq", "messages" or "*". Returns
 * its RQ_SCOPE_* bits, or 0 when unknown. */
unsigned rq_scope_parse(const char *name, size_t len);

/* Writes the scope names of mask, comma-separated ("produce,batch" or "*"), into buf. */
void rq_scope_format(unsigned mask, char *buf, size_t len);

/* 1 when s[0..len) is a valid queue pattern (see above), else 0. */
int rq_qpattern_valid(const char *s, size_t len);

/* 1 when queue name `name` matches glob `pattern` ('*': any run of characters), else 0.
 * Linear in practice, O(len(pattern) * len(name)) at worst (both bounded to 200). */
int rq_qpattern_match(const char *pattern, const char *name);

/* Finds the token of an Authorization header value "Bearer <token>" (scheme matched
 * case-insensitively, spaces around the token allowed). Returns 0 with *tok and *len pointing
 * into header, or -1 when header is NULL, another scheme, or has no token. */
int rq_auth_bearer_token(const char *header, const char **tok, size_t *len);

/* ---- the live key table of a running producer ---- */

typedef struct rq_auth rq_auth_t;

typedef enum rq_auth_result {
    RQ_AUTH_OK = 0,    /* the key may use the endpoint */
    RQ_AUTH_MISSING,   /* no Authorization header, or not a Bearer token: 401 */
    RQ_AUTH_INVALID,   /* no key has this secret, or a JWT failed a check: 401 */
    RQ_AUTH_FORBIDDEN, /* a valid key without the endpoint's scope: 403 */
} rq_auth_result_t;

/* OAuth2 bearer tokens (jwt.h). Strings are copied by rq_auth_new_jwt(). */
typedef struct rq_auth_jwt_opts {
    const char *jwks_file;   /* JWKS_FILE; NULL or "": no JWTs */
    const char *issuer;      /* JWT_ISSUER: required with jwks_file */
    const char *audience;    /* JWT_AUDIENCE: required with jwks_file */
    const char *scope_claim; /* JWT_SCOPE_CLAIM; NULL or "": "scope" */
    int leeway_s;            /* JWT_LEEWAY_S: clock skew on exp, nbf, iat */
} rq_auth_jwt_opts_t;

/* Loads the keys of `file` (may be NULL or "") and `list` (API_KEYS, may be NULL or "").
 * Returns the table, or NULL with err filled when a source cannot be read or parsed, or
 * when a file is named but holds no key (fail closed: an empty key file never means "open
 * to everyone"). With no source at all the table is empty and rq_auth_enabled() is 0.
 * Same as rq_auth_new_jwt(file, list, NULL, err). */
rq_auth_t *rq_auth_new(const char *file, const char *list, rq_auth_error_t *err);

/* rq_auth_new() plus JWTs when jwt (may be NULL) names a JWKS file: the JWKS must parse
 * and hold a usable key, and issuer and audience must be set (else NULL with err: fail
 * closed). With a JWKS, authentication is required even without any API key. */
rq_auth_t *rq_auth_new_jwt(const char *file, const char *list, const rq_auth_jwt_opts_t *jwt,
                           rq_auth_error_t *err);

/* 1 when credentials are required (keys or a JWKS were configured at start), else 0. */
int rq_auth_enabled(const rq_auth_t *a);

/* Re-reads the key file, list and JWKS file given at creation and swaps the new set in
 * (keys and JWKS together). On any error (unreadable, invalid, no key left, or a JWKS
 * without a usable key) the current set stays and -1 is returned with err filled. Returns
 * the new API key count. Thread-safe against rq_auth_identify(): requests in flight finish
 * with the set they started with (it is freed after its last reader). */
int rq_auth_reload(rq_auth_t *a, rq_auth_error_t *err);

/* Number of JWKS keys in the current set (0 without JWKS_FILE). Thread-safe. */
size_t rq_auth_jwks_count(rq_auth_t *a);

/* ---- principals: who a request is, and what it may do ---- */

/* A concrete struct, so that it can live in a request context without an allocation; treat
 * the fields as private and use the functions below. Zeroed memory is an empty principal
 * that may do nothing; rq_principal_clear() releases what rq_auth_identify() took (a
 * reference to the key set, or a token's permissions). */
typedef struct rq_principal {
    int kind;                   /* 0 none, 1 open (auth disabled), 2 API key, 3 JWT */
    char id[RQ_KEY_ID_MAX + 1]; /* key id or sanitized JWT subject; "" when none/open */
    unsigned scopes;            /* RQ_SCOPE_* */
    unsigned all_queues;        /* actions allowed on every queue */
    size_t n_grants;
    const rq_qgrant_t *grants; /* borrowed from the held key set, or own */
    rq_qgrant_t *own;          /* a JWT's permissions (heap) */
    void *hold;                /* the key set referenced by an API key principal */
    int jwt;                   /* the presented token was verified as a JWT */
    const char *why;           /* RQ_AUTH_INVALID: what failed (static text), else NULL */
} rq_principal_t;

/* Authenticates an Authorization header value (may be NULL): an API key, else (with a JWKS)
 * a JWT. Always initializes *p first. RQ_AUTH_OK fills *p (release with
 * rq_principal_clear); RQ_AUTH_MISSING or RQ_AUTH_INVALID leave it empty, with p->why saying
 * what failed (for a JWT: the check, from rq_jwt_strerror; never the token) and p->jwt set
 * when the token was a JWT. Never RQ_AUTH_FORBIDDEN. Thread-safe. */
rq_auth_result_t rq_auth_identify(rq_auth_t *a, const char *header, rq_principal_t *p);

/* Fills *p with the principal of a server without authentication: everything allowed,
 * id "". Nothing to release (clearing is still fine). */
void rq_principal_open(rq_principal_t *p);

/* 1 when p may use an endpoint needing endpoint_scope (RQ_SCOPE_* bits; 0: any
 * authenticated principal), else 0. */
int rq_principal_allows(const rq_principal_t *p, unsigned endpoint_scope);

/* 1 when p may do act on queue `queue` (NULL: 0), else 0. */
int rq_principal_allows_queue(const rq_principal_t *p, rq_qaction_t act, const char *queue);

/* 1 when p holds some queue permission (produce, consume or admin, any pattern), else 0:
 * enough to call GET /queues (the handler filters the names with rq_principal_allows_queue
 * over the actions of RQ_QACT_QUEUE_MASK). publish: and subscribe: alone do not count. */
int rq_principal_any_queue(const rq_principal_t *p);

/* 1 when p holds some topic permission (publish, subscribe or admin, any pattern), else 0:
 * enough to call GET /topics (the handler filters the names with rq_principal_allows_queue
 * over the actions of RQ_QACT_TOPIC_MASK). */
int rq_principal_any_topic(const rq_principal_t *p);

/* The key id or JWT subject (sanitized, <= RQ_KEY_ID_MAX bytes); "" for none or open. */
const char *rq_principal_id(const rq_principal_t *p);

/* Releases what p holds and empties it. Safe on an empty or cleared principal. */
void rq_principal_clear(rq_principal_t *p);

/* The action word of act ("produce", "consume", "admin", "publish", "subscribe"); "?" for
 * anything else. */
const char *rq_qaction_name(rq_qaction_t act);

/* Checks an Authorization header value (may be NULL) for an endpoint needing `scope` (0: any
 * valid key or token). On RQ_AUTH_OK and RQ_AUTH_FORBIDDEN the key's id (or the JWT's
 * subject) is copied into id (at least RQ_KEY_ID_MAX + 1 bytes); otherwise id is "".
 * rq_auth_identify() plus rq_principal_allows(). Thread-safe. */
rq_auth_result_t rq_auth_check(rq_auth_t *a, const char *header, unsigned scope, char *id);

#define RQ_AUTH_JWT_LABELS_MAX 100           /* JWT subjects that keep a metric label */
#define RQ_AUTH_JWT_LABEL_OTHER "_jwt_other" /* the label of the later ones */

/* The metric label value of p (a `key` label): an API key's id (bounded by the key set), or
 * for a JWT its subject while fewer than RQ_AUTH_JWT_LABELS_MAX distinct subjects were
 * labelled, else RQ_AUTH_JWT_LABEL_OTHER (an IdP's subjects are not bounded by anything
 * relayq configures). Returns p's id or a static string: copy it before clearing p. "" for
 * none or open. Thread-safe. */
const char *rq_auth_metric_label(rq_auth_t *a, const rq_principal_t *p);

/* Writes the ids of the current keys, comma-separated, into buf (for a start-up log line). */
void rq_auth_describe(rq_auth_t *a, char *buf, size_t len);

/* Frees the table. No rq_auth_check() may run concurrently. NULL is a no-op. */
void rq_auth_free(rq_auth_t *a);

#endif
