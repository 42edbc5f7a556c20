/* timeline.c - the bounded index of message timelines, idempotency keys and long-poll waiters
 * (timeline.h).
 *
 * Three structures under one mutex:
 *   - entries: id -> entry (hmap), and a list in creation order for eviction; an entry holds
 *     its events sorted by (ts, type, attempt) and sticky facts (replied, highest attempts...)
 *     from which its status is derived, so that dropping events never changes the status.
 *     Per message one allocation in the common case (issue 20: it is applied on every
 *     /produce): the entry holds its id (the map's key, borrowed), a short uid and its first
 *     EV_INLINE events; sources and queue names are interned (tl->strs, a few distinct texts:
 *     the services and queues), past RQ_TIMELINE_INTERN_MAX distinct ones copied per use;
 *   - keys: key -> (id, ts) (hmap), and a list in insertion order for eviction and expiry;
 *   - waiters: id -> list of waiters (hmap; an id need not be held), and a min-heap of every
 *     waiter by deadline, served by the timer thread.
 * A waiter leaves every structure under the mutex before its callback runs without it, so each
 * callback runs once. */
#include "timeline.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "b64.h"
#include "hmap.h"
#include "list.h"
#include "util.h"

#define TL_WAITERS_MAX 100000
#define EV_INLINE 4   /* events held in the entry itself: accepted, confirmed, delivered, replied */
#define UID_INLINE 40 /* uids shorter than this (a UUID's 36) are held in the entry */

typedef struct tl_ev {
    rq_sev_type_t type;
    int attempt;
    int64_t ts;
    const char *src; /* NULL: none; interned (tl->strs) unless src_owned */
    char *error;     /* NULL: none */
    int src_owned;
} tl_ev_t;

typedef struct entry {
    rq_list_node_t node; /* in tl->entries, creation order */
    char *uid;           /* NULL, uid_in, or a copy */
    const char *queue;   /* NULL, or interned unless queue_owned */
    int queue_owned;
    tl_ev_t *ev; /* nev sorted events, room for evcap: ev_in, or an allocation */
    size_t nev, evcap, dropped;
    /* sticky facts, from every event applied (held or dropped) */
    int replied, not_stored;
    int max_live, max_dead, max_delivered;     /* highest attempts; -1: none */
    int64_t queued_ms, processed_ms, error_ts; /* -1: none */
    char *reply, *error;
    size_t reply_len;
    int reply_truncated;
    rq_tl_status_t status;
    tl_ev_t ev_in[EV_INLINE];
    char uid_in[UID_INLINE];
    char id[]; /* the message id, tl->map's key; entry_reset() keeps it */
} entry_t;

typedef struct kent {
    rq_list_node_t node; /* in tl->keys, insertion order */
    char *key, *id;
    int64_t ts;
} kent_t;

typedef struct wlist {
    char *id;
    rq_list_t waiters;
} wlist_t;

typedef struct waiter {
    rq_list_node_t node; /* in its wlist, then in a list of waiters to call */
    wlist_t *owner;
    size_t hidx; /* its index in tl->heap */
    int64_t deadline;
    rq_timeline_wake_fn fn;
    void *arg;
    int timed_out;
} waiter_t;

struct rq_timeline {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC: the timer thread sleeps on it */
    pthread_t timer;
    int stop;
    int closing; /* rq_timeline_wake_all() was called: no more waiters */
    size_t cap, kcap;
    int64_t ttl;
    rq_hmap_t *map, *kmap, *wmap; /* keys borrowed: entry_t.id, kent_t.key, wlist_t.id */
    rq_hmap_t *strs;              /* interned sources and queue names (key = value) */
    rq_list_t entries, keys;
    waiter_t **heap;
    size_t hlen, hcap;
};

/* ---- entries ---- */

/* An empty e (no events, no facts), its id untouched; e is in no list. */
static void entry_init(entry_t *e)
{
    memset(e, 0, offsetof(entry_t, id));
    e->ev = e->ev_in;
    e->evcap = EV_INLINE;
    e->max_live = e->max_dead = e->max_delivered = -1;
    e->queued_ms = e->processed_ms = e->error_ts = -1;
}

static void ev_clear(tl_ev_t *v)
{
    if (v->src_owned)
        free((char *)v->src);
    free(v->error);
}

