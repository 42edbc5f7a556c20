/* qsettings.c - the per-queue settings cache and its lookup thread (see qsettings.h). */
#include "qsettings.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "log.h"
#include "mgmt.h"
#include "qname.h"
#include "util.h"

typedef struct entry {
    int known;       /* a lookup answered (value or none) */
    int has;         /* the queue has its own value */
    int value;       /* its x-relayq-max-retries */
    int pending;     /* a lookup is queued or running */
    int64_t next_ms; /* monotonic: refresh at (TTL, or RETRY after a failure) */
} entry_t;

struct rq_qsettings {
    const rq_config_t *cfg;
    rq_mgmt_t *mgmt; /* NULL: no management API */
    void (*notify)(void *arg);
    void *notify_arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rq_hmap_t *cache;                   /* name -> entry_t, under mu */
    char *todo[RQ_QSETTINGS_QUEUE_MAX]; /* names to look up, under mu */
    size_t ntodo;
    int stopping, started;
    pthread_t thread;
};

int rq_qsettings_parse_max_retries(const json_t *queue_obj, int *out)
{
    json_t *args = json_object_get(queue_obj, "arguments");
    json_t *v = json_object_get(args, "x-relayq-max-retries");

    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > RQ_QSETTINGS_MAX_RETRIES)
        return 0;
    *out = (int)json_integer_value(v);
    return 1;
}

/* One lookup (blocking, on the thread): 1 value, 0 none, -1 failure. */
static int lookup(rq_qsettings_t *s, const char *name, int *value)
{
    char vh[800], nm[RQ_QNAME_MAX * 3 + 1], path[1700], err[256];
    int status = 0, rc;
    json_t *body = NULL;

    if (rq_mgmt_escape(s->cfg->rabbitmq.vhost, vh, sizeof(vh)) != 0 ||
        rq_mgmt_escape(name, nm, sizeof(nm)) != 0)
        return 0;
    snprintf(path, sizeof(path), "/api/queues/%s/%s?columns=arguments", vh, nm);
    if (rq_mgmt_get(s->mgmt, path, RQ_QSETTINGS_TIMEOUT_MS, &status, &body, err, sizeof(err)) !=
        0) {
        rq_warn("queue settings of %s: %s (MAX_RETRIES applies meanwhile)", name, err);
        return -1;
    }
    rc = status == 200 && rq_qsettings_parse_max_retries(body, value) ? 1 : 0;
    if (status != 200 && status != 404) {
        rq_warn("queue settings of %s: management API HTTP %d", name, status);
        rc = -1;
    }
    json_decref(body);
    return rc;
}

static void *lookup_main(void *arg)
{
    rq_qsettings_t *s = arg;

    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        if (s->ntodo == 0) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        char *name = s->todo[--s->ntodo];
        int value = 0, rc;
        pthread_mutex_unlock(&s->mu);
        rc = lookup(s, name, &value);
        pthread_mutex_lock(&s->mu);
        entry_t *e = rq_hmap_get(s->cache, name);
        if (e != NULL) {
            e->pending = 0;
            e->next_ms = rq_mono_ms() + (rc < 0 ? RQ_QSETTINGS_RETRY_MS : RQ_QSETTINGS_TTL_MS);
            if (rc >= 0 || !e->known) { /* a failure keeps a value known before */
                e->known = 1;
                e->has = rc == 1;
                e->value = value;
            }
        }
        free(name);
        pthread_mutex_unlock(&s->mu);
        if (s->notify != NULL)
            s->notify(s->notify_arg);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void free_entry(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(value);
}

rq_qsettings_t *rq_qsettings_new(const rq_config_t *cfg, void (*notify)(void *arg), void *arg)
{
    rq_qsettings_t *s = calloc(1, sizeof(*s));
    char err[256];

    if (s == NULL)
        return NULL;
    s->cfg = cfg;
    s->notify = notify;
    s->notify_arg = arg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->cache = rq_hmap_new(0);
    if (s->cache == NULL)
        goto err;
    s->mgmt = rq_mgmt_new(&cfg->rabbitmq, err, sizeof(err));
    if (s->mgmt == NULL) {
        rq_info("per-queue max_retries: %s; MAX_RETRIES (%d) applies to every queue", err,
                cfg->rabbitmq.max_retries);
        return s;
    }
    if (pthread_create(&s->thread, NULL, lookup_main, s) != 0)
        goto err;
    s->started = 1;
    return s;

err:
    rq_qsettings_free(s);
    return NULL;
}

void rq_qsettings_free(rq_qsettings_t *s)
{
    if (s == NULL)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    for (size_t i = 0; i < s->ntodo; i++)
        free(s->todo[i]);
    if (s->cache != NULL)
        rq_hmap_each(s->cache, free_entry, NULL);
    rq_hmap_free(s->cache);
    rq_mgmt_free(s->mgmt);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Queues a lookup of e's queue (under mu). */
static void ask(rq_qsettings_t *s, entry_t *e, const char *queue)
{
    char *name;

    if (e->pending || s->ntodo >= RQ_QSETTINGS_QUEUE_MAX || (name = strdup(queue)) == NULL)
        return;
    e->pending = 1;
    s->todo[s->ntodo++] = name;
    pthread_cond_signal(&s->cv);
}

int rq_qsettings_max_retries(rq_qsettings_t *s, const char *queue, int *out)
{
    entry_t *e;
    int rc;

    if (s == NULL || s->mgmt == NULL)
        return 0;
    pthread_mutex_lock(&s->mu);
    e = rq_hmap_get(s->cache, queue);
    if (e == NULL && rq_hmap_len(s->cache) >= RQ_QSETTINGS_CACHE_MAX) {
        pthread_mutex_unlock(&s->mu);
        return 0; /* a full cache: the default, no lookup */
    }
    if (e == NULL &&
        ((e = calloc(1, sizeof(*e))) == NULL || rq_hmap_put(s->cache, queue, e) != 0)) {
        free(e);
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    if (!e->known || rq_mono_ms() >= e->next_ms)
        ask(s, e, queue);
    rc = !e->known ? -1 : e->has ? 1 : 0;
    if (rc == 1)
        *out = e->value;
    pthread_mutex_unlock(&s->mu);
    return rc;
}
