/* test_linesplit.c - the line splitter: every byte kept, offsets, overlong policies, any
 * chunking. Table cases run three ways (one feed, byte by byte, odd chunks through
 * space/commit) and must give the same records; random streams are checked against a
 * straightforward reference splitter. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linesplit.h"

/* A record with its bytes copied (the splitter's pointers do not outlive the next feed). */
typedef struct rec {
    rq_line_kind_t kind;
    int64_t off, end;
    int newline;
    size_t len;
    char *data; /* NULL for SKIPPED */
} rec_t;

typedef struct recs {
    rec_t *v;
    size_t n, cap;
} recs_t;

static void recs_add(recs_t *r, const rq_line_t *l)
{
    rec_t *x;

    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->v = realloc(r->v, r->cap * sizeof(*r->v));
        cr_assert_not_null(r->v);
    }
    x = &r->v[r->n++];
    x->kind = l->kind;
    x->off = l->offset;
    x->end = l->end;
    x->newline = l->newline;
    x->len = l->len;
    x->data = NULL;
    if (l->data != NULL) {
        x->data = malloc(l->len + 1);
        cr_assert_not_null(x->data);
        memcpy(x->data, l->data, l->len);
    } else {
        cr_assert_eq(l->kind, RQ_LINE_SKIPPED, "only skipped records have no data");
    }
}

static void recs_free(recs_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].data);
    free(r->v);
    memset(r, 0, sizeof(*r));
}

static void drain(rq_linesplit_t *ls, recs_t *out)
{
    rq_line_t l;
    size_t guard = 0;

    while (rq_linesplit_next(ls, &l)) {
        recs_add(out, &l);
        cr_assert_lt(++guard, 10000000u, "next() does not stop");
    }
}

/* Feeds `in` in chunks of the given sizes (cycled); chunk 0 = everything at once. */
static void run_chunked(rq_linesplit_t *ls, const char *in, size_t len, const size_t *chunks,
                        size_t nchunks, int use_space, recs_t *out)
{
    size_t pos = 0, k = 0;

    while (pos < len) {
        size_t c = nchunks ? chunks[k++ % nchunks] : len;
        if (c > len - pos)
            c = len - pos;
        if (use_space) {
            size_t got;
            char *p = rq_linesplit_space(ls, c, &got);
            cr_assert_not_null(p);
            cr_assert(got >= 1 && got <= c);
            memcpy(p, in + pos, got);
            rq_linesplit_commit(ls, got);
            c = got;
        } else {
            cr_assert_eq(rq_linesplit_feed(ls, in + pos, c), 0);
        }
        pos += c;
        drain(ls, out);
    }
    drain(ls, out);
}

static const char *kind_name(rq_line_kind_t k)
{
    switch (k) {
    case RQ_LINE_FULL:
        return "FULL";
    case RQ_LINE_PIECE:
        return "PIECE";
    case RQ_LINE_SKIPPED:
        return "SKIPPED";
    case RQ_LINE_PARTIAL:
        return "PARTIAL";
    }
    return "?";
}

static void expect_same(const recs_t *a, const recs_t *b, const char *what)
{
    cr_assert_eq(a->n, b->n, "%s: %zu records, expected %zu", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const rec_t *x = &a->v[i], *y = &b->v[i];
        cr_assert_eq(x->kind, y->kind, "%s: record %zu is %s, expected %s", what, i,
                     kind_name(x->kind), kind_name(y->kind));
        cr_assert_eq(x->off, y->off, "%s: record %zu offset %lld, expected %lld", what, i,
                     (long long)x->off, (long long)y->off);
        cr_assert_eq(x->end, y->end, "%s: record %zu end %lld, expected %lld", what, i,
                     (long long)x->end, (long long)y->end);
        cr_assert_eq(x->newline, y->newline, "%s: record %zu newline", what, i);
        cr_assert_eq(x->len, y->len, "%s: record %zu len %zu, expected %zu", what, i, x->len,
                     y->len);
        cr_assert_eq(x->data == NULL, y->data == NULL, "%s: record %zu data presence", what, i);
        if (x->data)
            cr_assert(memcmp(x->data, y->data, x->len) == 0, "%s: record %zu bytes differ", what,
                      i);
    }
}

/* ---- table cases ----------------------------------------------------------------------- */

typedef struct exp_rec {
    rq_line_kind_t kind;
    int64_t off, end;
    int newline;
    const char *data; /* NULL: skipped */
    size_t len;
} exp_rec_t;

