/* auth.c - API key parsing, constant-time matching and the reloadable key table.
 *
 * The live table is an immutable key set behind a pointer. A request takes a reference to
 * the current set under a mutex (a pointer copy and an atomic increment: the lock is held for
 * nanoseconds), matches without the lock, and drops the reference; a reload builds the new
 * set outside the lock, swaps the pointer under it, and drops the table's reference to the
 * old one, which is freed by whoever drops the last reference. Readers never wait for a
 * reload's file I/O or parsing, and a set is never freed under a reader.
 */
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "ratelimit.h"
#include "util.h"

#define RQ_KEYS_FILE_MAX (4u << 20) /* a key file larger than 4 MiB is a mistake */
#define RQ_KEYS_MAX 100000

struct rq_keyset {
    atomic_int refs; /* references held by rq_auth_t and by readers */
    size_t n, cap;
    rq_api_key_t *keys;
    unsigned char *explicit_scopes; /* per key: 1 when the entry listed scopes */
    rq_jwks_t *jwks;                /* NULL without JWKS_FILE */
};

struct rq_auth {
    char *file;                                        /* NULL when none */
    char *list;                                        /* NULL when none */
    char *jwks_file, *issuer, *audience, *scope_claim; /* NULL when no JWKS_FILE */
    int leeway_s;
    int enabled;
    pthread_mutex_t lock;      /* guards cur (the pointer, not the set) */
    rq_keyset_t *cur;          /* holds one reference */
    rq_labelset_t *jwt_labels; /* subjects with a metric label of their own */
};

/* Fills err (if any) with printf-formatted text (rq_verrf). Always returns -1. */
__attribute__((format(printf, 2, 3))) static int fail(rq_auth_error_t *err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rq_verrf(err != NULL ? err->text : NULL, sizeof(err->text), fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- scopes ---- */

static const struct {
    const char *name;
    unsigned bit;
} scope_names[] = {
    {"produce", RQ_SCOPE_PRODUCE},
    {"batch", RQ_SCOPE_BATCH},
    {"dlq", RQ_SCOPE_DLQ},
    {"messages", RQ_SCOPE_MESSAGES},
};
#define N_SCOPES (sizeof(scope_names) / sizeof(scope_names[0]))

unsigned rq_scope_parse(const char *name, size_t len)
{
    if (len == 1 && name[0] == '*')
        return RQ_SCOPE_ALL;
    for (size_t i = 0; i < N_SCOPES; i++) {
        if (strlen(scope_names[i].name) == len && memcmp(scope_names[i].name, name, len) == 0)
            return scope_names[i].bit;
    }
    return 0;
}

void rq_scope_format(unsigned mask, char *buf, size_t len)
{
    size_t pos = 0;

    if (len == 0)
        return;
    buf[0] = '\0';
    if ((mask & RQ_SCOPE_ALL) == RQ_SCOPE_ALL) {
        snprintf(buf, len, "*");
        return;
    }
    for (size_t i = 0; i < N_SCOPES && pos < len; i++) {
        if (mask & scope_names[i].bit) {
            int n = snprintf(buf + pos, len - pos, "%s%s", pos ? "," : "", scope_names[i].name);
            if (n < 0)
                return;
            pos += (size_t)n;
        }
    }
}

/* ---- entries ---- */

static int is_id_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '_' || ch == '.' || ch == '-';
}

/* RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static int is_token_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~' ||
           ch == '+' || ch == '/';
}

static int valid_secret(const char *s, size_t len)
{
    size_t i = 0;

    while (i < len && is_token_char(s[i]))
        i++;
    if (i == 0)
        return 0;
    while (i < len && s[i] == '=')
        i++;
    return i == len;
}

/* ---- queue patterns and permissions ---- */

static const char *const qaction_names[RQ_QACT_COUNT] = {"produce", "consume", "admin", "publish",
                                                         "subscribe"};

const char *rq_qaction_name(rq_qaction_t act)
{
    return (unsigned)act < RQ_QACT_COUNT ? qaction_names[act] : "?";
}

/* The action of a word s[0..len), or -1. */
static int qaction_parse(const char *s, size_t len)
{
    for (int i = 0; i < RQ_QACT_COUNT; i++) {
        if (strlen(qaction_names[i]) == len && memcmp(qaction_names[i], s, len) == 0)
            return i;
    }
    return -1;
}

int rq_qpattern_valid(const char *s, size_t len)
{
    if (len == 0 || len > RQ_QPATTERN_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!isalnum((unsigned char)ch) && ch != '.' && ch != '_' && ch != '-' && ch != '*')
            return 0;
    }
    return 1;
}

