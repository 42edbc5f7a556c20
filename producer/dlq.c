/* dlq.c - GET /dlq and POST /dlq/retry on a connection of their own. */
#include "dlq.h"

#include <amqp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"
#include "util.h"

#define RETRY_BATCH 100
/* POST /dlq/retry republishes on a channel of its own in confirm mode. On the channel of the
 * basic.get calls, a confirm arriving while a basic.get waits for its reply would be queued
 * by rabbitmq-c and then read by amqp_read_message() in place of the message's content
 * ("unexpected protocol state"). */
#define PUBLISH_CHANNEL 2

/* Message count of a queue (passive declare). Returns 0 or -1. */
static int queue_depth(amqp_connection_state_t conn, const char *name, size_t *count, char *err,
                       size_t errlen)
{
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(
        conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(name), 1, 0, 0, 0, amqp_empty_table);

    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "queue.declare (passive)", err, errlen))
        return -1;
    *count = ok->message_count;
    return 0;
}

/* Gets one message without acking it. Returns 1 with *msg and *tag filled, 0 when the queue
 * is empty, -1 on error. */
static int get_one(amqp_connection_state_t conn, const char *queue, amqp_message_t *msg,
                   uint64_t *tag, char *err, size_t errlen)
{
    amqp_rpc_reply_t r = amqp_basic_get(conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(queue), 0);

    if (rq_amqp_check_reply(r, "basic.get", err, errlen))
        return -1;
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
        return 0;
    *tag = ((amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
    r = amqp_read_message(conn, RQ_AMQP_CHANNEL, msg, 0);
    if (rq_amqp_check_reply(r, "reading a dead-lettered message", err, errlen))
        return -1;
    return 1;
}

static json_t *bytes_json(amqp_bytes_t b)
{
    if (rq_utf8_valid(b.bytes, b.len))
        return json_stringn(b.bytes, b.len);
    return json_sprintf("<%zu bytes, not UTF-8>", b.len);
}

static long long int_value(const amqp_field_value_t *v)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        return v->value.i8;
    case AMQP_FIELD_KIND_U8:
        return v->value.u8;
    case AMQP_FIELD_KIND_I16:
        return v->value.i16;
    case AMQP_FIELD_KIND_U16:
        return v->value.u16;
    case AMQP_FIELD_KIND_I32:
        return v->value.i32;
    case AMQP_FIELD_KIND_U32:
        return v->value.u32;
    case AMQP_FIELD_KIND_I64:
        return v->value.i64;
    case AMQP_FIELD_KIND_U64:
        return (long long)v->value.u64;
    default:
        return -1;
    }
}

/* {"message_id","reason","attempts","content_type","body"} for one message. */
static json_t *describe(const amqp_message_t *msg)
{
    const amqp_basic_properties_t *p = &msg->properties;
    const amqp_field_value_t *v;
    json_t *o = json_object();
    json_t *reason = NULL;
    long long attempts = -1;

    if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        json_object_set_new(o, "message_id", bytes_json(p->message_id));
    if ((v = rq_amqp_header(p, "x-relayq-reason")) != NULL && v->kind == AMQP_FIELD_KIND_UTF8)
        reason = bytes_json(v->value.bytes);
    if ((v = rq_amqp_header(p, "x-relayq-attempts")) != NULL)
        attempts = int_value(v);
    if ((v = rq_amqp_header(p, "x-death")) != NULL && v->kind == AMQP_FIELD_KIND_ARRAY &&
        v->value.array.num_entries > 0 && v->value.array.entries[0].kind == AMQP_FIELD_KIND_TABLE) {
        amqp_table_t *d = &v->value.array.entries[0].value.table;
        for (int i = 0; i < d->num_entries; i++) {
            amqp_table_entry_t *e = &d->entries[i];
            if (reason == NULL && e->key.len == 6 && memcmp(e->key.bytes, "reason", 6) == 0 &&
                e->value.kind == AMQP_FIELD_KIND_UTF8)
                reason = bytes_json(e->value.value.bytes);
            if (attempts < 0 && e->key.len == 5 && memcmp(e->key.bytes, "count", 5) == 0)
                attempts = int_value(&e->value);
        }
    }
    json_object_set_new(o, "reason", reason ? reason : json_string("unknown"));
    if (attempts >= 0)
        json_object_set_new(o, "attempts", json_integer(attempts));
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
        json_object_set_new(o, "content_type", bytes_json(p->content_type));
    json_object_set_new(o, "body", bytes_json(msg->body));
    return o;
}

json_t *rq_dlq_peek(const RabbitMQConfig *cfg, size_t limit, char *err, size_t errlen)
{
    amqp_connection_state_t conn = rq_amqp_open(cfg, err, errlen);
    json_t *out = NULL, *list;
    char dlq[300];
    size_t count = 0;

    if (conn == NULL)
        return NULL;
    rq_amqp_dlq_name(cfg, dlq, sizeof(dlq));
    if (queue_depth(conn, dlq, &count, err, errlen) != 0)
        goto out;
    list = json_array();
    for (size_t i = 0; i < limit && i < count; i++) {
        amqp_message_t msg;
        uint64_t tag;
        int rc = get_one(conn, dlq, &msg, &tag, err, errlen);
        if (rc < 0) {
            json_decref(list);
            goto out;
        }
        if (rc == 0)
            break;
        json_array_append_new(list, describe(&msg));
        amqp_destroy_message(&msg);
    }
    out = json_pack("{s:s,s:I,s:o}", "queue", dlq, "count", (json_int_t)count, "messages", list);
out:
    /* Closing the channel requeues every unacked message in its original position. */
    rq_amqp_close(conn);
    return out;
}

