/* static.h - the producer's public static routes (issue 18): the OpenAPI document, the API
 * docs page (Swagger UI) and the live viewer.
 *
 *   GET/HEAD /openapi.json    docs/openapi.json, embedded at build time (application/json)
 *   GET/HEAD /docs            a small HTML page that loads Swagger UI from /docs/<asset>
 *   GET/HEAD /docs/<asset>    a fixed allow-list of swagger-ui-dist files, read once from
 *                             DOCS_UI_DIR (or its defaults) and cached; 503 JSON when missing
 *   GET/HEAD /viewer          producer/rt/viewer.html, embedded at build time
 *
 * Every answer has an ETag (If-None-Match: 304) and Cache-Control. These routes need no key:
 * api.c routes R_OPENAPI/R_DOCS/R_VIEWER here without admission checks.
 *
 * Internal to the producer's API: not a public interface.
 */
#ifndef RQ_API_STATIC_H
#define RQ_API_STATIC_H

#include "api_ctx.h"

/* Answers the static route `url` (the request's path, without the query) on c: 200/304 for
 * GET and HEAD, 405 with Allow: GET, HEAD for another method, 404 JSON for a /docs/<asset>
 * that is not on the allow-list (or a url that is none of the routes above), 503 JSON naming
 * DOCS_UI_DIR when a Swagger UI asset cannot be read. Thread-safe (the asset cache is
 * filled once, under a lock). Returns MHD's result of queueing the response. */
enum MHD_Result rq_static_route(req_ctx_t *c, const char *url);

/* Frees the Swagger UI asset cache (at exit; optional, for leak checkers). */
void rq_static_cleanup(void);

#endif