int rq_qpattern_match(const char *pat, const char *name)
{
    const char *star = NULL, *resume = NULL;

    /* Greedy glob with backtracking to the last '*' only: enough for '*' (no '?', no
     * classes), and bounded by len(pat) * len(name). */
    while (*name != '\0') {
        if (*pat == '*') {
            star = pat++;
            resume = name;
        } else if (*pat == *name) {
            pat++;
            name++;
        } else if (star != NULL) {
            pat = star + 1;
            name = ++resume;
        } else {
            return 0;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

/* Permissions being built: endpoint scopes, every-queue actions and queue grants. */
typedef struct perms {
    unsigned scopes, all_queues;
    size_t n;
    rq_qgrant_t *grants; /* RQ_GRANTS_MAX entries once allocated */
} perms_t;

static void perms_clear(perms_t *pm)
{
    for (size_t i = 0; i < pm->n; i++)
        free(pm->grants[i].pattern);
    free(pm->grants);
    memset(pm, 0, sizeof(*pm));
}

/* Adds act on pattern s[0..len) (valid). Returns 0, -1 when full, -2 out of memory. */
static int perms_grant(perms_t *pm, int act, const char *s, size_t len)
{
    if (len == 1 && s[0] == '*') {
        pm->all_queues |= 1u << act;
        return 0;
    }
    for (size_t i = 0; i < pm->n; i++) {
        if (strlen(pm->grants[i].pattern) == len && memcmp(pm->grants[i].pattern, s, len) == 0) {
            pm->grants[i].acts |= 1u << act;
            return 0;
        }
    }
    if (pm->n >= RQ_GRANTS_MAX)
        return -1;
    if (pm->grants == NULL && (pm->grants = calloc(RQ_GRANTS_MAX, sizeof(*pm->grants))) == NULL)
        return -2;
    pm->grants[pm->n].pattern = strndup(s, len);
    if (pm->grants[pm->n].pattern == NULL)
        return -2;
    pm->grants[pm->n++].acts = 1u << act;
    return 0;
}

/* How much of a refused scope piece s[0..len) an error may print: all of it when what follows
 * its first ':' (or the piece, without one) is shorter than a secret, else only up to that
 * ':'. A piece may be a misplaced "<id>:<secret>" (two keys on one line, a key id that is a
 * scope word), and errors never print secrets. */
static size_t shown_len(const char *s, size_t len)
{
    const char *colon = memchr(s, ':', len);
    size_t head = colon != NULL ? (size_t)(colon - s) + 1 : 0;

    if (len - head < RQ_SECRET_MIN)
        return len > 48 ? 48 : len;
    return head > 32 ? 32 : head;
}

/* Adds one scope piece s[0..len): an endpoint scope or <action>:<pattern>. Returns 0, or -1
 * with why (strict callers refuse the entry; a JWT's unknown pieces are skipped). */
static int perms_add_piece(perms_t *pm, const char *s, size_t len, char *why, size_t whylen)
{
    const char *colon = memchr(s, ':', len);
    int act, rc;

    if (colon == NULL) {
        unsigned bit = rq_scope_parse(s, len);
        if (bit == 0)
            goto unknown;
        pm->scopes |= bit;
        if (bit == RQ_SCOPE_ALL)
            pm->all_queues = RQ_QACT_ALL;
        return 0;
    }
    act = qaction_parse(s, (size_t)(colon - s));
    if (act < 0)
        goto unknown;
    if (!rq_qpattern_valid(colon + 1, (size_t)(s + len - colon - 1))) {
        rq_errf(why, whylen, "bad queue pattern in \"%.*s%s\" (1 to %d of A-Z a-z 0-9 . _ - and *)",
                (int)shown_len(s, len), s, shown_len(s, len) < len ? "..." : "", RQ_QPATTERN_MAX);
        return -1;
    }
    rc = perms_grant(pm, act, colon + 1, (size_t)(s + len - colon - 1));
    if (rc != 0) {
        rq_errf(why, whylen, rc == -1 ? "more than %d queue permissions" : "out of memory",
                RQ_GRANTS_MAX);
        return -1;
    }
    return 0;

unknown:
    rq_errf(why, whylen,
            "unknown scope \"%.*s%s\" (allowed: produce, batch, dlq, messages, *, "
            "produce:<queues>, consume:<queues>, admin:<queues>, publish:<topics>, "
            "subscribe:<topics>)",
            (int)shown_len(s, len), s, shown_len(s, len) < len ? "..." : "");
    return -1;
}

/* Parses a comma-separated scope list s[0..len) into *pm. Returns 0, or -1 with the
 * offending piece described in why. */
static int parse_scopes(const char *s, size_t len, perms_t *pm, char *why, size_t whylen)
{
    size_t i = 0;

    while (i <= len) {
        size_t j = i;
        while (j < len && s[j] != ',')
            j++;
        if (perms_add_piece(pm, s + i, j - i, why, whylen) != 0)
            return -1;
        i = j + 1;
    }
    return 0;
}

/* Moves pm into key k (k owns the grants afterwards). */
static void perms_to_key(perms_t *pm, rq_api_key_t *k)
{
    k->scopes = pm->scopes;
    k->all_queues = pm->all_queues;
    k->n_grants = pm->n;
    k->grants = pm->grants;
    memset(pm, 0, sizeof(*pm));
}

/* Frees the grants of k (not k). */
static void key_clear_grants(rq_api_key_t *k)
{
    perms_t pm = {.n = k->n_grants, .grants = k->grants};

    perms_clear(&pm);
    k->n_grants = 0;
    k->grants = NULL;
}

/* Parses one entry s[0..len) (trimmed) into *k. *has_scopes tells whether it listed scopes.
 * Returns 0, or -1 with the reason (never the secret) in why. */
static int parse_entry(const char *s, size_t len, rq_api_key_t *k, int *has_scopes, char *why,
                       size_t whylen)
{
    const char *colon = memchr(s, ':', len), *rest, *end = s + len, *sec_end;
    size_t idlen;

    memset(k, 0, sizeof(*k));
    *has_scopes = 0;
    if (colon == NULL) {
        rq_errf(why, whylen, "expected key-id:secret[:scopes]");
        return -1;
    }
    idlen = (size_t)(colon - s);
    if (idlen == 0 || idlen > RQ_KEY_ID_MAX) {
        rq_errf(why, whylen, "the key id must be 1 to %d characters", RQ_KEY_ID_MAX);
        return -1;
    }
    for (size_t i = 0; i < idlen; i++) {
        if (!is_id_char(s[i])) {
            rq_errf(why, whylen, "the key id may hold only letters, digits, '_', '.', '-'");
            return -1;
        }
    }
    memcpy(k->id, s, idlen);
    k->id[idlen] = '\0';
    if (qaction_parse(s, idlen) >= 0) {
        rq_errf(why, whylen, "the key id %s is reserved (a scope word)", k->id);
        return -1;
    }
    rest = colon + 1;
    if ((size_t)(end - rest) >= 7 && memcmp(rest, "sha256:", 7) == 0) {
        const char *hex = rest + 7;
        sec_end = memchr(hex, ':', (size_t)(end - hex));
        if (sec_end == NULL)
            sec_end = end;
        if (sec_end - hex != 2 * RQ_SHA256_LEN ||
            rq_hex_decode(hex, k->digest, RQ_SHA256_LEN) != 0) {
            rq_errf(why, whylen, "key %s: sha256: must be followed by 64 hex digits", k->id);
            return -1;
        }
    } else {
        size_t slen;
        sec_end = memchr(rest, ':', (size_t)(end - rest));
        if (sec_end == NULL)
            sec_end = end;
        slen = (size_t)(sec_end - rest);
        if (slen < RQ_SECRET_MIN || slen > RQ_SECRET_MAX) {
            rq_errf(why, whylen, "key %s: the secret must be %d to %d characters", k->id,
                    RQ_SECRET_MIN, RQ_SECRET_MAX);
            return -1;
        }
        if (!valid_secret(rest, slen)) {
            rq_errf(why, whylen,
                    "key %s: the secret may hold only letters, digits and -._~+/ (then '=')",
                    k->id);
            return -1;
        }
        rq_sha256(rest, slen, k->digest);
    }
    k->scopes = RQ_SCOPE_ALL;
    k->all_queues = RQ_QACT_ALL;
    if (sec_end < end) {
        char sub[180];
        perms_t pm = {0};
        *has_scopes = 1;
        if (parse_scopes(sec_end + 1, (size_t)(end - sec_end - 1), &pm, sub, sizeof(sub)) != 0) {
            perms_clear(&pm);
            rq_errf(why, whylen, "key %s: %s", k->id, sub);
            return -1;
        }
        perms_to_key(&pm, k);
    }
    return 0;
}

/* ---- key sets ---- */

static rq_keyset_t *keyset_new(void)
{
    rq_keyset_t *ks = calloc(1, sizeof(*ks));

    if (ks != NULL)
        atomic_init(&ks->refs, 1);
    return ks;
}

void rq_keyset_free(rq_keyset_t *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++)
        key_clear_grants(&ks->keys[i]);
    if (ks->keys != NULL)
        rq_wipe(ks->keys, ks->cap * sizeof(*ks->keys));
    rq_jwks_free(ks->jwks);
    free(ks->keys);
    free(ks->explicit_scopes);
    free(ks);
}

/* Appends k after checking that its id and secret are new. Returns 0, or -1 with why. */
static int keyset_add(rq_keyset_t *ks, const rq_api_key_t *k, int has_scopes, char *why,
                      size_t whylen)
{
    for (size_t i = 0; i < ks->n; i++) {
        if (strcmp(ks->keys[i].id, k->id) == 0) {
            rq_errf(why, whylen, "key id %s is listed twice", k->id);
            return -1;
        }
        if (memcmp(ks->keys[i].digest, k->digest, RQ_SHA256_LEN) == 0) {
            rq_errf(why, whylen, "keys %s and %s have the same secret", ks->keys[i].id, k->id);
            return -1;
        }
    }
    if (ks->n >= RQ_KEYS_MAX) {
        rq_errf(why, whylen, "more than %d keys", RQ_KEYS_MAX);
        return -1;
    }
    if (ks->n == ks->cap) {
        size_t ncap = ks->cap ? ks->cap * 2 : 8;
        rq_api_key_t *nk = calloc(ncap, sizeof(*nk));
        unsigned char *ne = realloc(ks->explicit_scopes, ncap);
        if (nk == NULL || ne == NULL) {
            free(nk);
            if (ne != NULL)
                ks->explicit_scopes = ne;
            rq_errf(why, whylen, "out of memory");
            return -1;
        }
        if (ks->n > 0)
            memcpy(nk, ks->keys, ks->n * sizeof(*nk));
        if (ks->keys != NULL)
            rq_wipe(ks->keys, ks->cap * sizeof(*ks->keys));
        free(ks->keys);
        ks->keys = nk;
        ks->explicit_scopes = ne;
        ks->cap = ncap;
    }
    ks->keys[ks->n] = *k;
    ks->explicit_scopes[ks->n] = (unsigned char)has_scopes;
    ks->n++;
    return 0;
}

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

rq_keyset_t *rq_keyset_parse_text(const char *text, size_t len, const char *origin,
                                  rq_auth_error_t *err)
{
    rq_keyset_t *ks = keyset_new();
    size_t pos = 0;
    unsigned lineno = 0;
    char why[200];

    if (ks == NULL) {
        fail(err, "%s: out of memory", origin);
        return NULL;
    }
    if (memchr(text, '\0', len) != NULL) {
        fail(err, "%s: NUL byte in the file", origin);
        goto err;
    }
    while (pos < len) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos, a = 0, b;
        rq_api_key_t k;
        int has_scopes;

        pos += n + (nl ? 1 : 0);
        lineno++;
        while (a < n && is_blank(line[a]))
            a++;
        b = n;
        while (b > a && is_blank(line[b - 1]))
            b--;
        if (a == b || line[a] == '#')
            continue;
        if (parse_entry(line + a, b - a, &k, &has_scopes, why, sizeof(why)) != 0 ||
            keyset_add(ks, &k, has_scopes, why, sizeof(why)) != 0) {
            key_clear_grants(&k);
            rq_wipe(&k, sizeof(k));
            fail(err, "%s:%u: %s", origin, lineno, why);
            goto err;
        }
        rq_wipe(&k, sizeof(k));
    }
    return ks;

err:
    rq_keyset_free(ks);
    return NULL;
}

rq_keyset_t *rq_keyset_parse_list(rq_keyset_t *into, const char *list, rq_auth_error_t *err)
{
    rq_keyset_t *ks = into != NULL ? into : keyset_new();
    size_t pos = 0, len = strlen(list);
    unsigned entry = 0;
    char why[200];

    if (ks == NULL) {
        fail(err, "API_KEYS: out of memory");
        return NULL;
    }
    while (pos <= len) {
        const char *piece = list + pos, *comma = memchr(piece, ',', len - pos);
        size_t n = comma ? (size_t)(comma - piece) : len - pos, a = 0, b = n;

        pos += n + 1;
        while (a < n && is_blank(piece[a]))
            a++;
        while (b > a && is_blank(piece[b - 1]))
            b--;
        if (a == b) {
            if (b == n && n == 0 && comma == NULL && entry == 0)
                break; /* an empty list */
            fail(err, "API_KEYS: empty entry after entry %u", entry);
            goto err;
        }
        const char *colon = memchr(piece + a, ':', b - a);
        if (colon == NULL || qaction_parse(piece + a, (size_t)(colon - piece - a)) >= 0) {
            /* A scope continuing the scope list of the entry before. */
            unsigned bit = colon == NULL ? rq_scope_parse(piece + a, b - a) : 1;
            if (ks->n == 0 || entry == 0 || !ks->explicit_scopes[ks->n - 1]) {
                fail(err,
                     "API_KEYS entry %u: \"%.*s\" is neither key-id:secret nor a scope of a "
                     "scope list",
                     entry + 1, (int)(b - a > 32 ? 32 : b - a),
                     colon == NULL && bit ? piece + a : "(hidden)");
                goto err;
            }
            if (bit == 0) {
                fail(err,
                     "API_KEYS entry %u: unknown scope (allowed: produce, batch, dlq, "
                     "messages, *, produce:<queues>, consume:<queues>, admin:<queues>, "
                     "publish:<topics>, subscribe:<topics>)",
                     entry);
                goto err;
            }
            rq_api_key_t *last = &ks->keys[ks->n - 1];
            perms_t pm = {last->scopes, last->all_queues, last->n_grants, last->grants};
            if (perms_add_piece(&pm, piece + a, b - a, why, sizeof(why)) != 0) {
                perms_to_key(&pm, last);
                fail(err, "API_KEYS entry %u: %s", entry, why);
                goto err;
            }
            perms_to_key(&pm, last);
            continue;
        }
        rq_api_key_t k;
        int has_scopes;
        entry++;
        if (parse_entry(piece + a, b - a, &k, &has_scopes, why, sizeof(why)) != 0 ||
            keyset_add(ks, &k, has_scopes, why, sizeof(why)) != 0) {
            key_clear_grants(&k);
            rq_wipe(&k, sizeof(k));
            fail(err, "API_KEYS entry %u: %s", entry, why);
            goto err;
        }
        rq_wipe(&k, sizeof(k));
    }
    return ks;

err:
    rq_keyset_free(ks);
    return NULL;
}

size_t rq_keyset_count(const rq_keyset_t *ks)
{
    return ks != NULL ? ks->n : 0;
}

const rq_api_key_t *rq_keyset_key(const rq_keyset_t *ks, size_t i)
{
    return ks != NULL && i < ks->n ? &ks->keys[i] : NULL;
}

int rq_keyset_match(const rq_keyset_t *ks, const char *token, size_t len)
{
    uint8_t d[RQ_SHA256_LEN];
    int found = -1;

    if (ks == NULL)
        return -1;
    rq_sha256(token, len, d);
    /* Every digest is compared, and the index is selected with a mask, not a branch. */
    for (size_t i = 0; i < ks->n; i++) {
        int mask = -rq_ct_memeq(d, ks->keys[i].digest, RQ_SHA256_LEN);
        found = (found & ~mask) | ((int)i & mask);
    }
    rq_wipe(d, sizeof(d));
    return found;
}

int rq_auth_bearer_token(const char *header, const char **tok, size_t *len)
{
    const char *p, *end;

    if (header == NULL || strncasecmp(header, "Bearer", 6) != 0 ||
        (header[6] != ' ' && header[6] != '\t'))
        return -1;
    p = header + 6;
    while (*p == ' ' || *p == '\t')
        p++;
    end = p;
    while (*end != '\0' && *end != ' ' && *end != '\t')
        end++;
    if (end == p)
        return -1;
    for (const char *q = end; *q != '\0'; q++) {
        if (*q != ' ' && *q != '\t')
            return -1; /* a second word */
    }
    *tok = p;
    *len = (size_t)(end - p);
    return 0;
}

/* ---- the live table ---- */

/* Reads the whole file at path into a heap buffer (at most max bytes). Returns it (caller
 * wipes and frees) with its length, or NULL with err filled ("<what> <path>: ..."). With
 * secret, warns when others may read it. */
static char *read_file(const char *what, const char *path, size_t max, int secret, size_t *len,
                       rq_auth_error_t *err)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    char *buf = NULL, ebuf[RQ_STRERROR_LEN];
    size_t n;

    if (f == NULL) {
        fail(err, "%s %s: %s", what, path, rq_strerror(errno, ebuf, sizeof(ebuf)));
        return NULL;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fail(err, "%s %s: not a regular file", what, path);
        goto out;
    }
    if ((uint64_t)st.st_size > max) {
        fail(err, "%s %s: larger than %zu bytes", what, path, max);
        goto out;
    }
    if (secret && (st.st_mode & (S_IRWXG | S_IRWXO)))
        rq_warn("%s %s is accessible to group or others (mode %03o); chmod 600 it", what, path,
                (unsigned)(st.st_mode & 0777));
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        fail(err, "%s %s: out of memory", what, path);
        goto out;
    }
    n = fread(buf, 1, (size_t)st.st_size + 1, f);
    if (ferror(f) || n > (size_t)st.st_size) {
        fail(err, "%s %s: read error or the file grew while read", what, path);
        rq_wipe(buf, (size_t)st.st_size + 1);
        free(buf);
        buf = NULL;
        goto out;
    }
    *len = n;