/* Frees what e holds and empties it (entry_init), keeping its id; e must not be in a list
 * (its node is cleared). */
static void entry_reset(entry_t *e)
{
    for (size_t i = 0; i < e->nev; i++)
        ev_clear(&e->ev[i]);
    if (e->ev != e->ev_in)
        free(e->ev);
    if (e->uid != e->uid_in)
        free(e->uid);
    if (e->queue_owned)
        free((char *)e->queue);
    free(e->reply);
    free(e->error);
    entry_init(e);
}

static void entry_free(entry_t *e)
{
    if (e == NULL)
        return;
    entry_reset(e);
    free(e);
}

/* s interned in *out (one copy per distinct text, kept until the timeline is freed) with
 * *owned 0; once RQ_TIMELINE_INTERN_MAX texts are interned, a copy of s for the caller to free
 * (*owned 1), so that a writer of many distinct texts costs what it did before interning.
 * 0, or -1 out of memory. Locked. */
static int str_intern(rq_timeline_t *tl, const char *s, const char **out, int *owned)
{
    char *c = rq_hmap_get(tl->strs, s);

    *owned = 0;
    if (c == NULL) {
        if ((c = strdup(s)) == NULL)
            return -1;
        if (rq_hmap_len(tl->strs) >= RQ_TIMELINE_INTERN_MAX || rq_hmap_put(tl->strs, c, c) != 0)
            *owned = 1;
    }
    *out = c;
    return 0;
}

static int is_final(rq_tl_status_t s)
{
    return s == RQ_TL_PROCESSED || s == RQ_TL_FAILED;
}

/* The status the sticky facts give (timeline.h's rules). */
static rq_tl_status_t derive(const entry_t *e)
{
    if (e->replied)
        return RQ_TL_PROCESSED;
    if (e->not_stored || (e->max_dead >= 0 && e->max_live <= e->max_dead))
        return RQ_TL_FAILED;
    return e->max_live >= 0 ? RQ_TL_PROCESSING : RQ_TL_QUEUED;
}

/* <0, 0, >0 as event a sorts before, with, after (ts, type, attempt). */
static int ev_cmp(int64_t ts, rq_sev_type_t type, int attempt, const tl_ev_t *b)
{
    if (ts != b->ts)
        return ts < b->ts ? -1 : 1;
    if (type != b->type)
        return type < b->type ? -1 : 1;
    return attempt < b->attempt ? -1 : attempt > b->attempt;
}

