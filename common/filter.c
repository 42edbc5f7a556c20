/* filter.c - subscription filters (filter.h): a recursive-descent parser into a small array
 * of nodes, and an evaluator that walks it without allocating.
 *
 * A parsed filter is four arrays: nodes (at most RQ_FILTER_MAX_NODES; and/or nodes keep their
 * operands as a sibling list, so "a && b && c ..." is one node with n children, not a chain n
 * deep), path segments, a byte pool holding decoded string literals and key names, and the
 * KMP failure tables of contains() needles (so that contains() is linear in the value).
 * Everything is indexed, nothing points into the text. The evaluation recursion follows the
 * node tree, whose height the nesting limit bounds (each '(' or '!' level adds at most an
 * or-, an and- and a not-node). */
#include "filter.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define F_NONE 0xffffu     /* no node */
#define F_INDEX_MAX 999999 /* largest array index in a path */
#define F_NUMBER_MAX 64    /* longest number literal */

enum ntype { N_OR, N_AND, N_NOT, N_CMP, N_IN, N_EXISTS, N_CONTAINS, N_STARTS, N_LIT };
enum op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE };
enum root { R_PAYLOAD, R_HEADERS, R_ROUTING_KEY, R_ID };
enum lkind { L_STR, L_INT, L_REAL, L_TRUE, L_FALSE, L_NULL };

typedef struct seg {
    uint32_t off, len; /* a key name in the pool */
    uint32_t index;    /* an array index */
    uint8_t is_index;
} seg_t;

typedef struct node {
    uint8_t type, op, root, lkind;
    uint16_t first;      /* and/or/not: the first operand; in: the first list literal */
    uint16_t next;       /* the next operand (or list literal) of the parent */
    uint32_t seg0, nseg; /* the path: segs[seg0 .. seg0 + nseg) */
    union {
        json_int_t i;
        double d;
        struct {
            uint32_t off, len; /* a string in the pool */
            uint32_t kmp;      /* contains(): its failure table at kmp[kmp] */
        } s;
    } v;
} node_t;

struct rq_filter {
    node_t *nodes;
    seg_t *segs;
    char *pool;
    uint32_t *kmp;
    uint16_t top;
};

/* ---- parsing ---- */

typedef struct parser {
    const char *s;
    size_t len, i;
    node_t *nodes; /* RQ_FILTER_MAX_NODES */
    size_t n_nodes;
    seg_t *segs; /* len / 2 + 1: a segment takes at least 2 bytes */
    size_t n_segs;
    char *pool; /* len + 1: decoding never grows a literal */
    size_t pool_len;
    uint32_t *kmp; /* len + 1 */
    size_t n_kmp;
    char *err;
    size_t errlen, *pos;
    int failed;
} parser_t;

/* Records the first error (at byte pos) and returns F_NONE. */
__attribute__((format(printf, 3, 4))) static uint16_t fail(parser_t *p, size_t pos, const char *fmt,
                                                           ...)
{
    va_list ap;

    if (p->failed)
        return F_NONE;
    p->failed = 1;
    *p->pos = pos;
    va_start(ap, fmt);
    rq_verrf(p->err, p->errlen, fmt, ap);
    va_end(ap);
    return F_NONE;
}

/* What is at p->i, for an error: "'x'", "byte 0xNN" or "the end of the filter". */
static void describe(const parser_t *p, char *buf, size_t len)
{
    unsigned char ch;

    if (p->i >= p->len) {
        snprintf(buf, len, "the end of the filter");
        return;
    }
    ch = (unsigned char)p->s[p->i];
    if (ch >= 0x20 && ch < 0x7f)
        snprintf(buf, len, "'%c'", ch);
    else
        snprintf(buf, len, "byte 0x%02x", ch);
}

static uint16_t fail_expected(parser_t *p, const char *what)
{
    char got[32];

    describe(p, got, sizeof(got));
    return fail(p, p->i, "expected %s, found %s", what, got);
}

