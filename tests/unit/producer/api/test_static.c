/* Unit tests for producer/api/static.c (issue 18): /openapi.json, /viewer, /docs and its
 * Swagger UI files, through a real libmicrohttpd daemon on 127.0.0.1 (no broker needed):
 * content types, ETag and 304, Cache-Control, 405, the asset allow-list (no path traversal),
 * the 503 that names DOCS_UI_DIR, and files read once. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "static.h"

TestSuite(static_routes, .timeout = 30);

static rq_config_t cfg;
static rq_api_t api;
static struct MHD_Daemon *daemon_;
static unsigned port;
static char uidir[64];

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls)
{
    static int marker;
    req_ctx_t c;

    if (*con_cls == NULL) {
        *con_cls = &marker;
        return MHD_YES;
    }
    *upload_data_size = 0;
    memset(&c, 0, sizeof(c));
    c.api = &api;
    c.conn = conn;
    c.method = method;
    return rq_static_route(&c, url);
}

static void start(const char *docs_ui_dir)
{
    const union MHD_DaemonInfo *info;

    memset(&cfg, 0, sizeof(cfg));
    memset(&api, 0, sizeof(api));
    cfg.docs_ui_dir = (char *)docs_ui_dir;
    api.cfg = &cfg;
    daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, handler, NULL,
                               MHD_OPTION_END);
    cr_assert_not_null(daemon_);
    info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
    cr_assert_not_null(info);
    port = info->port;
}

static void stop(void)
{
    if (daemon_ != NULL)
        MHD_stop_daemon(daemon_);
    daemon_ = NULL;
    rq_static_cleanup();
}

/* One request; returns the whole answer (malloc'd, NUL-terminated), status in *status. */
static char *http(const char *method, const char *path, const char *extra, unsigned *status)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = 5};
    char req[512];
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ssize_t n;

    cr_assert(fd >= 0 && out != NULL);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n",
             method, path, extra ? extra : "");
    cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    while ((n = read(fd, out + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (cap - len < 4096) {
            cap *= 2;
            out = realloc(out, cap);
            cr_assert_not_null(out);
        }
    }
    close(fd);
    out[len] = '\0';
    *status = 0;
    sscanf(out, "HTTP/1.1 %u", status);
    return out;
}

/* The value of header `name` in answer `a` (copied into v), or NULL. */
static const char *header(const char *a, const char *name, char *v, size_t cap)
{
    char key[64];
    const char *p;

    snprintf(key, sizeof(key), "\r\n%s: ", name);
    for (p = a; *p != '\0' && strncasecmp(p, key, strlen(key)) != 0; p++)
        ;
    if (*p == '\0')
        p = NULL;
    if (p == NULL)
        return NULL;
    p += strlen(key);
    snprintf(v, cap, "%.*s", (int)strcspn(p, "\r\n"), p);
    return v;
}

static const char *body_of(const char *a)
{
    const char *p = strstr(a, "\r\n\r\n");
    return p ? p + 4 : "";
}

/* A Swagger UI directory with every allow-listed file ("<name> v1"). */
static void make_uidir(void)
{
    static const char *const names[] = {"swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                                        "swagger-ui.css", "favicon-32x32.png", "favicon-16x16.png"};
    char path[128];

    snprintf(uidir, sizeof(uidir), "/tmp/rq_static_XXXXXX");
    cr_assert_not_null(mkdtemp(uidir));
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", uidir, names[i]);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fprintf(f, "%s v1", names[i]);
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s/secret.txt", uidir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("not served", f);
    fclose(f);
}

static void rm_uidir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", uidir);
    cr_assert_eq(system(cmd), 0);
}

Test(static_routes, openapi_json_with_etag_and_304)
{
    unsigned st;
    char etag[64], v[128], extra[128];
    json_error_t jerr;

    start("/nonexistent");
    char *a = http("GET", "/openapi.json", NULL, &st);
    cr_assert_eq(st, 200, "%s", a);
    cr_assert_str_eq(header(a, "Content-Type", v, sizeof(v)), "application/json");
    cr_assert_str_eq(header(a, "Cache-Control", v, sizeof(v)), "no-cache");
    cr_assert_not_null(header(a, "ETag", etag, sizeof(etag)));
    cr_assert_eq(etag[0], '"');
    json_t *doc = json_loads(body_of(a), 0, &jerr);
    cr_assert_not_null(doc, "openapi.json: %s", jerr.text);
    cr_assert_str_eq(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
    cr_assert_not_null(json_object_get(json_object_get(doc, "paths"), "/produce"));
    json_decref(doc);
    free(a);

    snprintf(extra, sizeof(extra), "If-None-Match: %s\r\n", etag);
    a = http("GET", "/openapi.json", extra, &st);
    cr_assert_eq(st, 304, "%s", a);
    cr_assert_str_eq(body_of(a), "");
    free(a);
    a = http("GET", "/openapi.json", "If-None-Match: \"0000000000000000\"\r\n", &st);
    cr_assert_eq(st, 200);
    free(a);
    a = http("HEAD", "/openapi.json", NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(body_of(a), "");
    free(a);
    stop();
}

Test(static_routes, viewer_page_and_405)
{
    unsigned st;
    char v[128];

    start("/nonexistent");
    char *a = http("GET", "/viewer", NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(header(a, "Content-Type", v, sizeof(v)), "text/html; charset=utf-8");
    cr_assert_not_null(strstr(body_of(a), "EventSource"));
    free(a);
    a = http("POST", "/viewer", "Content-Length: 0\r\n", &st);
    cr_assert_eq(st, 405);
    cr_assert_str_eq(header(a, "Allow", v, sizeof(v)), "GET, HEAD");
    free(a);
    a = http("DELETE", "/openapi.json", NULL, &st);
    cr_assert_eq(st, 405);
    free(a);
    stop();
}

Test(static_routes, missing_swagger_ui_is_503_naming_the_setting)
{
    unsigned st;
    char v[64];

    start("/nonexistent/swagger");
    char *a = http("GET", "/docs/swagger-ui-bundle.js", NULL, &st);
    cr_assert_eq(st, 503, "%s", a);
    cr_assert_not_null(strstr(body_of(a), "DOCS_UI_DIR"), "%s", a);
    cr_assert_not_null(strstr(body_of(a), "/nonexistent/swagger"), "%s", a);
    cr_assert_not_null(header(a, "Retry-After", v, sizeof(v)));
    free(a);
    a = http("GET", "/docs", NULL, &st);
    cr_assert_eq(st, 503, "%s", a);
    free(a);
    stop();
}

Test(static_routes, docs_page_and_allow_listed_assets_only)
{
    unsigned st;
    char v[128];

    make_uidir();
    start(uidir);
    char *a = http("GET", "/docs", NULL, &st);
    cr_assert_eq(st, 200, "%s", a);
    cr_assert_not_null(strstr(body_of(a), "/docs/swagger-ui-bundle.js"));
    cr_assert_not_null(strstr(body_of(a), "/openapi.json"));
    free(a);
    a = http("GET", "/docs/swagger-ui.css", NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(header(a, "Content-Type", v, sizeof(v)), "text/css; charset=utf-8");
    cr_assert_str_eq(header(a, "Cache-Control", v, sizeof(v)), "public, max-age=86400");
    cr_assert_str_eq(body_of(a), "swagger-ui.css v1");
    free(a);
    static const char *const bad[] = {"/docs/secret.txt", "/docs/../static.c",
                                      "/docs/%2e%2e/etc/passwd", "/docs/", "/docs/swagger-ui.css/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        a = http("GET", bad[i], NULL, &st);
        cr_assert_eq(st, 404, "%s: %s", bad[i], a);
        cr_assert_null(strstr(a, "not served"));
        free(a);
    }
    /* read once: a file changed or removed afterwards is still served as first read */
    char path[128];
    snprintf(path, sizeof(path), "%s/swagger-ui-bundle.js", uidir);
    cr_assert_eq(unlink(path), 0);
    a = http("GET", "/docs/swagger-ui-bundle.js", NULL, &st);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(body_of(a), "swagger-ui-bundle.js v1");
    free(a);
    stop();
    rm_uidir();
}

Test(static_routes, missing_files_are_looked_for_again)
{
    unsigned st;
    char path[128];

    make_uidir();
    snprintf(path, sizeof(path), "%s/swagger-ui.css", uidir);
    cr_assert_eq(rename(path, "/tmp/rq_static_moved.css"), 0);
    start(uidir);
    char *a = http("GET", "/docs/favicon-16x16.png", NULL, &st);
    cr_assert_eq(st, 503, "%s", a);
    free(a);
    cr_assert_eq(rename("/tmp/rq_static_moved.css", path), 0);
    a = http("GET", "/docs/favicon-16x16.png", NULL, &st);
    cr_assert_eq(st, 200, "%s", a);
    free(a);
    stop();
    rm_uidir();
}