#define B(s) s, sizeof(s) - 1
#define FULL(o, s)                                                                                 \
    {                                                                                              \
        RQ_LINE_FULL, o, o + (int64_t)sizeof(s), 1, B(s)                                           \
    }
#define PIECE(o, s)                                                                                \
    {                                                                                              \
        RQ_LINE_PIECE, o, o + (int64_t)sizeof(s) - 1, 0, B(s)                                      \
    }
#define LAST(o, s)                                                                                 \
    {                                                                                              \
        RQ_LINE_PIECE, o, o + (int64_t)sizeof(s), 1, B(s)                                          \
    }
#define SKIP(o, n)                                                                                 \
    {                                                                                              \
        RQ_LINE_SKIPPED, o, o + (n) + 1, 1, NULL, n                                                \
    }

typedef struct tcase {
    const char *name;
    size_t max;
    rq_overlong_t policy;
    const char *in;
    size_t in_len;
    exp_rec_t rec[8];
    size_t nrec;
    size_t pending;
    uint64_t overlong;
} tcase_t;

static const tcase_t cases[] = {
    {"empty input", 16, RQ_OVERLONG_SPLIT, B(""), {{0}}, 0, 0, 0},
    {"one line", 16, RQ_OVERLONG_SPLIT, B("a\n"), {FULL(0, "a")}, 1, 0, 0},
    {"empty lines",
     16,
     RQ_OVERLONG_SPLIT,
     B("\n\n\n"),
     {FULL(0, ""), FULL(1, ""), FULL(2, "")},
     3,
     0,
     0},
    {"crlf keeps the \\r",
     16,
     RQ_OVERLONG_SPLIT,
     B("a\r\nb\r\n\r\n"),
     {FULL(0, "a\r"), FULL(3, "b\r"), FULL(6, "\r")},
     3,
     0,
     0},
    {"lone \\r is no line end", 16, RQ_OVERLONG_SPLIT, B("a\rb\n"), {FULL(0, "a\rb")}, 1, 0, 0},
    {"NUL bytes",
     16,
     RQ_OVERLONG_SPLIT,
     B("x\0y\n\0\n\0"),
     {FULL(0, "x\0y"), FULL(4, "\0")},
     2,
     1,
     0},
    {"invalid UTF-8",
     16,
     RQ_OVERLONG_SPLIT,
     B("\xff\xfe\xc0\x80\n\xed\xa0\x80\xf4\x90\n"),
     {FULL(0, "\xff\xfe\xc0\x80"), FULL(5, "\xed\xa0\x80\xf4\x90")},
     2,
     0,
     0},
    {"tabs and spaces kept",
     16,
     RQ_OVERLONG_SPLIT,
     B("\t a \t\n  \n"),
     {FULL(0, "\t a \t"), FULL(6, "  ")},
     2,
     0,
     0},
    {"partial last line kept", 16, RQ_OVERLONG_SPLIT, B("one\ntwo"), {FULL(0, "one")}, 1, 3, 0},
    {"line exactly max (split)", 4, RQ_OVERLONG_SPLIT, B("abcd\n"), {FULL(0, "abcd")}, 1, 0, 0},
    {"line exactly max (skip)",
     4,
     RQ_OVERLONG_SKIP,
     B("abcd\nab\n"),
     {FULL(0, "abcd"), FULL(5, "ab")},
     2,
     0,
     0},
    {"partial of exactly max waits", 4, RQ_OVERLONG_SPLIT, B("abcd"), {{0}}, 0, 4, 0},
    {"max + 1 (split)",
     4,
     RQ_OVERLONG_SPLIT,
     B("abcde\n"),
     {PIECE(0, "abcd"), LAST(4, "e")},
     2,
     0,
     1},
    {"over max (split)",
     4,
     RQ_OVERLONG_SPLIT,
     B("abcdefghij\nxy\n"),
     {PIECE(0, "abcd"), PIECE(4, "efgh"), LAST(8, "ij"), FULL(11, "xy")},
     4,
     0,
     1},
    {"twice max: no empty last piece",
     4,
     RQ_OVERLONG_SPLIT,
     B("abcdefgh\nz\n"),
     {PIECE(0, "abcd"), LAST(4, "efgh"), FULL(9, "z")},
     3,
     0,
     1},
    {"overlong partial (split)", 4, RQ_OVERLONG_SPLIT, B("abcdefg"), {PIECE(0, "abcd")}, 1, 3, 1},
    {"max 1 (split)",
     1,
     RQ_OVERLONG_SPLIT,
     B("ab\n\n"),
     {PIECE(0, "a"), LAST(1, "b"), FULL(3, "")},
     3,
     0,
     1},
    {"over max (skip)",
     4,
     RQ_OVERLONG_SKIP,
     B("abcdefghij\nxy\n"),
     {SKIP(0, 10), FULL(11, "xy")},
     2,
     0,
     1},
    {"max + 1 (skip)",
     4,
     RQ_OVERLONG_SKIP,
     B("ab\nabcde\ncd\n"),
     {FULL(0, "ab"), SKIP(3, 5), FULL(9, "cd")},
     3,
     0,
     1},
    {"two overlong in a row (skip)",
     4,
     RQ_OVERLONG_SKIP,
     B("aaaaaa\nbbbbbbbbbbbb\nc\n"),
     {SKIP(0, 6), SKIP(7, 12), FULL(20, "c")},
     3,
     0,
     2},
    {"overlong partial (skip)", 4, RQ_OVERLONG_SKIP, B("x\nabcdefg"), {FULL(0, "x")}, 1, 7, 1},
    {"overlong with \\r and NUL (split)",
     3,
     RQ_OVERLONG_SPLIT,
     B("\r\0\r\0\r\n"),
     {PIECE(0, "\r\0\r"), LAST(3, "\0\r")},
     2,
     0,
     1},
};

