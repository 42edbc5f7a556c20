/* http_util.c - JSON responses and the shared health/metrics endpoints. */
#include "http_util.h"

#include <stdlib.h>
#include <string.h>

#include "amqp_nodes.h"
#include "util.h"

enum MHD_Result rq_http_reply_buf(struct MHD_Connection *conn, unsigned status,
                                  const char *content_type, char *buf, size_t len,
                                  const char *hname, const char *hvalue)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(buf);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (hname != NULL)
        MHD_add_response_header(resp, hname, hvalue);
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result rq_http_reply_json(struct MHD_Connection *conn, unsigned status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);

    json_decref(body);
    if (text == NULL)
        return MHD_NO;
    return rq_http_reply_buf(conn, status, "application/json", text, strlen(text), NULL, NULL);
}

enum MHD_Result rq_http_reply_error(struct MHD_Connection *conn, unsigned status, const char *msg)
{
    return rq_http_reply_json(conn, status, json_pack("{s:s}", "error", msg));
}

enum MHD_Result rq_http_reply_405(struct MHD_Connection *conn, const char *allow)
{
    char *text = strdup("{\"error\":\"method not allowed\"}");

    if (text == NULL)
        return MHD_NO;
    return rq_http_reply_buf(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "application/json", text,
                             strlen(text), MHD_HTTP_HEADER_ALLOW, allow);
}

/* Builds the body of /health or /health/ready from the readiness callback. */
static enum MHD_Result reply_health(const rq_http_common_t *c, struct MHD_Connection *conn,
                                    const char *ok_word, const char *bad_word)
{
    char reason[256] = "", node[RQ_AMQP_NODE_HOST_MAX + 16];
    char ts[RQ_ISO8601_LEN + 1];
    int ready = c->ready == NULL ? 1 : c->ready(c->ready_arg, reason, sizeof(reason));
    json_t *body;

    rq_iso8601(rq_wall_ms(), ts);
    rq_amqp_node_in_use(node, sizeof(node));
    if (ready)
        body = json_pack("{s:s,s:s}", "status", ok_word, "timestamp", ts);
    else
        body = json_pack("{s:s,s:s,s:s}", "status", bad_word, "reason", reason, "timestamp", ts);
    /* the broker node of the latest connection (RABBITMQ_ADDRESSES), once there was one */
    if (body != NULL && node[0] != '\0' &&
        json_object_set_new(body, "node", json_string(node)) != 0) {
        json_decref(body);
        body = NULL;
    }
    return rq_http_reply_json(conn, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, body);
}

int rq_http_serve_common(const rq_http_common_t *c, struct MHD_Connection *conn, const char *method,
                         const char *url, enum MHD_Result *ret)
{
    int is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, "HEAD") == 0;
    char ts[RQ_ISO8601_LEN + 1];

    if (strcmp(url, "/health") != 0 && strcmp(url, "/health/live") != 0 &&
        strcmp(url, "/health/ready") != 0 && strcmp(url, "/metrics") != 0)
        return 0;
    if (!is_get) {
        *ret = rq_http_reply_405(conn, "GET, HEAD");
        return 1;
    }
    if (strcmp(url, "/health") == 0) {
        *ret = reply_health(c, conn, "healthy", "unhealthy");
    } else if (strcmp(url, "/health/ready") == 0) {
        *ret = reply_health(c, conn, "ready", "not_ready");
    } else if (strcmp(url, "/health/live") == 0) {
        rq_iso8601(rq_wall_ms(), ts);
        *ret = rq_http_reply_json(conn, MHD_HTTP_OK,
                                  json_pack("{s:s,s:s}", "status", "alive", "timestamp", ts));
    } else {
        size_t len = 0;
        char *text = rq_metrics_render(c->metrics, &len);
        if (text == NULL) {
            *ret = rq_http_reply_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
            return 1;
        }
        *ret = rq_http_reply_buf(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                                 text, len, NULL, NULL);
    }
    return 1;
}