out:
    fclose(f);
    return buf;
}

/* Loads the JWKS file of a into a new key set. NULL with err on failure. */
static rq_jwks_t *load_jwks(const rq_auth_t *a, rq_auth_error_t *err)
{
    size_t len = 0;
    char *text = read_file("JWKS_FILE", a->jwks_file, RQ_JWKS_FILE_MAX, 0, &len, err), why[200];
    rq_jwks_t *jw;

    if (text == NULL)
        return NULL;
    jw = rq_jwks_parse(text, len, why, sizeof(why));
    free(text);
    if (jw == NULL)
        fail(err, "JWKS_FILE %s: %s", a->jwks_file, why);
    return jw;
}

/* Builds a key set from the configured sources. NULL with err on failure. */
static rq_keyset_t *load_sources(const rq_auth_t *a, rq_auth_error_t *err)
{
    rq_keyset_t *ks = NULL;

    if (a->file != NULL) {
        size_t len = 0;
        char *text = read_file("API_KEYS_FILE", a->file, RQ_KEYS_FILE_MAX, 1, &len, err);
        if (text == NULL)
            return NULL;
        ks = rq_keyset_parse_text(text, len, a->file, err);
        rq_wipe(text, len);
        free(text);
        if (ks == NULL)
            return NULL;
        if (ks->n == 0) {
            fail(err,
                 "API_KEYS_FILE %s holds no key (an empty key file would open the API to "
                 "everyone; unset API_KEYS_FILE to run without keys)",
                 a->file);
            rq_keyset_free(ks);
            return NULL;
        }
    }
    if (a->list != NULL) {
        ks = rq_keyset_parse_list(ks, a->list, err);
        if (ks == NULL)
            return NULL;
    }
    if (ks == NULL)
        ks = keyset_new();
    if (ks == NULL) {
        fail(err, "out of memory");
        return NULL;
    }
    if (a->jwks_file != NULL && (ks->jwks = load_jwks(a, err)) == NULL) {
        rq_keyset_free(ks);
        return NULL;
    }
    return ks;
}

