/* linesplit.c - byte stream to lines, with offsets and an overlong-line policy.
 *
 * The buffer holds the bytes not yet covered by a record at buf[start, start + len), the
 * first `scanned` of which are known to hold no '\n', so feeding a long partial line byte by
 * byte stays linear. The stream bytes just before the last record's end are kept in `win`
 * (a hash of them is saved with the offset, to recognise a file rewritten under us).
 */
#include "linesplit.h"

#include <stdlib.h>
#include <string.h>

#define W RQ_LINESPLIT_WINDOW

struct rq_linesplit {
    size_t max_line;
    rq_overlong_t policy;
    char *buf;
    size_t cap, start, len;
    size_t scanned;
    int64_t buf_off; /* stream offset of buf[start] */
    int64_t rec_end; /* stream offset just past the last record */
    int in_overlong; /* the current line was recognised as overlong */
    int64_t skip_start;
    uint64_t overlong;
    unsigned char win[W]; /* the stream bytes just before rec_end */
    size_t win_len;
    unsigned char dwin[W]; /* skip: the last bytes of the line being dropped */
    size_t dwin_len;
};

void rq_window_push(unsigned char *win, size_t *wlen, const void *data, size_t n)
{
    const unsigned char *d = data;

    if (n >= W) {
        memcpy(win, d + n - W, W);
        *wlen = W;
        return;
    }
    if (*wlen + n > W) {
        size_t drop = *wlen + n - W;
        memmove(win, win + drop, *wlen - drop);
        *wlen -= drop;
    }
    memcpy(win + *wlen, d, n);
    *wlen += n;
}

rq_linesplit_t *rq_linesplit_new(size_t max_line, rq_overlong_t policy)
{
    rq_linesplit_t *ls;

    if (max_line == 0)
        return NULL;
    ls = calloc(1, sizeof(*ls));
    if (ls == NULL)
        return NULL;
    ls->max_line = max_line;
    ls->policy = policy;
    return ls;
}

void rq_linesplit_free(rq_linesplit_t *ls)
{
    if (ls == NULL)
        return;
    free(ls->buf);
    free(ls);
}

void rq_linesplit_reset(rq_linesplit_t *ls, int64_t offset, const void *before, size_t before_len)
{
    ls->start = ls->len = ls->scanned = 0;
    ls->buf_off = ls->rec_end = offset;
    ls->in_overlong = 0;
    ls->skip_start = offset;
    ls->win_len = ls->dwin_len = 0;
    if (before != NULL && before_len > 0)
        rq_window_push(ls->win, &ls->win_len, before, before_len);
}

char *rq_linesplit_space(rq_linesplit_t *ls, size_t want, size_t *got)
{
    if (want == 0)
        want = 1;
    if (ls->cap - ls->start - ls->len < want && ls->start > 0) {
        memmove(ls->buf, ls->buf + ls->start, ls->len);
        ls->start = 0;
    }
    if (ls->cap - ls->len < want) {
        size_t ncap = ls->cap + ls->cap / 2;
        char *nb;

        if (ncap < ls->len + want)
            ncap = ls->len + want;
        if (ncap < 4096)
            ncap = 4096;
        nb = realloc(ls->buf, ncap);
        if (nb == NULL)
            return NULL;
        ls->buf = nb;
        ls->cap = ncap;
    }
    *got = want;
    return ls->buf + ls->start + ls->len;
}

void rq_linesplit_commit(rq_linesplit_t *ls, size_t n)
{
    ls->len += n;
}

int rq_linesplit_feed(rq_linesplit_t *ls, const void *data, size_t len)
{
    size_t got;
    char *p;

    if (len == 0)
        return 0;
    p = rq_linesplit_space(ls, len, &got);
    if (p == NULL)
        return -1;
    memcpy(p, data, len);
    rq_linesplit_commit(ls, len);
    return 0;
}

/* Drops n bytes from the front of the buffer. */
static void consume(rq_linesplit_t *ls, size_t n)
{
    ls->start += n;
    ls->len -= n;
    ls->buf_off += (int64_t)n;
    if (ls->len == 0)
        ls->start = 0;
}

/* Fills *line with the SKIPPED record of the overlong line dropped from skip_start up to
 * everything consumed (its '\n' included when `newline`), and ends the skip. Returns 1. */
static int skipped_record(rq_linesplit_t *ls, rq_line_t *line, int newline)
{
    line->data = NULL;
    line->offset = ls->skip_start;
    line->end = ls->buf_off;
    line->len = (size_t)(line->end - line->offset) - (newline ? 1 : 0);
    line->newline = newline;
    line->kind = RQ_LINE_SKIPPED;
    rq_window_push(ls->win, &ls->win_len, ls->dwin, ls->dwin_len);
    ls->dwin_len = 0;
    ls->in_overlong = 0;
    ls->rec_end = line->end;
    return 1;
}

