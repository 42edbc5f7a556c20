/* fuzz_jwt.c - libFuzzer harness: JWKS texts and JWTs. The first byte picks the parser
 * (0: a JWKS, 1: a token verified against a fixed JWKS of one RSA and one EC key, 2: base64url);
 * the rest is the input. Checks invariants: a parsed JWKS holds 1..RQ_JWKS_MAX_KEYS keys, an
 * error text is terminated, a token is never accepted (no private key is known, so no input
 * can carry a valid signature) and leaves no claims behind, and base64url output fits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

/* RFC 7515 appendix A.2 (RSA) and A.3 (EC P-256) public keys. */
static const char fixed_jwks[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"e\":\"AQAB\",\"n\":"
    "\"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4"
    "d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexM"
    "dbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK"
    "-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ\"},"
    "{\"kty\":\"EC\",\"kid\":\"e\",\"crv\":\"P-256\","
    "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
    "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}]}";

static rq_jwks_t *keys;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const rq_jwt_policy_t pol = {"iss", "aud", "scope", 60};
    char err[200];
    unsigned char out[RQ_JWT_MAX_LEN];
    rq_jwt_claims_t cl;
    size_t n;

    if (keys == NULL) {
        keys = rq_jwks_parse(fixed_jwks, strlen(fixed_jwks), err, sizeof(err));
        if (keys == NULL || rq_jwks_count(keys) != 2)
            abort();
    }
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0: {
        rq_jwks_t *ks = rq_jwks_parse((const char *)data + 1, size - 1, err, sizeof(err));
        if (ks != NULL && (rq_jwks_count(ks) == 0 || rq_jwks_count(ks) > RQ_JWKS_MAX_KEYS))
            abort();
        if (ks == NULL && memchr(err, '\0', sizeof(err)) == NULL)
            abort();
        rq_jwks_free(ks);
        break;
    }
    case 1:
        if (rq_jwt_verify(keys, &pol, (const char *)data + 1, size - 1, 1700000000, &cl) ==
                RQ_JWT_OK ||
            cl.scopes != NULL)
            abort();
        (void)rq_jwt_looks_like((const char *)data + 1, size - 1);
        break;
    default:
        if (rq_b64url_decode((const char *)data + 1, size - 1, out, sizeof(out), &n) == 0 &&
            n > (size - 1) * 3 / 4)
            abort();
        break;
    }
    return 0;
}
