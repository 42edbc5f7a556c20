/* tmatch.c - AMQP topic binding patterns, matched as RabbitMQ's topic exchange does.
 *
 * Words are split on '.' exactly as RabbitMQ splits them (rabbit_exchange_type_topic's
 * split_topic_key): an empty string has no word at all, and every '.' ends a word, so "a..b"
 * is "a", "", "b" and "a." is "a", "". '*' is exactly one word (an empty one too), '#' zero or
 * more; any other word, "a*" included, is literal.
 *
 * Matching is the glob algorithm over words ('#' the star, '*' the single-item wildcard)
 * with backtracking to the last '#' only: when a later word fails, the last '#' takes one
 * more key word and matching resumes after it. Earlier '#'s never need to be revisited (the
 * last one can absorb whatever they would have), so the work is O(words(pattern) *
 * words(key)) even for "#.#.#..." patterns, with no memory. */
#include "tmatch.h"

#include <string.h>

#include "util.h"

#define TM_END ((size_t)-1) /* past the last word */

/* The position of the first word of s (length len): 0, or TM_END when s is empty. */
static size_t first_word(size_t len)
{
    return len == 0 ? TM_END : 0;
}

/* The position of the word after the one at i in s: after its '.', or TM_END. */
static size_t next_word(const char *s, size_t len, size_t i)
{
    const char *dot = memchr(s + i, '.', len - i);

    return dot != NULL ? (size_t)(dot - s) + 1 : TM_END;
}

/* The length of the word at i. */
static size_t word_len(const char *s, size_t len, size_t i)
{
    const char *dot = memchr(s + i, '.', len - i);

    return dot != NULL ? (size_t)(dot - s) - i : len - i;
}

/* 1 when the word at i of s is exactly c ('#' or '*'). */
static int word_is(const char *s, size_t len, size_t i, char c)
{
    return s[i] == c && word_len(s, len, i) == 1;
}

int rq_tmatch_check(const char *pattern, char *err, size_t errlen)
{
    size_t len = pattern != NULL ? strlen(pattern) : 0;

    if (len == 0 || len > 255) {
        rq_errf(err, errlen, "a binding pattern must be 1 to 255 bytes");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)pattern[i];
        if (ch < 0x20 || ch == 0x7f) {
            rq_errf(err, errlen, "a binding pattern may not hold control characters");
            return -1;
        }
    }
    if (!rq_utf8_valid(pattern, len)) {
        rq_errf(err, errlen, "a binding pattern must be valid UTF-8");
        return -1;
    }
    return 0;
}

int rq_tmatch(const char *pattern, const char *key)
{
    size_t plen = strlen(pattern), klen = strlen(key);
    size_t p = first_word(plen), k = first_word(klen);
    size_t star_p = TM_END, star_k = TM_END; /* the last '#' and the key word it stopped at */

    while (k != TM_END) {
        if (p != TM_END && word_is(pattern, plen, p, '#')) {
            star_p = p; /* first try: '#' takes no word */
            star_k = k;
            p = next_word(pattern, plen, p);
            continue;
        }
        if (p != TM_END) {
            size_t pl = word_len(pattern, plen, p), kl = word_len(key, klen, k);
            if ((pl == 1 && pattern[p] == '*') ||
                (pl == kl && memcmp(pattern + p, key + k, pl) == 0)) {
                p = next_word(pattern, plen, p);
                k = next_word(key, klen, k);
                continue;
            }
        }
        if (star_p == TM_END)
            return 0;
        star_k = next_word(key, klen, star_k); /* the last '#' takes one more word */
        k = star_k;
        p = next_word(pattern, plen, star_p);
    }
    while (p != TM_END && word_is(pattern, plen, p, '#'))
        p = next_word(pattern, plen, p);
    return p == TM_END;
}