static void keyset_release(rq_keyset_t *ks)
{
    if (ks != NULL && atomic_fetch_sub(&ks->refs, 1) == 1)
        rq_keyset_free(ks);
}

static rq_keyset_t *keyset_acquire(rq_auth_t *a)
{
    rq_keyset_t *ks;

    pthread_mutex_lock(&a->lock);
    ks = a->cur;
    atomic_fetch_add(&ks->refs, 1);
    pthread_mutex_unlock(&a->lock);
    return ks;
}

/* strdup of s when set and not "", else NULL in *out. Returns -1 on allocation failure. */
static int dup_opt(const char *s, char **out)
{
    *out = NULL;
    if (s == NULL || s[0] == '\0')
        return 0;
    *out = strdup(s);
    return *out != NULL ? 0 : -1;
}

/* Copies the JWT options into a (a->jwks_file stays NULL without a JWKS). Returns 0, or -1
 * with err (options missing, out of memory). */
static int set_jwt_opts(rq_auth_t *a, const rq_auth_jwt_opts_t *jwt, rq_auth_error_t *err)
{
    if (jwt == NULL || jwt->jwks_file == NULL || jwt->jwks_file[0] == '\0')
        return 0;
    if (jwt->issuer == NULL || jwt->issuer[0] == '\0' || jwt->audience == NULL ||
        jwt->audience[0] == '\0')
        return fail(err, "JWKS_FILE is set: JWT_ISSUER and JWT_AUDIENCE must be set too (a "
                         "token is accepted only from that issuer for that audience)");
    if (dup_opt(jwt->jwks_file, &a->jwks_file) != 0 || dup_opt(jwt->issuer, &a->issuer) != 0 ||
        dup_opt(jwt->audience, &a->audience) != 0 ||
        dup_opt(jwt->scope_claim != NULL && jwt->scope_claim[0] ? jwt->scope_claim : "scope",
                &a->scope_claim) != 0)
        return fail(err, "out of memory");
    a->leeway_s = jwt->leeway_s > 0 ? jwt->leeway_s : 0;
    return 0;
}