/* Waits for confirms up to `last` (our publish tags start at 1). *confirmed is the highest
 * tag confirmed so far (in order), kept by the caller across batches: a batch's first confirm
 * may be a single ack of *confirmed + 1. Returns 0 or -1. */
static int wait_confirms(amqp_connection_state_t conn, uint64_t *confirmed, uint64_t last,
                         char *err, size_t errlen)
{
    while (*confirmed < last) {
        amqp_frame_t f;
        struct timeval tv = {5, 0};
        int rc = amqp_simple_wait_frame_noblock(conn, &f, &tv);
        if (rc != AMQP_STATUS_OK) {
            snprintf(err, errlen, "waiting for publisher confirms: %s", amqp_error_string2(rc));
            return -1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.channel == PUBLISH_CHANNEL && f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            if (a->multiple || a->delivery_tag == *confirmed + 1)
                *confirmed = a->delivery_tag > *confirmed ? a->delivery_tag : *confirmed;
        } else if (f.channel == PUBLISH_CHANNEL && f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            snprintf(err, errlen, "the broker nacked a replayed message");
            return -1;
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            snprintf(err, errlen, "the broker closed the channel during the replay");
            return -1;
        }
    }
    return 0;
}

/* Republishes one dead-lettered message to the request queue with its relayq attempt
 * counters and the broker's x-death history removed. */
static int republish(amqp_connection_state_t conn, const RabbitMQConfig *cfg,
                     const amqp_message_t *msg)
{
    amqp_basic_properties_t props = msg->properties;
    amqp_table_entry_t kept[32];
    int n = 0;

    if (props._flags & AMQP_BASIC_HEADERS_FLAG) {
        for (int i = 0; i < props.headers.num_entries && n < 31; i++) {
            amqp_table_entry_t *e = &props.headers.entries[i];
            if ((e->key.len >= 9 && memcmp(e->key.bytes, "x-relayq-", 9) == 0) ||
                (e->key.len >= 7 && memcmp(e->key.bytes, "x-death", 7) == 0) ||
                (e->key.len >= 7 && memcmp(e->key.bytes, "x-first", 7) == 0) ||
                (e->key.len >= 6 && memcmp(e->key.bytes, "x-last", 6) == 0))
                continue;
            kept[n++] = *e;
        }
    }
    kept[n].key = amqp_cstring_bytes("x-relayq-replayed");
    kept[n].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    kept[n++].value.value.boolean = 1;
    props._flags |= AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.headers.num_entries = n;
    props.headers.entries = kept;
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props._flags &= ~AMQP_BASIC_EXPIRATION_FLAG;
    return amqp_basic_publish(conn, PUBLISH_CHANNEL, amqp_empty_bytes,
                              amqp_cstring_bytes(cfg->request_queue), 0, 0, &props, msg->body);
}

long rq_dlq_retry(const RabbitMQConfig *cfg, size_t count, size_t *remaining, char *err,
                  size_t errlen)
{
    amqp_connection_state_t conn = rq_amqp_open(cfg, err, errlen);
    char dlq[300];
    size_t depth = 0;
    long moved = -1, done = 0;
    uint64_t published = 0, confirmed = 0;

    if (conn == NULL)
        return -1;
    rq_amqp_dlq_name(cfg, dlq, sizeof(dlq));
    if (queue_depth(conn, dlq, &depth, err, errlen) != 0)
        goto out;
    if (count == 0 || count > depth)
        count = depth;
    amqp_channel_open(conn, PUBLISH_CHANNEL);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "channel.open", err, errlen))
        goto out;
    amqp_confirm_select(conn, PUBLISH_CHANNEL);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "confirm.select", err, errlen))
        goto out;
    while ((size_t)done < count) {
        uint64_t last_get = 0;
        size_t batch = 0;
        while (batch < RETRY_BATCH && (size_t)done + batch < count) {
            amqp_message_t msg;
            int rc = get_one(conn, dlq, &msg, &last_get, err, errlen);
            if (rc < 0)
                goto out;
            if (rc == 0)
                break;
            rc = republish(conn, cfg, &msg);
            amqp_destroy_message(&msg);
            if (rc != AMQP_STATUS_OK) {
                snprintf(err, errlen, "basic.publish: %s", amqp_error_string2(rc));
                goto out;
            }
            published++;
            batch++;
        }
        if (batch == 0)
            break;
        /* Confirmed in the request queue: only now remove them from the DLQ. */
        if (wait_confirms(conn, &confirmed, published, err, errlen) != 0)
            goto out;
        if (amqp_basic_ack(conn, RQ_AMQP_CHANNEL, last_get, 1) != AMQP_STATUS_OK) {
            snprintf(err, errlen, "basic.ack on the DLQ failed");
            goto out;
        }
        done += (long)batch;
    }
    moved = done;
    if (queue_depth(conn, dlq, remaining, err, errlen) != 0)
        *remaining = depth - (size_t)done;
out:
    rq_amqp_close(conn);
    return moved;
}