static void check_case(const tcase_t *c, int mode)
{
    static const size_t odd[] = {3, 1, 7, 2, 5};
    static const size_t one[] = {1};
    rq_linesplit_t *ls = rq_linesplit_new(c->max, c->policy);
    recs_t got = {0}, want = {0};
    char what[160];

    cr_assert_not_null(ls);
    snprintf(what, sizeof(what), "%s [%s]", c->name,
             mode == 0   ? "one feed"
             : mode == 1 ? "byte by byte"
                         : "odd chunks via space");
    for (size_t i = 0; i < c->nrec; i++) {
        rq_line_t l = {c->rec[i].data, c->rec[i].len,     c->rec[i].off,
                       c->rec[i].end,  c->rec[i].newline, c->rec[i].kind};
        recs_add(&want, &l);
    }
    if (mode == 0)
        run_chunked(ls, c->in, c->in_len, NULL, 0, 0, &got);
    else if (mode == 1)
        run_chunked(ls, c->in, c->in_len, one, 1, 0, &got);
    else
        run_chunked(ls, c->in, c->in_len, odd, 5, 1, &got);
    expect_same(&got, &want, what);
    cr_expect_eq(rq_linesplit_pending(ls), c->pending, "%s: pending %zu, expected %zu", what,
                 rq_linesplit_pending(ls), c->pending);
    cr_expect_eq(rq_linesplit_overlong(ls), c->overlong, "%s: overlong %llu, expected %llu", what,
                 (unsigned long long)rq_linesplit_overlong(ls), (unsigned long long)c->overlong);
    cr_expect_eq(rq_linesplit_fed(ls), (int64_t)c->in_len, "%s: fed", what);
    cr_expect_eq(rq_linesplit_offset(ls) + (int64_t)c->pending, (int64_t)c->in_len,
                 "%s: offset + pending must be everything fed", what);
    recs_free(&got);
    recs_free(&want);
    rq_linesplit_free(ls);
}

Test(linesplit, table_one_feed)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i], 0);
}

Test(linesplit, table_byte_by_byte)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i], 1);
}

Test(linesplit, table_odd_chunks_through_space)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i], 2);
}

/* ---- reference splitter and random streams --------------------------------------------- */

/* What the policy says, computed on the whole stream at once. */
static void reference(const char *in, size_t len, size_t max, rq_overlong_t pol, recs_t *out,
                      uint64_t *overlong)
{
    size_t pos = 0;

    *overlong = 0;
    for (;;) {
        const char *nl = memchr(in + pos, '\n', len - pos);
        size_t l;
        if (nl == NULL)
            break;
        l = (size_t)(nl - (in + pos));
        if (l <= max) {
            rq_line_t r = {in + pos, l, (int64_t)pos, (int64_t)(pos + l + 1), 1, RQ_LINE_FULL};
            recs_add(out, &r);
        } else if (pol == RQ_OVERLONG_SKIP) {
            rq_line_t r = {NULL, l, (int64_t)pos, (int64_t)(pos + l + 1), 1, RQ_LINE_SKIPPED};
            recs_add(out, &r);
            (*overlong)++;
        } else {
            size_t p = pos, rest = l;
            (*overlong)++;
            while (rest > max) {
                rq_line_t r = {in + p, max, (int64_t)p, (int64_t)(p + max), 0, RQ_LINE_PIECE};
                recs_add(out, &r);
                p += max;
                rest -= max;
            }
            rq_line_t r = {in + p, rest, (int64_t)p, (int64_t)(p + rest + 1), 1, RQ_LINE_PIECE};
            recs_add(out, &r);
        }
        pos += l + 1;
    }
}

