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
 *   scopes   comma-separated endpoints the key may use: produce (POST /produce), batch
 *            (POST /batch-produce), dlq (GET /dlq, POST /dlq/retry), messages
 *            (GET /messages/{id}), or * for all; without the suffix: all
 *
 * In a file, blank lines and lines starting with '#' are skipped, and surrounding spaces and
 * a CR are trimmed. In API_KEYS, a comma-separated piece without ':' continues the scope list
 * of the entry before it, so `a:SECRET:produce,batch,b:SECRET2` is two keys.
 *
 * A client sends `Authorization: Bearer <secret>`. The presented token is hashed with
 * SHA-256 and compared with every key's digest in constant time (no early exit), so the
 * response time tells nothing about how close a guess was. Secrets are kept only as digests.
 */
#ifndef RQ_AUTH_H
#define RQ_AUTH_H

#include <stddef.h>
#include <stdint.h>

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

typedef struct rq_api_key {
    char id[RQ_KEY_ID_MAX + 1];
    uint8_t digest[RQ_SHA256_LEN]; /* SHA-256 of the secret */
    unsigned scopes;               /* RQ_SCOPE_* mask, never 0 */
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

/* Finds the token of an Authorization header value "Bearer <token>" (scheme matched
 * case-insensitively, spaces around the token allowed). Returns 0 with *tok and *len pointing
 * into header, or -1 when header is NULL, another scheme, or has no token. */
int rq_auth_bearer_token(const char *header, const char **tok, size_t *len);

/* ---- the live key table of a running producer ---- */

typedef struct rq_auth rq_auth_t;

typedef enum rq_auth_result {
    RQ_AUTH_OK = 0,    /* the key may use the endpoint */
    RQ_AUTH_MISSING,   /* no Authorization header, or not a Bearer token: 401 */
    RQ_AUTH_INVALID,   /* no key has this secret: 401 */
    RQ_AUTH_FORBIDDEN, /* a valid key without the endpoint's scope: 403 */
} rq_auth_result_t;

/* Loads the keys of `file` (may be NULL or "") and `list` (API_KEYS, may be NULL or "").
 * Returns the table, or NULL with err filled when a source cannot be read or parsed, or
 * when a file is named but holds no key (fail closed: an empty key file never means "open
 * to everyone"). With no source at all the table is empty and rq_auth_enabled() is 0. */
rq_auth_t *rq_auth_new(const char *file, const char *list, rq_auth_error_t *err);

/* 1 when keys are required (some source was configured at start), else 0. */
int rq_auth_enabled(const rq_auth_t *a);

/* Re-reads the file and list given to rq_auth_new() and swaps the new key set in. On any
 * error (unreadable, invalid, or no key left) the current set stays and -1 is returned with
 * err filled. Returns the new key count. Thread-safe against rq_auth_check(): requests in
 * flight finish with the set they started with (it is freed after its last reader). */
int rq_auth_reload(rq_auth_t *a, rq_auth_error_t *err);

/* Checks an Authorization header value (may be NULL) for an endpoint needing `scope` (0: any
 * valid key). On RQ_AUTH_OK and RQ_AUTH_FORBIDDEN the key's id is copied into id (at least
 * RQ_KEY_ID_MAX + 1 bytes); otherwise id is "". Thread-safe. */
rq_auth_result_t rq_auth_check(rq_auth_t *a, const char *header, unsigned scope, char *id);

/* Writes the ids of the current keys, comma-separated, into buf (for a start-up log line). */
void rq_auth_describe(rq_auth_t *a, char *buf, size_t len);

/* Frees the table. No rq_auth_check() may run concurrently. NULL is a no-op. */
void rq_auth_free(rq_auth_t *a);

#endif