static int is_text(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* A copy of the error text s cut to RQ_SEV_TEXT_MAX bytes on a UTF-8 boundary (a decoded
 * event's is within already; a local one may not be). NULL out of memory. */
static char *text_dup(const char *s)
{
    size_t n = strlen(s);

    if (n > RQ_SEV_TEXT_MAX) {
        n = RQ_SEV_TEXT_MAX;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--; /* s[n] continues a sequence: cut before the sequence */
    }
    return strndup(s, n);
}

/* Copies ev into *out, its source interned, its error copied (NULL: absent). 0, or -1 out of
 * memory. Locked. */
static int ev_copy(rq_timeline_t *tl, const rq_status_event_t *ev, tl_ev_t *out)
{
    memset(out, 0, sizeof(*out));
    out->type = ev->type;
    out->attempt = ev->attempt;
    out->ts = ev->ts_ms;
    if (is_text(ev->error) && (out->error = text_dup(ev->error)) == NULL)
        return -1;
    if (is_text(ev->src) && str_intern(tl, ev->src, &out->src, &out->src_owned) != 0) {
        free(out->error);
        return -1;
    }
    return 0;
}

/* Room for one more event in e (e->nev < RQ_TIMELINE_EVENTS_MAX). 0, or -1 out of memory. */
static int ev_room(entry_t *e)
{
    size_t ncap = e->evcap * 2;
    tl_ev_t *v;

    if (e->nev < e->evcap)
        return 0;
    if (e->ev == e->ev_in) {
        if ((v = malloc(ncap * sizeof(*v))) == NULL)
            return -1;
        memcpy(v, e->ev_in, e->nev * sizeof(*v));
    } else if ((v = realloc(e->ev, ncap * sizeof(*v))) == NULL) {
        return -1;
    }
    e->ev = v;
    e->evcap = ncap;
    return 0;
}

/* Inserts ev into e's sorted events, dropping the oldest after the first beyond
 * RQ_TIMELINE_EVENTS_MAX. Returns 1 when held, 0 when a repeat or when, e being full, it
 * would be the one dropped (a repeat of an event dropped before sorts there too: dropped
 * events always sort before e->ev[1]), -1 out of memory. */
static int ev_insert(rq_timeline_t *tl, entry_t *e, const rq_status_event_t *ev)
{
    size_t pos = e->nev;
    tl_ev_t t;

    for (size_t i = 0; i < e->nev; i++)
        if (e->ev[i].type == ev->type && e->ev[i].attempt == ev->attempt)
            return 0;
    while (pos > 0 && ev_cmp(ev->ts_ms, ev->type, ev->attempt, &e->ev[pos - 1]) < 0)
        pos--;
    if (e->nev == RQ_TIMELINE_EVENTS_MAX && pos == 1)
        return 0;
    if (e->nev < RQ_TIMELINE_EVENTS_MAX && ev_room(e) != 0)
        return -1;
    if (ev_copy(tl, ev, &t) != 0)
        return -1;
    if (e->nev == RQ_TIMELINE_EVENTS_MAX) {
        /* drop the oldest after the first, once ev is in: the old first when ev sorts first */
        size_t d = pos == 0 ? 0 : 1;
        ev_clear(&e->ev[d]);
        memmove(&e->ev[d], &e->ev[d + 1], (e->nev - d - 1) * sizeof(*e->ev));
        e->nev--;
        e->dropped++;
        pos = pos == 0 ? 0 : pos - 1;
    }
    memmove(&e->ev[pos + 1], &e->ev[pos], (e->nev - pos) * sizeof(*e->ev));
    e->ev[pos] = t;
    e->nev++;
    return 1;
}

static void max_to(int *m, int v)
{
    if (v > *m)
        *m = v;
}

/* Keeps the later error (by ts) as the entry's last. 0 or -1 out of memory. */
static int note_error(entry_t *e, const rq_status_event_t *ev)
{
    char *copy;

    if (!is_text(ev->error) || ev->ts_ms < e->error_ts)
        return 0;
    if ((copy = text_dup(ev->error)) == NULL)
        return -1;
    free(e->error);
    e->error = copy;
    e->error_ts = ev->ts_ms;
    return 0;
}

/* Records the reply of a first replied event. 0 or -1 out of memory. */
static int note_reply(entry_t *e, const rq_status_event_t *ev)
{
    char *copy = malloc(ev->reply_len + 1);

    if (copy == NULL)
        return -1;
    if (ev->reply_len > 0)
        memcpy(copy, ev->reply, ev->reply_len);
    copy[ev->reply_len] = '\0';
    e->reply = copy;
    e->reply_len = ev->reply_len;
    e->reply_truncated = ev->truncated != 0;
    e->replied = 1;
    e->processed_ms = ev->ts_ms;
    return 0;
}

/* Updates e's sticky facts with ev (idempotent). 0 or -1 out of memory. Locked. */
static int note_facts(rq_timeline_t *tl, entry_t *e, const rq_status_event_t *ev)
{
    if (e->queue == NULL && is_text(ev->queue) &&
        str_intern(tl, ev->queue, &e->queue, &e->queue_owned) != 0)
        return -1;
    switch (ev->type) {
    case RQ_SEV_ACCEPTED:
    case RQ_SEV_CONFIRMED:
        if (e->queued_ms < 0 || ev->ts_ms < e->queued_ms)
            e->queued_ms = ev->ts_ms;
        return 0;
    case RQ_SEV_NOT_STORED:
        e->not_stored = 1;
        return note_error(e, ev);
    case RQ_SEV_DELIVERED:
        max_to(&e->max_delivered, ev->attempt);
        max_to(&e->max_live, ev->attempt);
        return 0;
    case RQ_SEV_RETRIED:
        max_to(&e->max_live, ev->attempt);
        return note_error(e, ev);
    case RQ_SEV_DEAD_LETTERED:
        max_to(&e->max_dead, ev->attempt);
        return note_error(e, ev);
    case RQ_SEV_REPLIED:
        return e->replied ? 0 : note_reply(e, ev);
    default:
        return 0;
    }
}

/* A new entry for id, the newest (evicting the least recently created when full). Locked. */
static entry_t *entry_add(rq_timeline_t *tl, const char *id)
{
    size_t n = strlen(id);
    entry_t *e = malloc(offsetof(entry_t, id) + n + 1);

    if (e == NULL)
        return NULL;
    entry_init(e);
    memcpy(e->id, id, n + 1);
    if (rq_hmap_put(tl->map, e->id, e) != 0) {
        entry_free(e);
        return NULL;
    }
    if (rq_hmap_len(tl->map) > tl->cap) {
        entry_t *old = RQ_LIST_ENTRY(tl->entries.head, entry_t, node);
        rq_list_unlink(&tl->entries, &old->node);
        rq_hmap_del(tl->map, old->id);
        entry_free(old);
    }
    rq_list_push_back(&tl->entries, &e->node);
    return e;
}

/* The entry ev applies to, made or started again as needed; NULL with *rc 0 when ev belongs
 * to another message (uid), -1 out of memory. Locked. */
static entry_t *entry_for(rq_timeline_t *tl, const rq_status_event_t *ev, int *rc)
{
    entry_t *e = rq_hmap_get(tl->map, ev->id);

    *rc = -1;
    if (e == NULL)
        e = entry_add(tl, ev->id);
    else if (is_text(ev->uid) && e->uid != NULL && strcmp(ev->uid, e->uid) != 0) {
        int starts = ev->type == RQ_SEV_ACCEPTED || ev->type == RQ_SEV_CONFIRMED;
        if (!starts || e->nev == 0 || ev->ts_ms <= e->ev[0].ts) {
            *rc = 0;
            return NULL;
        }
        /* the id was reused by a newer message: start again, as the newest */
        rq_list_unlink(&tl->entries, &e->node);
        entry_reset(e);
        rq_list_push_back(&tl->entries, &e->node);
    }
    if (e != NULL && e->uid == NULL && is_text(ev->uid)) {
        size_t n = strlen(ev->uid);
        if (n < UID_INLINE)
            e->uid = memcpy(e->uid_in, ev->uid, n + 1);
        else if ((e->uid = strdup(ev->uid)) == NULL)
            return NULL;
    }
    return e;
}

/* ---- keys ---- */

static void kent_drop(rq_timeline_t *tl, kent_t *k)
{
    rq_list_unlink(&tl->keys, &k->node);
    rq_hmap_del(tl->kmap, k->key);
    free(k->key);
    free(k->id);
    free(k);
}

static int kent_expired(const rq_timeline_t *tl, const kent_t *k, int64_t now)
{
    return now - k->ts >= tl->ttl;
}

/* Records ev's key (a confirmed event's) unless expired already; of two messages with one
 * key the earlier (ts, then id) keeps it, so that every replica agrees. Returns 1 when
 * recorded, 0 when not, -1 out of memory. Locked. */
static int key_record(rq_timeline_t *tl, const rq_status_event_t *ev)
{
    int64_t now = rq_wall_ms();
    kent_t *k;

    while (tl->keys.head != NULL &&
           kent_expired(tl, RQ_LIST_ENTRY(tl->keys.head, kent_t, node), now))
        kent_drop(tl, RQ_LIST_ENTRY(tl->keys.head, kent_t, node));
    if (tl->kcap == 0 || now - ev->ts_ms >= tl->ttl)
        return 0;
    k = rq_hmap_get(tl->kmap, ev->key);
    if (k != NULL && kent_expired(tl, k, now)) {
        kent_drop(tl, k);
        k = NULL;
    }
    if (k != NULL) {
        char *id;
        if (ev->ts_ms > k->ts || (ev->ts_ms == k->ts && strcmp(ev->id, k->id) >= 0))
            return 0;
        if ((id = strdup(ev->id)) == NULL)
            return -1;
        free(k->id);
        k->id = id;
        k->ts = ev->ts_ms;
        return 1;
    }
    if ((k = calloc(1, sizeof(*k))) == NULL || (k->key = strdup(ev->key)) == NULL ||
        (k->id = strdup(ev->id)) == NULL || rq_hmap_put(tl->kmap, k->key, k) != 0)
        goto fail;
    k->ts = ev->ts_ms;
    if (rq_hmap_len(tl->kmap) > tl->kcap)
        kent_drop(tl, RQ_LIST_ENTRY(tl->keys.head, kent_t, node));
    rq_list_push_back(&tl->keys, &k->node);
    return 1;
fail:
    if (k != NULL) {
        free(k->key);
        free(k->id);
    }
    free(k);
    return -1;
}

/* ---- waiters ---- */

static void heap_set(rq_timeline_t *tl, size_t i, waiter_t *w)
{
    tl->heap[i] = w;
    w->hidx = i;
}

static void heap_up(rq_timeline_t *tl, size_t i)
{
    waiter_t *w = tl->heap[i];

    while (i > 0 && tl->heap[(i - 1) / 2]->deadline > w->deadline) {
        heap_set(tl, i, tl->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(tl, i, w);
}

static void heap_down(rq_timeline_t *tl, size_t i)
{
    waiter_t *w = tl->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= tl->hlen)
            break;
        if (c + 1 < tl->hlen && tl->heap[c + 1]->deadline < tl->heap[c]->deadline)
            c++;
        if (tl->heap[c]->deadline >= w->deadline)
            break;
        heap_set(tl, i, tl->heap[c]);
        i = c;
    }
    heap_set(tl, i, w);
}

static void heap_remove(rq_timeline_t *tl, waiter_t *w)
{
    size_t i = w->hidx;
    waiter_t *last = tl->heap[--tl->hlen];

    if (i == tl->hlen)
        return;
    heap_set(tl, i, last);
    heap_up(tl, i);
    heap_down(tl, last->hidx);
}

/* Takes w out of the heap and its id's list (freeing the list when empty) and appends it to
 * fire with timed_out. Locked. */
static void waiter_detach(rq_timeline_t *tl, waiter_t *w, int timed_out, rq_list_t *fire)
{
    wlist_t *wl = w->owner;

    heap_remove(tl, w);
    rq_list_unlink(&wl->waiters, &w->node);
    if (wl->waiters.head == NULL) {
        rq_hmap_del(tl->wmap, wl->id);
        free(wl->id);
        free(wl);
    }
    w->owner = NULL;
    w->timed_out = timed_out;
    rq_list_push_back(fire, &w->node);
}

/* Detaches every waiter of id (timed_out 0) onto fire. Locked. */
static void wake_id(rq_timeline_t *tl, const char *id, rq_list_t *fire)
{
    wlist_t *wl = rq_hmap_get(tl->wmap, id);

    while (wl != NULL) {
        int last = wl->waiters.head == wl->waiters.tail;
        waiter_detach(tl, RQ_LIST_ENTRY(wl->waiters.head, waiter_t, node), 0, fire);
        if (last)
            break;
    }
}

/* Calls and frees the waiters of fire. Not locked. */
static void run_fire(rq_list_t *fire)
{
    rq_list_node_t *n = fire->head;

    while (n != NULL) {
        rq_list_node_t *next = n->next;
        waiter_t *w = RQ_LIST_ENTRY(n, waiter_t, node);
        w->fn(w->arg, w->timed_out);
        free(w);
        n = next;
    }
    fire->head = fire->tail = NULL;
}

static void *timer_main(void *arg)
{
    rq_timeline_t *tl = arg;

    rq_thread_name("rq-timeline");
    pthread_mutex_lock(&tl->lock);
    while (!tl->stop) {
        int64_t now = rq_mono_ms();
        rq_list_t fire = {NULL, NULL};
        while (tl->hlen > 0 && tl->heap[0]->deadline <= now)
            waiter_detach(tl, tl->heap[0], 1, &fire);
        if (fire.head != NULL) {
            pthread_mutex_unlock(&tl->lock);
            run_fire(&fire);
            pthread_mutex_lock(&tl->lock);
        } else if (tl->hlen == 0) {
            pthread_cond_wait(&tl->cond, &tl->lock);
        } else {
            int64_t d = tl->heap[0]->deadline;
            struct timespec ts = {.tv_sec = (time_t)(d / 1000),
                                  .tv_nsec = (long)(d % 1000) * 1000000};
            pthread_cond_timedwait(&tl->cond, &tl->lock, &ts);
        }
    }
    pthread_mutex_unlock(&tl->lock);
    return NULL;
}

/* ---- public ---- */

rq_timeline_t *rq_timeline_new(size_t capacity, size_t keys_capacity, int64_t key_ttl_ms)
{
    rq_timeline_t *tl;
    pthread_condattr_t ca;

    if (key_ttl_ms <= 0 || (tl = calloc(1, sizeof(*tl))) == NULL)
        return NULL;
    tl->cap = capacity;
    tl->kcap = keys_capacity;
    tl->ttl = key_ttl_ms;
    tl->map = rq_hmap_new_borrowed(capacity < 65536 ? capacity : 65536);
    tl->kmap = rq_hmap_new_borrowed(keys_capacity < 65536 ? keys_capacity : 65536);
    tl->wmap = rq_hmap_new_borrowed(0);
    tl->strs = rq_hmap_new_borrowed(0);
    if (tl->map == NULL || tl->kmap == NULL || tl->wmap == NULL || tl->strs == NULL)
        goto fail;
    pthread_mutex_init(&tl->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines are rq_mono_ms() based */
    pthread_cond_init(&tl->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&tl->timer, NULL, timer_main, tl) != 0) {
        pthread_cond_destroy(&tl->cond);
        pthread_mutex_destroy(&tl->lock);
        goto fail;
    }
    return tl;
fail:
    rq_hmap_free(tl->map);
    rq_hmap_free(tl->kmap);
    rq_hmap_free(tl->wmap);
    rq_hmap_free(tl->strs);
    free(tl);
    return NULL;
}

static void free_str(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(value);
}

static void free_wlist(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(((wlist_t *)value)->id);
    free(value);
}

void rq_timeline_free(rq_timeline_t *tl)
{
    rq_list_t fire = {NULL, NULL};

    if (tl == NULL)
        return;
    pthread_mutex_lock(&tl->lock);
    tl->stop = 1;
    pthread_cond_signal(&tl->cond);
    pthread_mutex_unlock(&tl->lock);
    pthread_join(tl->timer, NULL);
    for (size_t i = 0; i < tl->hlen; i++) { /* the timer is gone: only this thread is left */
        tl->heap[i]->timed_out = 1;
        tl->heap[i]->node.prev = tl->heap[i]->node.next = NULL;
        rq_list_push_back(&fire, &tl->heap[i]->node);
    }
    run_fire(&fire);
    rq_hmap_each(tl->wmap, free_wlist, NULL);
    while (tl->entries.head != NULL) {
        entry_t *e = RQ_LIST_ENTRY(tl->entries.head, entry_t, node);
        rq_list_unlink(&tl->entries, &e->node);
        entry_free(e);
    }
    while (tl->keys.head != NULL)
        kent_drop(tl, RQ_LIST_ENTRY(tl->keys.head, kent_t, node));
    rq_hmap_each(tl->strs, free_str, NULL); /* the entries using them are gone */
    rq_hmap_free(tl->map);
    rq_hmap_free(tl->kmap);
    rq_hmap_free(tl->wmap);
    rq_hmap_free(tl->strs);
    free(tl->heap);
    pthread_cond_destroy(&tl->cond);
    pthread_mutex_destroy(&tl->lock);
    free(tl);
}

/* Applies ev to its entry (see rq_timeline_apply); waiters to wake go onto fire. Locked. */
static int apply_locked(rq_timeline_t *tl, const rq_status_event_t *ev, rq_list_t *fire)
{
    rq_tl_status_t was;
    entry_t *e;
    int rc, held;

    if (tl->cap == 0 || (e = entry_for(tl, ev, &rc)) == NULL)
        return tl->cap == 0 ? 0 : rc;
    was = e->status;
    if ((held = ev_insert(tl, e, ev)) < 0 || note_facts(tl, e, ev) != 0)
        return -1;
    e->status = derive(e);
    if (!is_final(was) && is_final(e->status))
        wake_id(tl, e->id, fire);
    return held || e->status != was;
}

int rq_timeline_apply(rq_timeline_t *tl, const rq_status_event_t *ev)
{
    rq_list_t fire = {NULL, NULL};
    int rc, krc = 0;

    if (rq_sev_name(ev->type) == NULL || !is_text(ev->id) || strlen(ev->id) > RQ_SEV_ID_MAX ||
        ev->ts_ms < 0 || ev->attempt < 0 || (ev->uid != NULL && strlen(ev->uid) > RQ_SEV_ID_MAX) ||
        (ev->src != NULL && strlen(ev->src) > RQ_SEV_ID_MAX) ||
        (ev->queue != NULL && strlen(ev->queue) > RQ_SEV_ID_MAX) ||
        (ev->key != NULL && strlen(ev->key) > RQ_SEV_KEY_MAX) ||
        (ev->reply == NULL && ev->reply_len))
        return -1;
    pthread_mutex_lock(&tl->lock);
    if (ev->type == RQ_SEV_CONFIRMED && is_text(ev->key))
        krc = key_record(tl, ev);
    rc = apply_locked(tl, ev, &fire);
    pthread_mutex_unlock(&tl->lock);
    run_fire(&fire);
    if (rc < 0 || krc < 0)
        return -1;
    return rc || krc;
}

rq_tl_status_t rq_timeline_status(rq_timeline_t *tl, const char *id)
{
    entry_t *e;
    rq_tl_status_t s;

    pthread_mutex_lock(&tl->lock);
    e = rq_hmap_get(tl->map, id);
    s = e != NULL ? e->status : RQ_TL_UNKNOWN;
    pthread_mutex_unlock(&tl->lock);
    return s;
}

const char *rq_tl_status_name(rq_tl_status_t s)
{
    static const char *const n[] = {NULL, "queued", "processing", "processed", "failed"};

    return s >= RQ_TL_QUEUED && s <= RQ_TL_FAILED ? n[s] : NULL;
}

/* Sets o[text_key] to the bytes p[0..n) as text, or o[b64_key] as base64 when they are not
 * UTF-8. */
static void set_bytes(json_t *o, const char *text_key, const char *b64_key, const char *p, size_t n)
{
    char *b;

    if (rq_utf8_valid(p, n)) {
        json_object_set_new(o, text_key, json_stringn(p, n));
    } else if ((b = malloc(RQ_B64_ENC_LEN(n) + 1)) != NULL) {
        rq_b64_encode(p, n, b);
        json_object_set_new(o, b64_key, json_string(b));
        free(b);
    }
}

static void set_time(json_t *o, const char *key, int64_t ms)
{
    char ts[RQ_ISO8601_LEN + 1];

    json_object_set_new(o, key, json_string(rq_iso8601(ms, ts)));
}

/* The "timeline" array of e. */
static json_t *timeline_json(const entry_t *e)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < e->nev; i++) {
        const tl_ev_t *v = &e->ev[i];
        json_t *it = json_pack("{s:s,s:I}", "event", rq_sev_name(v->type), "ts", (json_int_t)v->ts);
        if (it == NULL)
            continue;
        set_time(it, "at", v->ts);
        if (v->attempt > 0)
            json_object_set_new(it, "attempt", json_integer(v->attempt));
        if (v->error != NULL)
            json_object_set_new(it, "error", json_string(v->error));
        if (v->type == RQ_SEV_REPLIED && e->reply != NULL) {
            set_bytes(it, "reply", "reply_b64", e->reply, e->reply_len);
            if (e->reply_truncated)
                json_object_set_new(it, "truncated", json_true());
        }
        json_object_set_new(it, "by", json_string(v->src != NULL ? v->src : ""));
        json_array_append_new(a, it);
    }
    return a;
}