/* A stream of `lines` lines of random bytes (every value but '\n' likely), lengths 0..maxlen,
 * ending with a newline. */
static char *random_stream(unsigned seed, size_t lines, size_t maxlen, size_t *len)
{
    size_t cap = lines * (maxlen + 1) + 1, n = 0;
    char *s = malloc(cap);

    cr_assert_not_null(s);
    srand(seed);
    for (size_t i = 0; i < lines; i++) {
        size_t l = (size_t)rand() % (maxlen + 1);
        if (rand() % 10 == 0)
            l = 0;
        for (size_t k = 0; k < l; k++) {
            unsigned char b = (unsigned char)(rand() % 256);
            if (b == '\n')
                b = (unsigned char)(rand() % 2 ? '\r' : '\0');
            s[n++] = (char)b;
        }
        s[n++] = '\n';
    }
    *len = n;
    return s;
}

Test(linesplit, many_lines_across_chunk_boundaries)
{
    static const size_t chunk_sets[][4] = {{1}, {2, 3}, {7}, {64, 1, 4095}, {4096}, {65536}};
    static const size_t chunk_n[] = {1, 2, 1, 3, 1, 1};
    size_t len;
    char *in = random_stream(42, 5000, 80, &len);

    for (int pol = 0; pol < 2; pol++) {
        for (size_t max = 16; max <= 128; max *= 8) {
            recs_t want = {0};
            uint64_t ov;
            reference(in, len, max, (rq_overlong_t)pol, &want, &ov);
            cr_assert_gt(want.n, 5000u - 1);
            for (size_t cs = 0; cs < sizeof(chunk_n) / sizeof(chunk_n[0]); cs++) {
                rq_linesplit_t *ls = rq_linesplit_new(max, (rq_overlong_t)pol);
                recs_t got = {0};
                char what[96];
                snprintf(what, sizeof(what), "policy %d max %zu chunk set %zu", pol, max, cs);
                run_chunked(ls, in, len, chunk_sets[cs], chunk_n[cs], (int)(cs % 2), &got);
                expect_same(&got, &want, what);
                cr_expect_eq(rq_linesplit_overlong(ls), ov, "%s: overlong count", what);
                cr_expect_eq(rq_linesplit_pending(ls), 0u, "%s: pending", what);
                /* records tile the stream */
                for (size_t i = 1; i < got.n; i++)
                    cr_assert_eq(got.v[i].off, got.v[i - 1].end, "%s: gap at %zu", what, i);
                recs_free(&got);
                rq_linesplit_free(ls);
            }
            if (max == 128)
                cr_expect_eq(ov, 0u, "lines are at most 80 bytes");
            else
                cr_expect_gt(ov, 0u, "some lines exceed 16 bytes");
            recs_free(&want);
        }
    }
    free(in);
}

/* Resuming at any record's end (a committed offset) gives the same records from there on. */
Test(linesplit, resume_at_any_record_end_gives_same_records)
{
    size_t len;
    char *in = random_stream(7, 400, 40, &len);

    for (int pol = 0; pol < 2; pol++) {
        rq_linesplit_t *ls = rq_linesplit_new(12, (rq_overlong_t)pol);
        recs_t all = {0};
        run_chunked(ls, in, len, NULL, 0, 0, &all);
        rq_linesplit_free(ls);
        for (size_t i = 0; i < all.n; i += 7) {
            int64_t at = all.v[i].end;
            rq_linesplit_t *r = rq_linesplit_new(12, (rq_overlong_t)pol);
            recs_t tail = {0};
            rq_linesplit_reset(r, at, NULL, 0);
            run_chunked(r, in + at, len - (size_t)at, NULL, 0, 0, &tail);
            cr_assert_eq(tail.n, all.n - i - 1, "policy %d resume at %lld", pol, (long long)at);
            for (size_t k = 0; k < tail.n; k++) {
                const rec_t *x = &tail.v[k], *y = &all.v[i + 1 + k];
                cr_assert_eq(x->off, y->off);
                cr_assert_eq(x->end, y->end);
                cr_assert_eq(x->len, y->len);
                /* a resumed overlong line may come out as a normal line; bytes are the same */
                if (x->data && y->data)
                    cr_assert(memcmp(x->data, y->data, x->len) == 0);
            }
            recs_free(&tail);
            rq_linesplit_free(r);
        }
        recs_free(&all);
    }
    free(in);
}