/* Skip policy, the current line is being dropped: discards up to and including its '\n'.
 * Returns 1 with the SKIPPED record when the '\n' was found, else 0. */
static int discard(rq_linesplit_t *ls, rq_line_t *line)
{
    const char *p = ls->buf + ls->start;
    const char *nl = ls->len ? memchr(p, '\n', ls->len) : NULL;
    size_t n;

    if (nl == NULL) {
        rq_window_push(ls->dwin, &ls->dwin_len, p, ls->len);
        consume(ls, ls->len);
        ls->scanned = 0;
        return 0;
    }
    n = (size_t)(nl - p) + 1;
    rq_window_push(ls->dwin, &ls->dwin_len, p, n);
    consume(ls, n);
    ls->scanned = 0;
    return skipped_record(ls, line, 1);
}

int rq_linesplit_next(rq_linesplit_t *ls, rq_line_t *line)
{
    const char *p, *nl;
    size_t i, known_clean;

    if (ls->in_overlong && ls->policy == RQ_OVERLONG_SKIP)
        return discard(ls, line);
    if (ls->len == 0)
        return 0;
    p = ls->buf + ls->start;
    nl = memchr(p + ls->scanned, '\n', ls->len - ls->scanned);
    if (nl != NULL && (size_t)(nl - p) <= ls->max_line) {
        i = (size_t)(nl - p);
        line->data = p;
        line->len = i;
        line->offset = ls->buf_off;
        line->end = ls->buf_off + (int64_t)i + 1;
        line->newline = 1;
        line->kind = ls->in_overlong ? RQ_LINE_PIECE : RQ_LINE_FULL;
        rq_window_push(ls->win, &ls->win_len, p, i + 1);
        ls->in_overlong = 0;
        ls->rec_end = line->end;
        consume(ls, i + 1);
        ls->scanned = 0;
        return 1;
    }
    known_clean = nl != NULL ? (size_t)(nl - p) : ls->len;
    if (nl == NULL) {
        ls->scanned = ls->len;
        if (ls->len <= ls->max_line)
            return 0;
    }
    /* The first max_line + 1 bytes hold no '\n': the line is overlong. */
    if (!ls->in_overlong) {
        ls->in_overlong = 1;
        ls->overlong++;
        ls->skip_start = ls->buf_off;
        ls->dwin_len = 0;
    }
    if (ls->policy == RQ_OVERLONG_SKIP)
        return discard(ls, line);
    line->data = p;
    line->len = ls->max_line;
    line->offset = ls->buf_off;
    line->end = ls->buf_off + (int64_t)ls->max_line;
    line->newline = 0;
    line->kind = RQ_LINE_PIECE;
    rq_window_push(ls->win, &ls->win_len, p, ls->max_line);
    ls->rec_end = line->end;
    consume(ls, ls->max_line);
    ls->scanned = known_clean - ls->max_line;
    return 1;
}

int rq_linesplit_flush(rq_linesplit_t *ls, rq_line_t *line)
{
    if (ls->in_overlong && ls->policy == RQ_OVERLONG_SKIP) {
        /* next() returned 0, so everything fed was discarded. */
        return skipped_record(ls, line, 0);
    }
    if (ls->len == 0)
        return 0;
    line->data = ls->buf + ls->start;
    line->len = ls->len;
    line->offset = ls->buf_off;
    line->end = ls->buf_off + (int64_t)ls->len;
    line->newline = 0;
    line->kind = RQ_LINE_PARTIAL;
    rq_window_push(ls->win, &ls->win_len, line->data, line->len);
    ls->in_overlong = 0;
    ls->rec_end = line->end;
    consume(ls, ls->len);
    ls->scanned = 0;
    return 1;
}

int64_t rq_linesplit_offset(const rq_linesplit_t *ls)
{
    return ls->rec_end;
}

int64_t rq_linesplit_fed(const rq_linesplit_t *ls)
{
    return ls->buf_off + (int64_t)ls->len;
}

size_t rq_linesplit_pending(const rq_linesplit_t *ls)
{
    return (size_t)(rq_linesplit_fed(ls) - ls->rec_end);
}

uint64_t rq_linesplit_overlong(const rq_linesplit_t *ls)
{
    return ls->overlong;
}

size_t rq_linesplit_window(const rq_linesplit_t *ls, void *out)
{
    memcpy(out, ls->win, ls->win_len);
    return ls->win_len;
}
