/* fuzz_keys.c - libFuzzer harness: API key files, API_KEYS lists and Authorization headers.
 * The first byte picks the parser (0: key file, 1: API_KEYS list, 2: Bearer header); the
 * rest is the input. Checks invariants: a parsed set holds valid ids, scopes within
 * RQ_SCOPE_ALL and valid queue permissions (at least one of the two per key), matching the
 * input against it returns a valid index or -1, an error text is terminated, and a Bearer
 * token is one non-empty word inside the header. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

static void check_set(const rq_keyset_t *ks, const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < rq_keyset_count(ks); i++) {
        const rq_api_key_t *k = rq_keyset_key(ks, i);
        size_t n = strlen(k->id);
        if (n == 0 || n > RQ_KEY_ID_MAX || (k->scopes & ~RQ_SCOPE_ALL) != 0 ||
            (k->all_queues & ~RQ_QACT_ALL) != 0 || k->n_grants > RQ_GRANTS_MAX)
            abort();
        /* every key may do something: an endpoint, or a queue action */
        if (k->scopes == 0 && k->all_queues == 0 && k->n_grants == 0)
            abort();
        for (size_t g = 0; g < k->n_grants; g++) {
            const char *pat = k->grants[g].pattern;
            if (k->grants[g].acts == 0 || (k->grants[g].acts & ~RQ_QACT_ALL) != 0 ||
                !rq_qpattern_valid(pat, strlen(pat)))
                abort();
        }
    }
    /* The whole input as a token: must not crash; any match must be a real key. */
    int m = rq_keyset_match(ks, (const char *)data, size);
    if (m < -1 || m >= (int)rq_keyset_count(ks))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rq_auth_error_t err;
    rq_keyset_t *ks;
    char *text;

    if (size < 1)
        return 0;
    text = malloc(size);
    if (text == NULL)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    switch (data[0] % 3) {
    case 0:
        ks = rq_keyset_parse_text(text, size - 1, "fuzz", &err);
        if (ks != NULL)
            check_set(ks, data + 1, size - 1);
        else if (memchr(err.text, '\0', sizeof(err.text)) == NULL)
            abort();
        rq_keyset_free(ks);
        break;
    case 1:
        ks = rq_keyset_parse_list(NULL, text, &err);
        if (ks != NULL)
            check_set(ks, data + 1, size - 1);
        else if (memchr(err.text, '\0', sizeof(err.text)) == NULL)
            abort();
        rq_keyset_free(ks);
        break;
    default: {
        const char *tok;
        size_t len;
        if (rq_auth_bearer_token(text, &tok, &len) == 0 &&
            (len == 0 || tok < text || tok + len > text + strlen(text) ||
             memchr(tok, ' ', len) != NULL))
            abort();
        break;
    }
    }
    free(text);
    return 0;
}