/* ---- flush, window, reset, accessors --------------------------------------------------- */

Test(linesplit, flush_hands_out_the_partial_line)
{
    rq_linesplit_t *ls = rq_linesplit_new(16, RQ_OVERLONG_SPLIT);
    rq_line_t l;

    cr_assert_eq(rq_linesplit_flush(ls, &l), 0, "nothing buffered");
    cr_assert_eq(rq_linesplit_feed(ls, "ab\ncd", 5), 0);
    cr_assert_eq(rq_linesplit_next(ls, &l), 1);
    cr_assert_eq(rq_linesplit_next(ls, &l), 0);
    cr_assert_eq(rq_linesplit_flush(ls, &l), 1);
    cr_expect_eq(l.kind, RQ_LINE_PARTIAL);
    cr_expect_eq(l.len, 2u);
    cr_expect(memcmp(l.data, "cd", 2) == 0);
    cr_expect_eq(l.offset, 3);
    cr_expect_eq(l.end, 5);
    cr_expect_eq(l.newline, 0);
    cr_expect_eq(rq_linesplit_pending(ls), 0u);
    cr_expect_eq(rq_linesplit_flush(ls, &l), 0);
    /* the stream continues after the flushed bytes */
    cr_assert_eq(rq_linesplit_feed(ls, "e\n", 2), 0);
    cr_assert_eq(rq_linesplit_next(ls, &l), 1);
    cr_expect_eq(l.offset, 5);
    cr_expect_eq(l.len, 1u);
    rq_linesplit_free(ls);
}

Test(linesplit, flush_while_skipping_covers_the_dropped_bytes)
{
    rq_linesplit_t *ls = rq_linesplit_new(2, RQ_OVERLONG_SKIP);
    rq_line_t l;

    cr_assert_eq(rq_linesplit_feed(ls, "x\nabcdef", 8), 0);
    cr_assert_eq(rq_linesplit_next(ls, &l), 1);
    cr_assert_eq(rq_linesplit_next(ls, &l), 0);
    cr_expect_eq(rq_linesplit_overlong(ls), 1u);
    cr_expect_eq(rq_linesplit_pending(ls), 6u);
    cr_assert_eq(rq_linesplit_flush(ls, &l), 1);
    cr_expect_eq(l.kind, RQ_LINE_SKIPPED);
    cr_expect_null(l.data);
    cr_expect_eq(l.offset, 2);
    cr_expect_eq(l.end, 8);
    cr_expect_eq(l.len, 6u);
    cr_expect_eq(rq_linesplit_offset(ls), 8);
    cr_expect_eq(rq_linesplit_pending(ls), 0u);
    rq_linesplit_free(ls);
}

/* A skipped line never holds more than max + 1 bytes plus one chunk in memory. */
Test(linesplit, skip_keeps_memory_bounded)
{
    rq_linesplit_t *ls = rq_linesplit_new(100, RQ_OVERLONG_SKIP);
    char chunk[1000];
    rq_line_t l;

    memset(chunk, 'z', sizeof(chunk));
    for (int i = 0; i < 10000; i++) {
        cr_assert_eq(rq_linesplit_feed(ls, chunk, sizeof(chunk)), 0);
        cr_assert_eq(rq_linesplit_next(ls, &l), 0);
    }
    /* 10 MB fed; the buffer was emptied every time */
    cr_assert_eq(rq_linesplit_feed(ls, "\nok\n", 4), 0);
    cr_assert_eq(rq_linesplit_next(ls, &l), 1);
    cr_expect_eq(l.kind, RQ_LINE_SKIPPED);
    cr_expect_eq(l.len, 10000000u);
    cr_assert_eq(rq_linesplit_next(ls, &l), 1);
    cr_expect_eq(l.len, 2u);
    cr_expect_eq(rq_linesplit_overlong(ls), 1u);
    rq_linesplit_free(ls);
}

static void expect_window(rq_linesplit_t *ls, const char *want, size_t wlen)
{
    unsigned char buf[RQ_LINESPLIT_WINDOW];
    size_t n = rq_linesplit_window(ls, buf);

    cr_assert_eq(n, wlen, "window holds %zu bytes, expected %zu", n, wlen);
    cr_assert(memcmp(buf, want, wlen) == 0, "window bytes differ");
}