rq_auth_t *rq_auth_new(const char *file, const char *list, rq_auth_error_t *err)
{
    return rq_auth_new_jwt(file, list, NULL, err);
}

rq_auth_t *rq_auth_new_jwt(const char *file, const char *list, const rq_auth_jwt_opts_t *jwt,
                           rq_auth_error_t *err)
{
    rq_auth_t *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        fail(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&a->lock, NULL);
    if ((a->jwt_labels = rq_labelset_new(RQ_AUTH_JWT_LABELS_MAX)) == NULL) {
        fail(err, "out of memory");
        goto err;
    }
    if ((file != NULL && file[0] != '\0' && (a->file = strdup(file)) == NULL) ||
        (list != NULL && list[0] != '\0' && (a->list = strdup(list)) == NULL)) {
        fail(err, "out of memory");
        goto err;
    }
    if (set_jwt_opts(a, jwt, err) != 0)
        goto err;
    a->enabled = a->file != NULL || a->list != NULL || a->jwks_file != NULL;
    a->cur = load_sources(a, err);
    if (a->cur == NULL)
        goto err;
    if ((a->file != NULL || a->list != NULL) && a->cur->n == 0) {
        fail(err, "API_KEYS holds no key");
        goto err;
    }
    return a;

err:
    rq_auth_free(a);
    return NULL;
}