static void skip_ws(parser_t *p)
{
    while (p->i < p->len &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int at(const parser_t *p, const char *tok)
{
    size_t n = strlen(tok);

    return p->len - p->i >= n && memcmp(p->s + p->i, tok, n) == 0;
}

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Length of the identifier at p->i ([A-Za-z_][A-Za-z0-9_]*), 0 when none. */
static size_t ident_len(const parser_t *p)
{
    size_t j = p->i;

    if (j >= p->len || !is_alpha(p->s[j]))
        return 0;
    while (j < p->len && (is_alpha(p->s[j]) || is_digit(p->s[j])))
        j++;
    return j - p->i;
}

static int word_eq(const parser_t *p, size_t n, const char *w)
{
    return strlen(w) == n && memcmp(p->s + p->i, w, n) == 0;
}

static uint16_t new_node(parser_t *p, enum ntype type)
{
    node_t *n;

    if (p->n_nodes >= RQ_FILTER_MAX_NODES)
        return fail(p, p->i, "too many terms (at most %d)", RQ_FILTER_MAX_NODES);
    n = &p->nodes[p->n_nodes];
    memset(n, 0, sizeof(*n));
    n->type = (uint8_t)type;
    n->first = F_NONE;
    n->next = F_NONE;
    return (uint16_t)p->n_nodes++;
}

/* Four hex digits at s (at least 4 bytes), or -1. */
static long hex4(const char *s)
{
    long v = 0;

    for (int k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (is_digit(c))
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

/* Appends code point cp as UTF-8 to the pool. */
static void pool_utf8(parser_t *p, unsigned long cp)
{
    char *o = p->pool + p->pool_len;

    if (cp < 0x80) {
        o[0] = (char)cp;
        p->pool_len += 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        p->pool_len += 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        p->pool_len += 3;
    } else {
        o[0] = (char)(0xf0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[3] = (char)(0x80 | (cp & 0x3f));
        p->pool_len += 4;
    }
}

/* Parses the string literal at p->i (a '"') into the pool: *off, *len. Returns 0 or -1. */
static int parse_string(parser_t *p, uint32_t *off, uint32_t *len)
{
    size_t start = p->i;

    *off = (uint32_t)p->pool_len;
    p->i++;
    for (;;) {
        unsigned char c;
        if (p->i >= p->len) {
            fail(p, start, "unterminated string");
            return -1;
        }
        c = (unsigned char)p->s[p->i];
        if (c == '"')
            break;
        if (c < 0x20) {
            fail(p, p->i, "control character in a string (escape it)");
            return -1;
        }
        if (c != '\\') {
            p->pool[p->pool_len++] = (char)c;
            p->i++;
            continue;
        }
        if (p->i + 1 >= p->len) {
            fail(p, start, "unterminated string");
            return -1;
        }
        char e = p->s[p->i + 1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e != '\0' && simple != NULL) {
            static const char out[] = "\"\\/\b\f\n\r\t";
            p->pool[p->pool_len++] = out[simple - "\"\\/bfnrt"];
            p->i += 2;
            continue;
        }
        if (e != 'u') {
            fail(p, p->i, "invalid escape in a string");
            return -1;
        }
        long hi = p->len - p->i >= 6 ? hex4(p->s + p->i + 2) : -1, lo;
        unsigned long cp;
        if (hi < 0) {
            fail(p, p->i, "invalid \\u escape (4 hex digits)");
            return -1;
        }
        if (hi >= 0xdc00 && hi <= 0xdfff) {
            fail(p, p->i, "invalid \\u escape (a lone low surrogate)");
            return -1;
        }
        if (hi >= 0xd800 && hi <= 0xdbff) {
            if (p->len - p->i < 12 || p->s[p->i + 6] != '\\' || p->s[p->i + 7] != 'u' ||
                (lo = hex4(p->s + p->i + 8)) < 0xdc00 || lo > 0xdfff) {
                fail(p, p->i, "invalid \\u escape (a high surrogate without its low one)");
                return -1;
            }
            cp = 0x10000 + (((unsigned long)hi - 0xd800) << 10) + ((unsigned long)lo - 0xdc00);
            p->i += 12;
        } else {
            cp = (unsigned long)hi;
            p->i += 6;
        }
        pool_utf8(p, cp);
    }
    p->i++; /* the closing quote */
    *len = (uint32_t)(p->pool_len - *off);
    if (!rq_utf8_valid(p->pool + *off, *len)) {
        fail(p, start, "invalid UTF-8 in a string");
        return -1;
    }
    return 0;
}

/* Parses the number literal at p->i into n (lkind, v). Returns 0 or -1. */
static int parse_number(parser_t *p, node_t *n)
{
    size_t start = p->i, j = p->i;
    int real = 0;
    char buf[F_NUMBER_MAX + 1], *end;

    if (j < p->len && p->s[j] == '-')
        j++;
    if (j >= p->len || !is_digit(p->s[j]))
        goto bad;
    if (p->s[j] == '0')
        j++;
    else
        while (j < p->len && is_digit(p->s[j]))
            j++;
    if (j < p->len && p->s[j] == '.') {
        real = 1;
        if (++j >= p->len || !is_digit(p->s[j]))
            goto bad;
        while (j < p->len && is_digit(p->s[j]))
            j++;
    }
    if (j < p->len && (p->s[j] == 'e' || p->s[j] == 'E')) {
        real = 1;
        j++;
        if (j < p->len && (p->s[j] == '+' || p->s[j] == '-'))
            j++;
        if (j >= p->len || !is_digit(p->s[j]))
            goto bad;
        while (j < p->len && is_digit(p->s[j]))
            j++;
    }
    if (j < p->len && (is_alpha(p->s[j]) || is_digit(p->s[j]) || p->s[j] == '.'))
        goto bad; /* "01", "1x", "1.2.3" */
    if (j - start > F_NUMBER_MAX) {
        fail(p, start, "number longer than %d characters", F_NUMBER_MAX);
        return -1;
    }
    memcpy(buf, p->s + start, j - start);
    buf[j - start] = '\0';
    errno = 0;
    if (!real) {
        long long v = strtoll(buf, &end, 10);
        if (errno == 0) {
            n->lkind = L_INT;
            n->v.i = (json_int_t)v;
            p->i = j;
            return 0;
        }
        errno = 0; /* beyond 64 bits: a real, as JSON parsers read it */
    }
    double d = strtod(buf, &end);
    if (errno == ERANGE && !isfinite(d)) {
        fail(p, start, "number out of range");
        return -1;
    }
    n->lkind = L_REAL;
    n->v.d = d;
    p->i = j;
    return 0;

bad:
    fail(p, start, "invalid number");
    return -1;
}

/* Parses a literal (string, number, true, false, null) into n. Returns 0 or -1. */
static int parse_literal(parser_t *p, node_t *n)
{
    size_t id;

    skip_ws(p);
    if (p->i < p->len && p->s[p->i] == '"') {
        n->lkind = L_STR;
        return parse_string(p, &n->v.s.off, &n->v.s.len);
    }
    if (p->i < p->len && (p->s[p->i] == '-' || is_digit(p->s[p->i])))
        return parse_number(p, n);
    id = ident_len(p);
    if (id > 0 && (word_eq(p, id, "true") || word_eq(p, id, "false") || word_eq(p, id, "null"))) {
        n->lkind = word_eq(p, id, "true") ? L_TRUE : word_eq(p, id, "false") ? L_FALSE : L_NULL;
        p->i += id;
        return 0;
    }
    fail_expected(p, "a literal (a string, a number, true, false or null)");
    return -1;
}

/* Parses the root word of a path at p->i (payload, headers, routing_key, id) into n->root
 * and moves past it. Returns 0 or -1. */
static int parse_root(parser_t *p, node_t *n)
{
    size_t start = p->i, id = ident_len(p);

    if (id == 0) {
        fail_expected(p, "a field (payload, headers, routing_key or id)");
        return -1;
    }
    if (word_eq(p, id, "payload"))
        n->root = R_PAYLOAD;
    else if (word_eq(p, id, "headers"))
        n->root = R_HEADERS;
    else if (word_eq(p, id, "routing_key"))
        n->root = R_ROUTING_KEY;
    else if (word_eq(p, id, "id"))
        n->root = R_ID;
    else {
        fail(p, start, "unknown field '%.*s' (expected payload, headers, routing_key or id)",
             (int)(id > 40 ? 40 : id), p->s + start);
        return -1;
    }
    p->i += id;
    return 0;
}

/* Parses the path at p->i into n (root, seg0, nseg). Returns 0 or -1. */
static int parse_path(parser_t *p, node_t *n)
{
    if (parse_root(p, n) != 0)
        return -1;
    n->seg0 = (uint32_t)p->n_segs;
    n->nseg = 0;
    while (p->i < p->len && (p->s[p->i] == '.' || p->s[p->i] == '[')) {
        seg_t *sg = &p->segs[p->n_segs];
        size_t at_seg = p->i;
        if (n->root == R_ROUTING_KEY || n->root == R_ID) {
            fail(p, at_seg, "%s is a string: it has no fields",
                 n->root == R_ID ? "id" : "routing_key");
            return -1;
        }
        memset(sg, 0, sizeof(*sg));
        if (p->s[p->i] == '.') {
            size_t j = ++p->i;
            while (j < p->len && (is_alpha(p->s[j]) || is_digit(p->s[j]) || p->s[j] == '-'))
                j++;
            if (j == p->i) {
                fail_expected(p, "a field name after '.'");
                return -1;
            }
            sg->off = (uint32_t)p->pool_len;
            sg->len = (uint32_t)(j - p->i);
            memcpy(p->pool + p->pool_len, p->s + p->i, j - p->i);
            p->pool_len += j - p->i;
            p->i = j;
        } else {
            p->i++;
            skip_ws(p);
            if (p->i < p->len && p->s[p->i] == '"') {
                if (parse_string(p, &sg->off, &sg->len) != 0)
                    return -1;
            } else if (p->i < p->len && is_digit(p->s[p->i])) {
                size_t j = p->i;
                unsigned long v = 0;
                while (j < p->len && is_digit(p->s[j])) {
                    v = v * 10 + (unsigned long)(p->s[j] - '0');
                    if (v > F_INDEX_MAX) {
                        fail(p, p->i, "array index larger than %d", F_INDEX_MAX);
                        return -1;
                    }
                    j++;
                }
                if (j - p->i > 1 && p->s[p->i] == '0') {
                    fail(p, p->i, "invalid array index");
                    return -1;
                }
                sg->is_index = 1;
                sg->index = (uint32_t)v;
                p->i = j;
            } else {
                fail_expected(p, "an array index or a quoted key after '['");
                return -1;
            }
            skip_ws(p);
            if (p->i >= p->len || p->s[p->i] != ']') {
                fail_expected(p, "']'");
                return -1;
            }
            p->i++;
        }
        p->n_segs++;
        n->nseg++;
    }
    return 0;
}

/* Builds the KMP failure table of the needle of n into p->kmp. */
static void kmp_table(parser_t *p, node_t *n)
{
    const char *s = p->pool + n->v.s.off;
    uint32_t m = n->v.s.len, *t = p->kmp + p->n_kmp, k = 0;

    n->v.s.kmp = (uint32_t)p->n_kmp;
    p->n_kmp += m;
    if (m == 0)
        return;
    t[0] = 0;
    for (uint32_t q = 1; q < m; q++) {
        while (k > 0 && s[k] != s[q])
            k = t[k - 1];
        if (s[k] == s[q])
            k++;
        t[q] = k;
    }
}

/* Parses exists(path), contains(path, "s") or starts_with(path, "s"); p->i at the name. */
static uint16_t parse_function(parser_t *p, size_t id)
{
    size_t start = p->i;
    enum ntype type;
    uint16_t ni;
    node_t *n;

    if (word_eq(p, id, "exists"))
        type = N_EXISTS;
    else if (word_eq(p, id, "contains"))
        type = N_CONTAINS;
    else if (word_eq(p, id, "starts_with"))
        type = N_STARTS;
    else
        return fail(p, start, "unknown function '%.*s' (expected exists, contains or starts_with)",
                    (int)(id > 40 ? 40 : id), p->s + start);
    if ((ni = new_node(p, type)) == F_NONE)
        return F_NONE;
    n = &p->nodes[ni];
    p->i += id;
    skip_ws(p);
    p->i++; /* '(' (checked by the caller) */
    skip_ws(p);
    if (parse_path(p, n) != 0)
        return F_NONE;
    skip_ws(p);
    if (type != N_EXISTS) {
        if (p->i >= p->len || p->s[p->i] != ',')
            return fail_expected(p, "','");
        p->i++;
        skip_ws(p);
        if (p->i >= p->len || p->s[p->i] != '"')
            return fail_expected(p, "a string");
        n->lkind = L_STR;
        if (parse_string(p, &n->v.s.off, &n->v.s.len) != 0)
            return F_NONE;
        if (type == N_CONTAINS)
            kmp_table(p, n);
        skip_ws(p);
    }
    if (p->i >= p->len || p->s[p->i] != ')')
        return fail_expected(p, "')'");
    p->i++;
    return ni;
}

/* Parses `path op literal` or `path in [literal, ...]`; p->i at the path. */
static uint16_t parse_comparison(parser_t *p)
{
    uint16_t ni = new_node(p, N_CMP), last = F_NONE;
    node_t *n;
    size_t id, op_at;

    if (ni == F_NONE)
        return F_NONE;
    n = &p->nodes[ni];
    if (parse_path(p, n) != 0)
        return F_NONE;
    skip_ws(p);
    op_at = p->i;
    if (at(p, "==") || at(p, "!=") || at(p, "<=") || at(p, ">=")) {
        n->op = at(p, "==") ? OP_EQ : at(p, "!=") ? OP_NE : at(p, "<=") ? OP_LE : OP_GE;
        p->i += 2;
    } else if (at(p, "<") || at(p, ">")) {
        n->op = at(p, "<") ? OP_LT : OP_GT;
        p->i += 1;
    } else if ((id = ident_len(p)) > 0 && word_eq(p, id, "in")) {
        n->type = N_IN;
        p->i += id;
        skip_ws(p);
        if (p->i >= p->len || p->s[p->i] != '[')
            return fail_expected(p, "'[' after in");
        p->i++;
        skip_ws(p);
        if (p->i < p->len && p->s[p->i] == ']') {
            p->i++;
            return ni;
        }
        for (;;) {
            uint16_t li = new_node(p, N_LIT);
            if (li == F_NONE || parse_literal(p, &p->nodes[li]) != 0)
                return F_NONE;
            if (last == F_NONE)
                p->nodes[ni].first = li;
            else
                p->nodes[last].next = li;
            last = li;
            skip_ws(p);
            if (p->i < p->len && p->s[p->i] == ',') {
                p->i++;
                continue;
            }
            if (p->i < p->len && p->s[p->i] == ']') {
                p->i++;
                return ni;
            }
            return fail_expected(p, "',' or ']'");
        }
    } else {
        return fail_expected(p, "a comparison (== != < <= > >= in)");
    }
    if (parse_literal(p, n) != 0)
        return F_NONE;
    if (n->op != OP_EQ && n->op != OP_NE && n->lkind != L_STR && n->lkind != L_INT &&
        n->lkind != L_REAL)
        return fail(p, op_at, "< <= > >= compare numbers or strings, not true, false or null");
    return ni;
}

static uint16_t parse_or(parser_t *p, int depth);

static uint16_t parse_unary(parser_t *p, int depth)
{
    size_t id;

    skip_ws(p);
    if (p->i < p->len && (p->s[p->i] == '!' || p->s[p->i] == '(')) {
        char c = p->s[p->i];
        uint16_t ni = F_NONE, child;
        if (depth >= RQ_FILTER_MAX_DEPTH)
            return fail(p, p->i, "nested deeper than %d levels", RQ_FILTER_MAX_DEPTH);
        if (c == '!' && (ni = new_node(p, N_NOT)) == F_NONE)
            return F_NONE;
        p->i++;
        child = c == '!' ? parse_unary(p, depth + 1) : parse_or(p, depth + 1);
        if (child == F_NONE)
            return F_NONE;
        if (c == '!') {
            p->nodes[ni].first = child;
            return ni;
        }
        skip_ws(p);
        if (p->i >= p->len || p->s[p->i] != ')')
            return fail_expected(p, "')'");
        p->i++;
        return child;
    }
    if (p->i >= p->len)
        return fail(p, p->i, "unexpected end of the filter (expected an expression)");
    id = ident_len(p);
    if (id > 0) {
        size_t save = p->i;
        p->i += id;
        skip_ws(p);
        int call = p->i < p->len && p->s[p->i] == '(';
        p->i = save;
        if (call)
            return parse_function(p, id);
        return parse_comparison(p);
    }
    return fail_expected(p, "a field, a function, '!' or '('");
}

/* Parses operands separated by tok ("&&" or "||") with sub into one node of type. */
static uint16_t parse_list(parser_t *p, int depth, const char *tok, enum ntype type,
                           uint16_t (*sub)(parser_t *, int))
{
    uint16_t first = sub(p, depth), list, last;

    if (first == F_NONE)
        return F_NONE;
    skip_ws(p);
    if (!at(p, tok))
        return first;
    if ((list = new_node(p, type)) == F_NONE)
        return F_NONE;
    p->nodes[list].first = first;
    last = first;
    while (at(p, tok)) {
        uint16_t next;
        p->i += 2;
        if ((next = sub(p, depth)) == F_NONE)
            return F_NONE;
        p->nodes[last].next = next;
        last = next;
        skip_ws(p);
    }
    return list;
}

static uint16_t parse_and(parser_t *p, int depth)
{
    return parse_list(p, depth, "&&", N_AND, parse_unary);
}

static uint16_t parse_or(parser_t *p, int depth)
{
    return parse_list(p, depth, "||", N_OR, parse_and);
}

/* Moves a[0..n) of size sz into a new array of exactly n entries (or keeps a when the
 * shrink fails); *a becomes NULL. */
static void *shrink(void **a, size_t n, size_t sz)
{
    void *r = realloc(*a, n > 0 ? n * sz : 1);

    if (r == NULL)
        r = *a;
    *a = NULL;
    return r;
}

rq_filter_t *rq_filter_parse(const char *text, size_t len, char *err, size_t errlen, size_t *pos)
{
    parser_t p = {0};
    rq_filter_t *f = NULL;
    size_t dummy;
    uint16_t top;

    p.pos = pos != NULL ? pos : &dummy;
    *p.pos = 0;
    p.err = err;
    p.errlen = errlen;
    if (text == NULL)
        len = 0;
    if (len > RQ_FILTER_MAX_BYTES) {
        fail(&p, RQ_FILTER_MAX_BYTES, "longer than %d bytes", RQ_FILTER_MAX_BYTES);
        return NULL;
    }
    p.s = text != NULL ? text : "";
    p.len = len;
    p.nodes = malloc(RQ_FILTER_MAX_NODES * sizeof(*p.nodes));
    p.segs = malloc((len / 2 + 1) * sizeof(*p.segs));
    p.pool = malloc(len + 1);
    p.kmp = malloc((len + 1) * sizeof(*p.kmp));
    f = calloc(1, sizeof(*f));
    if (p.nodes == NULL || p.segs == NULL || p.pool == NULL || p.kmp == NULL || f == NULL) {
        fail(&p, 0, "out of memory");
        goto err;
    }
    top = parse_or(&p, 0);
    if (top == F_NONE)
        goto err;
    skip_ws(&p);
    if (p.i < p.len) {
        fail_expected(&p, "'&&', '||' or the end of the filter");
        goto err;
    }
    f->top = top;
    f->nodes = shrink((void **)&p.nodes, p.n_nodes, sizeof(node_t));
    f->segs = shrink((void **)&p.segs, p.n_segs, sizeof(seg_t));
    f->pool = shrink((void **)&p.pool, p.pool_len, 1);
    f->kmp = shrink((void **)&p.kmp, p.n_kmp, sizeof(uint32_t));
    return f;

err:
    free(p.nodes);
    free(p.segs);
    free(p.pool);
    free(p.kmp);
    free(f);
    return NULL;
}

void rq_filter_free(rq_filter_t *f)
{
    if (f == NULL)
        return;
    free(f->nodes);
    free(f->segs);
    free(f->pool);
    free(f->kmp);
    free(f);
}

/* ---- evaluation ---- */

enum vkind { V_MISSING, V_NULL, V_BOOL, V_INT, V_REAL, V_STR, V_ARRAY, V_OBJECT };

/* A value looked up in a message. */
typedef struct val {
    enum vkind kind;
    int b;
    json_int_t i;
    double d;
    const char *s;
    size_t n;
    const json_t *j;
} val_t;

static void val_of_json(const json_t *j, val_t *v)
{
    v->j = j;
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        v->kind = V_OBJECT;
        break;
    case JSON_ARRAY:
        v->kind = V_ARRAY;
        break;
    case JSON_STRING:
        v->kind = V_STR;
        v->s = json_string_value(j);
        v->n = json_string_length(j);
        break;
    case JSON_INTEGER:
        v->kind = V_INT;
        v->i = json_integer_value(j);
        break;
    case JSON_REAL:
        v->kind = V_REAL;
        v->d = json_real_value(j);
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        v->kind = V_BOOL;
        v->b = json_is_true(j);
        break;
    default:
        v->kind = V_NULL;
        break;
    }
}

/* Looks up n's path in m. */
static void resolve(const rq_filter_t *f, const node_t *n, const rq_filter_msg_t *m, val_t *v)
{
    const json_t *j;

    memset(v, 0, sizeof(*v));
    v->kind = V_MISSING;
    if (n->root == R_ROUTING_KEY || n->root == R_ID) {
        const char *s = n->root == R_ID ? m->id : m->routing_key;
        if (s != NULL) {
            v->kind = V_STR;
            v->s = s;
            v->n = strlen(s);
        }
        return;
    }
    j = n->root == R_PAYLOAD ? m->payload : m->headers;
    for (uint32_t k = 0; k < n->nseg && j != NULL; k++) {
        const seg_t *sg = &f->segs[n->seg0 + k];
        if (sg->is_index)
            j = json_is_array(j) ? json_array_get(j, sg->index) : NULL;
        else
            j = json_is_object(j) ? json_object_getn(j, f->pool + sg->off, sg->len) : NULL;
    }
    if (j != NULL)
        val_of_json(j, v);
}

static int is_num(enum vkind k)
{
    return k == V_INT || k == V_REAL;
}

static int lit_is_num(const node_t *l)
{
    return l->lkind == L_INT || l->lkind == L_REAL;
}

/* Compares v with literal l: 1 with *c (<0, 0, >0) when they are of one type that orders
 * (numbers, strings), 2 when of one unordered type with *c 0 (equal) or 1, else 0. */
static int compare(const rq_filter_t *f, const val_t *v, const node_t *l, int *c)
{
    if (v->kind == V_STR && l->lkind == L_STR) {
        size_t ln = l->v.s.len, k = v->n < ln ? v->n : ln;
        int r = k > 0 ? memcmp(v->s, f->pool + l->v.s.off, k) : 0;
        *c = r != 0 ? r : v->n < ln ? -1 : v->n > ln ? 1 : 0;
        return 1;
    }
    if (is_num(v->kind) && lit_is_num(l)) {
        if (v->kind == V_INT && l->lkind == L_INT) {
            *c = v->i < l->v.i ? -1 : v->i > l->v.i;
        } else {
            double a = v->kind == V_INT ? (double)v->i : v->d;
            double b = l->lkind == L_INT ? (double)l->v.i : l->v.d;
            *c = a < b ? -1 : a > b;
        }
        return 1;
    }
    if (v->kind == V_BOOL && (l->lkind == L_TRUE || l->lkind == L_FALSE)) {
        *c = v->b != (l->lkind == L_TRUE);
        return 2;
    }
    if (v->kind == V_NULL && l->lkind == L_NULL) {
        *c = 0;
        return 2;
    }
    return 0;
}

static int equal(const rq_filter_t *f, const val_t *v, const node_t *l)
{
    int c;

    return compare(f, v, l, &c) != 0 && c == 0;
}

/* 1 when needle (with KMP table t) occurs in s[0..n). */
static int kmp_find(const char *s, size_t n, const char *needle, uint32_t m, const uint32_t *t)
{
    uint32_t q = 0;

    if (m == 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        while (q > 0 && needle[q] != s[i])
            q = t[q - 1];
        if (needle[q] == s[i] && ++q == m)
            return 1;
    }
    return 0;
}

static int eval_leaf(const rq_filter_t *f, const node_t *n, const rq_filter_msg_t *m)
{
    val_t v;
    int c = 0, r;

    resolve(f, n, m, &v);
    switch (n->type) {
    case N_EXISTS:
        return v.kind != V_MISSING;
    case N_STARTS:
        return v.kind == V_STR && v.n >= n->v.s.len &&
               memcmp(v.s, f->pool + n->v.s.off, n->v.s.len) == 0;
    case N_CONTAINS:
        if (v.kind == V_STR)
            return kmp_find(v.s, v.n, f->pool + n->v.s.off, n->v.s.len, f->kmp + n->v.s.kmp);
        if (v.kind == V_ARRAY) {
            size_t k;
            const json_t *e;
            json_array_foreach(v.j, k, e)
            {
                if (json_is_string(e) && json_string_length(e) == n->v.s.len &&
                    memcmp(json_string_value(e), f->pool + n->v.s.off, n->v.s.len) == 0)
                    return 1;
            }
        }
        return 0;
    case N_IN:
        for (uint16_t li = n->first; li != F_NONE; li = f->nodes[li].next) {
            if (equal(f, &v, &f->nodes[li]))
                return 1;
        }
        return 0;
    case N_CMP:
        if (n->op == OP_EQ)
            return equal(f, &v, n);
        if (n->op == OP_NE)
            return !equal(f, &v, n);
        if ((r = compare(f, &v, n, &c)) != 1)
            return 0;
        switch (n->op) {
        case OP_LT:
            return c < 0;
        case OP_LE:
            return c <= 0;
        case OP_GT:
            return c > 0;
        default:
            return c >= 0;
        }
    default:
        return 0;
    }
}

/* Evaluates node i; the recursion is as deep as the tree, which the nesting limit bounds. */
static int eval(const rq_filter_t *f, uint16_t i, const rq_filter_msg_t *m)
{
    const node_t *n = &f->nodes[i];

    switch (n->type) {
    case N_OR:
        for (uint16_t c = n->first; c != F_NONE; c = f->nodes[c].next)
            if (eval(f, c, m))
                return 1;
        return 0;
    case N_AND:
        for (uint16_t c = n->first; c != F_NONE; c = f->nodes[c].next)
            if (!eval(f, c, m))
                return 0;
        return 1;
    case N_NOT:
        return !eval(f, n->first, m);
    default:
        return eval_leaf(f, n, m);
    }
}

int rq_filter_eval(const rq_filter_t *f, const rq_filter_msg_t *m)
{
    static const rq_filter_msg_t none = {NULL, NULL, NULL, NULL};

    if (f == NULL)
        return 1;
    return eval(f, f->top, m != NULL ? m : &none);
}