Test(linesplit, window_is_the_bytes_before_the_offset)
{
    char line[200], want[RQ_LINESPLIT_WINDOW];
    rq_linesplit_t *ls = rq_linesplit_new(1000, RQ_OVERLONG_SPLIT);
    rq_line_t l;

    expect_window(ls, "", 0);
    rq_linesplit_reset(ls, 100, "xyz", 3);
    expect_window(ls, "xyz", 3);
    cr_assert_eq(rq_linesplit_feed(ls, "ab\ncd", 5), 0);
    cr_assert_eq(rq_linesplit_next(ls, &l), 1);
    cr_expect_eq(l.offset, 100);
    expect_window(ls, "xyzab\n", 6);
    cr_assert_eq(rq_linesplit_next(ls, &l), 0);
    expect_window(ls, "xyzab\n", 6); /* a partial line does not count */

    for (size_t i = 0; i < sizeof(line); i++)
        line[i] = (char)('A' + i % 26);
    line[sizeof(line) - 1] = '\n';
    rq_linesplit_reset(ls, 0, NULL, 0);
    cr_assert_eq(rq_linesplit_feed(ls, line, sizeof(line)), 0);
    cr_assert_eq(rq_linesplit_next(ls, &l), 1);
    memcpy(want, line + sizeof(line) - RQ_LINESPLIT_WINDOW, RQ_LINESPLIT_WINDOW);
    expect_window(ls, want, RQ_LINESPLIT_WINDOW);
    rq_linesplit_free(ls);
}

Test(linesplit, window_covers_skipped_lines)
{
    rq_linesplit_t *ls = rq_linesplit_new(4, RQ_OVERLONG_SKIP);
    const char *in = "hi\nabcdefghij\n";
    recs_t got = {0};

    /* byte by byte: the skipped line's bytes are discarded across many feeds */
    for (size_t i = 0; i < strlen(in); i++) {
        cr_assert_eq(rq_linesplit_feed(ls, in + i, 1), 0);
        drain(ls, &got);
    }
    cr_assert_eq(got.n, 2u);
    cr_expect_eq(got.v[1].kind, RQ_LINE_SKIPPED);
    expect_window(ls, "hi\nabcdefghij\n", 14);
    recs_free(&got);
    rq_linesplit_free(ls);
}

Test(linesplit, reset_drops_buffered_bytes)
{
    rq_linesplit_t *ls = rq_linesplit_new(4, RQ_OVERLONG_SKIP);
    rq_line_t l;

    cr_assert_eq(rq_linesplit_feed(ls, "partial-overlong", 16), 0);
    cr_assert_eq(rq_linesplit_next(ls, &l), 0);
    rq_linesplit_reset(ls, 50, NULL, 0);
    cr_expect_eq(rq_linesplit_pending(ls), 0u);
    cr_expect_eq(rq_linesplit_offset(ls), 50);
    cr_expect_eq(rq_linesplit_fed(ls), 50);
    cr_assert_eq(rq_linesplit_feed(ls, "ok\n", 3), 0);
    cr_assert_eq(rq_linesplit_next(ls, &l), 1);
    cr_expect_eq(l.kind, RQ_LINE_FULL, "no longer skipping after reset");
    cr_expect_eq(l.offset, 50);
    cr_expect_eq(l.end, 53);
    rq_linesplit_free(ls);
}

Test(linesplit, records_of_one_feed_stay_valid_together)
{
    rq_linesplit_t *ls = rq_linesplit_new(16, RQ_OVERLONG_SPLIT);
    rq_line_t a, b, c;

    cr_assert_eq(rq_linesplit_feed(ls, "one\ntwo\nthree\n", 14), 0);
    cr_assert_eq(rq_linesplit_next(ls, &a), 1);
    cr_assert_eq(rq_linesplit_next(ls, &b), 1);
    cr_assert_eq(rq_linesplit_next(ls, &c), 1);
    cr_expect(memcmp(a.data, "one", 3) == 0);
    cr_expect(memcmp(b.data, "two", 3) == 0);
    cr_expect(memcmp(c.data, "three", 5) == 0);
    rq_linesplit_free(ls);
}

Test(linesplit, new_and_free_edge_cases)
{
    cr_expect_null(rq_linesplit_new(0, RQ_OVERLONG_SPLIT));
    rq_linesplit_free(NULL);
}