int rq_auth_enabled(const rq_auth_t *a)
{
    return a != NULL && a->enabled;
}

int rq_auth_reload(rq_auth_t *a, rq_auth_error_t *err)
{
    rq_keyset_t *ks, *old;
    int n;

    if (!a->enabled)
        return fail(err, "no API keys are configured (API_KEYS_FILE, API_KEYS, JWKS_FILE): "
                         "nothing to reload");
    ks = load_sources(a, err);
    if (ks == NULL)
        return -1;
    if (ks->n == 0 && (a->file != NULL || a->list != NULL)) {
        rq_keyset_free(ks);
        return fail(err, "the new key set is empty; keeping the current keys");
    }
    n = (int)ks->n;
    pthread_mutex_lock(&a->lock);
    old = a->cur;
    a->cur = ks;
    pthread_mutex_unlock(&a->lock);
    keyset_release(old);
    return n;
}

size_t rq_auth_jwks_count(rq_auth_t *a)
{
    rq_keyset_t *ks;
    size_t n;

    if (a == NULL)
        return 0;
    ks = keyset_acquire(a);
    n = rq_jwks_count(ks->jwks);
    keyset_release(ks);
    return n;
}

/* ---- principals ---- */

/* Fills p from a verified token's claims. Returns 0, or -1 out of memory. */
static int principal_from_jwt(rq_principal_t *p, const rq_jwt_claims_t *cl)
{
    perms_t pm = {0};
    const char *s = cl->scopes;
    char why[200];

    while (*s != '\0') {
        size_t n = strcspn(s, " ");
        (void)perms_add_piece(&pm, s, n, why, sizeof(why)); /* unknown pieces are skipped */
        s += n;
        s += strspn(s, " ");
    }
    p->kind = 3;
    p->jwt = 1;
    snprintf(p->id, sizeof(p->id), "%s", cl->sub);
    p->scopes = pm.scopes;
    p->all_queues = pm.all_queues;
    p->n_grants = pm.n;
    p->own = pm.grants;
    p->grants = pm.grants;
    return 0;
}