/* e as GET /messages/{id}'s object (timeline.h). NULL out of memory. Locked. */
static json_t *entry_json(const entry_t *e)
{
    json_t *o = json_pack("{s:s,s:s}", "message_id", e->id, "status", rq_tl_status_name(e->status));

    if (o == NULL)
        return NULL;
    if (e->uid != NULL)
        json_object_set_new(o, "uid", json_string(e->uid));
    if (e->queue != NULL)
        json_object_set_new(o, "queue", json_string(e->queue));
    json_object_set_new(o, "attempts", json_integer(e->max_delivered > 0 ? e->max_delivered : 0));
    if (e->queued_ms >= 0)
        set_time(o, "queued_at", e->queued_ms);
    if (e->replied) {
        set_time(o, "processed_at", e->processed_ms);
        set_bytes(o, "reply", "reply_b64", e->reply, e->reply_len);
        if (e->reply_truncated)
            json_object_set_new(o, "reply_truncated", json_true());
    }
    if (e->error != NULL)
        json_object_set_new(o, "error", json_string(e->error));
    json_object_set_new(o, "timeline", timeline_json(e));
    if (e->dropped > 0)
        json_object_set_new(o, "events_dropped", json_integer((json_int_t)e->dropped));
    return o;
}

json_t *rq_timeline_get(rq_timeline_t *tl, const char *id)
{
    json_t *o = NULL;
    entry_t *e;

    pthread_mutex_lock(&tl->lock);
    e = rq_hmap_get(tl->map, id);
    if (e != NULL)
        o = entry_json(e);
    pthread_mutex_unlock(&tl->lock);
    return o;
}

