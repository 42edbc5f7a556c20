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

#include "log.h"
#include "util.h"

#define RQ_KEYS_FILE_MAX (4u << 20) /* a key file larger than 4 MiB is a mistake */
#define RQ_KEYS_MAX 100000

struct rq_keyset {
    atomic_int refs; /* references held by rq_auth_t and by readers */
    size_t n, cap;
    rq_api_key_t *keys;
    unsigned char *explicit_scopes; /* per key: 1 when the entry listed scopes */
};

struct rq_auth {
    char *file; /* NULL when none */
    char *list; /* NULL when none */
    int enabled;
    pthread_mutex_t lock; /* guards cur (the pointer, not the set) */
    rq_keyset_t *cur;     /* holds one reference */
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

/* Parses a comma-separated scope list s[0..len) into *mask. Returns 0, or -1 with the
 * offending name described in why. */
static int parse_scopes(const char *s, size_t len, unsigned *mask, char *why, size_t whylen)
{
    size_t i = 0;

    *mask = 0;
    while (i <= len) {
        size_t j = i;
        unsigned bit;
        while (j < len && s[j] != ',')
            j++;
        bit = rq_scope_parse(s + i, j - i);
        if (bit == 0) {
            rq_errf(why, whylen,
                    "unknown scope \"%.*s\" (allowed: produce, batch, dlq, messages, *)",
                    (int)(j - i > 32 ? 32 : j - i), s + i);
            return -1;
        }
        *mask |= bit;
        i = j + 1;
    }
    return 0;
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
    if (sec_end < end) {
        char sub[160];
        *has_scopes = 1;
        if (parse_scopes(sec_end + 1, (size_t)(end - sec_end - 1), &k->scopes, sub, sizeof(sub)) !=
            0) {
            rq_errf(why, whylen, "key %s: %s", k->id, sub);
            return -1;
        }
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
    if (ks->keys != NULL)
        rq_wipe(ks->keys, ks->cap * sizeof(*ks->keys));
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
        if (memchr(piece + a, ':', b - a) == NULL) {
            /* A scope continuing the scope list of the entry before. */
            unsigned bit = rq_scope_parse(piece + a, b - a);
            if (ks->n == 0 || entry == 0 || !ks->explicit_scopes[ks->n - 1]) {
                fail(err,
                     "API_KEYS entry %u: \"%.*s\" is neither key-id:secret nor a scope of a "
                     "scope list",
                     entry + 1, (int)(b - a > 32 ? 32 : b - a), bit ? piece + a : "(hidden)");
                goto err;
            }
            if (bit == 0) {
                fail(err,
                     "API_KEYS entry %u: unknown scope (allowed: produce, batch, dlq, "
                     "messages, *)",
                     entry);
                goto err;
            }
            ks->keys[ks->n - 1].scopes |= bit;
            continue;
        }
        rq_api_key_t k;
        int has_scopes;
        entry++;
        if (parse_entry(piece + a, b - a, &k, &has_scopes, why, sizeof(why)) != 0 ||
            keyset_add(ks, &k, has_scopes, why, sizeof(why)) != 0) {
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

/* Reads the whole file at path into a heap buffer. Returns it (caller wipes and frees) with
 * its length, or NULL with err filled. Warns when others may read it. */
static char *read_keys_file(const char *path, size_t *len, rq_auth_error_t *err)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    char *buf = NULL, ebuf[RQ_STRERROR_LEN];
    size_t n;

    if (f == NULL) {
        fail(err, "API_KEYS_FILE %s: %s", path, rq_strerror(errno, ebuf, sizeof(ebuf)));
        return NULL;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fail(err, "API_KEYS_FILE %s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > RQ_KEYS_FILE_MAX) {
        fail(err, "API_KEYS_FILE %s: larger than %u bytes", path, RQ_KEYS_FILE_MAX);
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        rq_warn("API_KEYS_FILE %s is accessible to group or others (mode %03o); chmod 600 it", path,
                (unsigned)(st.st_mode & 0777));
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        fail(err, "API_KEYS_FILE %s: out of memory", path);
        goto out;
    }
    n = fread(buf, 1, (size_t)st.st_size + 1, f);
    if (ferror(f) || n > (size_t)st.st_size) {
        fail(err, "API_KEYS_FILE %s: read error or the file grew while read", path);
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

/* Builds a key set from the configured sources. NULL with err on failure. */
static rq_keyset_t *load_sources(const rq_auth_t *a, rq_auth_error_t *err)
{
    rq_keyset_t *ks = NULL;

    if (a->file != NULL) {
        size_t len = 0;
        char *text = read_keys_file(a->file, &len, err);
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
    if (ks == NULL)
        fail(err, "out of memory");
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

rq_auth_t *rq_auth_new(const char *file, const char *list, rq_auth_error_t *err)
{
    rq_auth_t *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        fail(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&a->lock, NULL);
    if ((file != NULL && file[0] != '\0' && (a->file = strdup(file)) == NULL) ||
        (list != NULL && list[0] != '\0' && (a->list = strdup(list)) == NULL)) {
        fail(err, "out of memory");
        goto err;
    }
    a->enabled = a->file != NULL || a->list != NULL;
    a->cur = load_sources(a, err);
    if (a->cur == NULL)
        goto err;
    if (a->enabled && a->cur->n == 0) {
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
        return fail(err, "no API keys are configured (API_KEYS_FILE, API_KEYS): nothing to "
                         "reload");
    ks = load_sources(a, err);
    if (ks == NULL)
        return -1;
    if (ks->n == 0) {
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

rq_auth_result_t rq_auth_check(rq_auth_t *a, const char *header, unsigned scope, char *id)
{
    const char *tok;
    size_t len;
    rq_keyset_t *ks;
    rq_auth_result_t r;
    int i;

    id[0] = '\0';
    if (rq_auth_bearer_token(header, &tok, &len) != 0)
        return RQ_AUTH_MISSING;
    ks = keyset_acquire(a);
    i = rq_keyset_match(ks, tok, len);
    if (i < 0) {
        r = RQ_AUTH_INVALID;
    } else {
        const rq_api_key_t *k = &ks->keys[i];
        memcpy(id, k->id, sizeof(k->id));
        r = scope == 0 || (k->scopes & scope) == scope ? RQ_AUTH_OK : RQ_AUTH_FORBIDDEN;
    }
    keyset_release(ks);
    return r;
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
        char scopes[64];
        int n;
        rq_scope_format(ks->keys[i].scopes, scopes, sizeof(scopes));
        n = snprintf(buf + pos, len - pos, "%s%s[%s]", i ? ", " : "", ks->keys[i].id, scopes);
        if (n < 0)
            break;
        pos += (size_t)n;
    }
    keyset_release(ks);
}

void rq_auth_free(rq_auth_t *a)
{
    if (a == NULL)
        return;
    keyset_release(a->cur);
    pthread_mutex_destroy(&a->lock);
    if (a->list != NULL)
        rq_wipe(a->list, strlen(a->list));
    free(a->list);
    free(a->file);
    free(a);
}