rq_auth_result_t rq_auth_identify(rq_auth_t *a, const char *header, rq_principal_t *p)
{
    const char *tok;
    size_t len;
    rq_keyset_t *ks;
    int i;

    memset(p, 0, sizeof(*p));
    if (rq_auth_bearer_token(header, &tok, &len) != 0) {
        p->why = "no Bearer token";
        return RQ_AUTH_MISSING;
    }
    ks = keyset_acquire(a);
    /* The key match runs first and always (constant time); a JWT is tried only when no
     * key matches, so a secret that happens to look like a JWT stays a key. */
    i = rq_keyset_match(ks, tok, len);
    if (i >= 0) {
        const rq_api_key_t *k = &ks->keys[i];
        p->kind = 2;
        memcpy(p->id, k->id, sizeof(k->id));
        p->scopes = k->scopes;
        p->all_queues = k->all_queues;
        p->n_grants = k->n_grants;
        p->grants = k->grants;
        p->hold = ks; /* the reference is released by rq_principal_clear */
        return RQ_AUTH_OK;
    }
    if (ks->jwks != NULL && rq_jwt_looks_like(tok, len)) {
        rq_jwt_policy_t pol = {a->issuer, a->audience, a->scope_claim, a->leeway_s};
        rq_jwt_claims_t cl;
        rq_jwt_result_t r = rq_jwt_verify(ks->jwks, &pol, tok, len, (int64_t)time(NULL), &cl);
        keyset_release(ks);
        p->jwt = 1;
        if (r == RQ_JWT_OK && principal_from_jwt(p, &cl) != 0)
            r = RQ_JWT_MALFORMED;
        rq_jwt_claims_clear(&cl);
        if (r != RQ_JWT_OK) {
            rq_principal_clear(p);
            p->jwt = 1;
            p->why = rq_jwt_strerror(r);
            return RQ_AUTH_INVALID;
        }
        return RQ_AUTH_OK;
    }
    keyset_release(ks);
    p->why = "the token matches no API key";
    return RQ_AUTH_INVALID;
}

void rq_principal_open(rq_principal_t *p)
{
    memset(p, 0, sizeof(*p));
    p->kind = 1;
    p->scopes = RQ_SCOPE_ALL;
    p->all_queues = RQ_QACT_ALL;
}

int rq_principal_allows(const rq_principal_t *p, unsigned endpoint_scope)
{
    if (p == NULL || p->kind == 0)
        return 0;
    return (p->scopes & endpoint_scope) == endpoint_scope;
}