int rq_timeline_key_find(rq_timeline_t *tl, const char *key, char *id, size_t idlen)
{
    kent_t *k;
    int found = 0;

    pthread_mutex_lock(&tl->lock);
    k = rq_hmap_get(tl->kmap, key);
    if (k != NULL && kent_expired(tl, k, rq_wall_ms())) {
        kent_drop(tl, k);
        k = NULL;
    }
    if (k != NULL && idlen > 0) {
        snprintf(id, idlen, "%s", k->id);
        found = 1;
    }
    pthread_mutex_unlock(&tl->lock);
    return found;
}

/* Adds a waiter (see rq_timeline_wait). 0, or -1 over the cap or out of memory. Locked. */
static int waiter_add(rq_timeline_t *tl, const char *id, int64_t deadline, rq_timeline_wake_fn fn,
                      void *arg)
{
    wlist_t *wl = rq_hmap_get(tl->wmap, id);
    waiter_t *w;

    if (tl->hlen >= TL_WAITERS_MAX)
        return -1;
    if (tl->hlen == tl->hcap) {
        size_t ncap = tl->hcap ? tl->hcap * 2 : 64;
        waiter_t **h = realloc(tl->heap, ncap * sizeof(*h));
        if (h == NULL)
            return -1;
        tl->heap = h;
        tl->hcap = ncap;
    }
    if (wl == NULL) {
        if ((wl = calloc(1, sizeof(*wl))) == NULL || (wl->id = strdup(id)) == NULL ||
            rq_hmap_put(tl->wmap, wl->id, wl) != 0)
            goto fail;
    }
    if ((w = calloc(1, sizeof(*w))) == NULL)
        goto fail;
    *w = (waiter_t){.owner = wl, .deadline = deadline, .fn = fn, .arg = arg};
    rq_list_push_back(&wl->waiters, &w->node);
    tl->heap[tl->hlen++] = w;
    heap_up(tl, tl->hlen - 1);
    if (w->hidx == 0)
        pthread_cond_signal(&tl->cond); /* a new earliest deadline */
    return 0;
fail:
    if (wl != NULL && wl->waiters.head == NULL) {
        if (rq_hmap_get(tl->wmap, id) == wl)
            rq_hmap_del(tl->wmap, id);
        free(wl->id);
        free(wl);
    }
    return -1;
}

int rq_timeline_wait(rq_timeline_t *tl, const char *id, int64_t deadline_ms, rq_timeline_wake_fn fn,
                     void *arg)
{
    entry_t *e;
    int rc;

    if (id == NULL || fn == NULL)
        return -1;
    pthread_mutex_lock(&tl->lock);
    e = rq_hmap_get(tl->map, id);
    if (tl->closing || (e != NULL && is_final(e->status)))
        rc = 1;
    else
        rc = waiter_add(tl, id, deadline_ms, fn, arg);
    pthread_mutex_unlock(&tl->lock);
    return rc;
}

void rq_timeline_wake_all(rq_timeline_t *tl)
{
    rq_list_t fire = {NULL, NULL};

    pthread_mutex_lock(&tl->lock);
    tl->closing = 1;
    while (tl->hlen > 0)
        waiter_detach(tl, tl->heap[tl->hlen - 1], 1, &fire);
    pthread_mutex_unlock(&tl->lock);
    run_fire(&fire);
}

size_t rq_timeline_len(rq_timeline_t *tl)
{
    size_t n;

    pthread_mutex_lock(&tl->lock);
    n = rq_hmap_len(tl->map);
    pthread_mutex_unlock(&tl->lock);
    return n;
}

size_t rq_timeline_keys_len(rq_timeline_t *tl)
{
    size_t n;

    pthread_mutex_lock(&tl->lock);
    n = rq_hmap_len(tl->kmap);
    pthread_mutex_unlock(&tl->lock);
    return n;
}