int rq_principal_allows_queue(const rq_principal_t *p, rq_qaction_t act, const char *queue)
{
    unsigned bit;

    if (p == NULL || p->kind == 0 || queue == NULL || (unsigned)act >= RQ_QACT_COUNT)
        return 0;
    bit = 1u << act;
    if (p->all_queues & bit)
        return 1;
    for (size_t i = 0; i < p->n_grants; i++) {
        if ((p->grants[i].acts & bit) && rq_qpattern_match(p->grants[i].pattern, queue))
            return 1;
    }
    return 0;
}

/* 1 when p holds one of the actions of mask on some pattern (or on every name). */
static int principal_any(const rq_principal_t *p, unsigned mask)
{
    if (p == NULL || p->kind == 0)
        return 0;
    if (p->all_queues & mask)
        return 1;
    for (size_t i = 0; i < p->n_grants; i++) {
        if (p->grants[i].acts & mask)
            return 1;
    }
    return 0;
}

int rq_principal_any_queue(const rq_principal_t *p)
{
    return principal_any(p, RQ_QACT_QUEUE_MASK);
}

int rq_principal_any_topic(const rq_principal_t *p)
{
    return principal_any(p, RQ_QACT_TOPIC_MASK);
}

const char *rq_principal_id(const rq_principal_t *p)
{
    return p != NULL ? p->id : "";
}

void rq_principal_clear(rq_principal_t *p)
{
    if (p == NULL)
        return;
    if (p->own != NULL) {
        perms_t pm = {.n = p->n_grants, .grants = p->own};
        perms_clear(&pm);
    }
    keyset_release(p->hold);
    memset(p, 0, sizeof(*p));
}

rq_auth_result_t rq_auth_check(rq_auth_t *a, const char *header, unsigned scope, char *id)
{
    rq_principal_t p;
    rq_auth_result_t r = rq_auth_identify(a, header, &p);

    id[0] = '\0';
    if (r == RQ_AUTH_OK) {
        memcpy(id, p.id, sizeof(p.id));
        if (!rq_principal_allows(&p, scope))
            r = RQ_AUTH_FORBIDDEN;
    }
    rq_principal_clear(&p);
    return r;
}

const char *rq_auth_metric_label(rq_auth_t *a, const rq_principal_t *p)
{
    if (p == NULL)
        return "";
    if (p->kind != 3)
        return p->id;
    return a != NULL ? rq_labelset_pick(a->jwt_labels, p->id, RQ_AUTH_JWT_LABEL_OTHER)
                     : RQ_AUTH_JWT_LABEL_OTHER;
}

/* Writes the permissions of k ("produce,batch,consume:orders.*") into buf. */
static void format_key_perms(const rq_api_key_t *k, char *buf, size_t len)
{
    size_t pos;

    rq_scope_format(k->scopes, buf, len);
    pos = strlen(buf);
    if ((k->scopes & RQ_SCOPE_ALL) == RQ_SCOPE_ALL && k->all_queues == RQ_QACT_ALL)
        return;
    for (int act = 0; act < RQ_QACT_COUNT; act++) {
        if (k->all_queues & (1u << act) && pos < len)
            pos += (size_t)snprintf(buf + pos, len - pos, "%s%s:*", pos ? "," : "",
                                    qaction_names[act]);
        for (size_t i = 0; i < k->n_grants && pos < len; i++) {
            if (k->grants[i].acts & (1u << act))
                pos += (size_t)snprintf(buf + pos, len - pos, "%s%s:%s", pos ? "," : "",
                                        qaction_names[act], k->grants[i].pattern);
        }
    }
}

void rq_auth_describe(rq_auth_t *a, char *buf, size_t len)
{
    rq_keyset_t *ks;
    size_t pos = 0;

    if (len == 0)
        return;
    buf[0] = '\0';
    if (a == NULL)
        return;
    ks = keyset_acquire(a);
    for (size_t i = 0; i < ks->n && pos < len; i++) {
        char scopes[256];
        int n;
        format_key_perms(&ks->keys[i], scopes, sizeof(scopes));
        n = snprintf(buf + pos, len - pos, "%s%s[%s]", i ? ", " : "", ks->keys[i].id, scopes);
        if (n < 0)
            break;
        pos += (size_t)n;
    }
    if (ks->jwks != NULL && pos < len)
        snprintf(buf + pos, len - pos, "%sJWTs from %s for %s (%zu JWKS keys)", pos ? "; " : "",
                 a->issuer, a->audience, rq_jwks_count(ks->jwks));
    keyset_release(ks);
}

void rq_auth_free(rq_auth_t *a)
{
    if (a == NULL)
        return;
    keyset_release(a->cur);
    rq_labelset_free(a->jwt_labels);
    pthread_mutex_destroy(&a->lock);
    if (a->list != NULL)
        rq_wipe(a->list, strlen(a->list));
    free(a->list);
    free(a->file);
    free(a->jwks_file);
    free(a->issuer);
    free(a->audience);
    free(a->scope_claim);
    free(a);
}
