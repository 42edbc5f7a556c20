/* static.c - the producer's public static routes: /openapi.json, /docs (+ /docs/<asset>),
 * /viewer (see static.h).
 *
 * The OpenAPI document and the viewer page are compiled in: scripts/gen-assets.py turns
 * docs/openapi.json and producer/rt/viewer.html into byte arrays at build time (CMake
 * defines RQ_HAVE_ASSETS when it compiles that file in; without it those routes answer 503).
 * Swagger UI is not: its files come from DOCS_UI_DIR (or the npm or packaged copy), on a
 * fixed allow-list, read once and kept for the process's life.
 */
#include "static.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef RQ_HAVE_ASSETS
extern const unsigned char rq_asset_openapi_json[];
extern const size_t rq_asset_openapi_json_len;
extern const unsigned char rq_asset_viewer_html[];
extern const size_t rq_asset_viewer_html_len;
#endif

#define ASSET_MAX_BYTES (16u * 1024u * 1024u) /* a Swagger UI file larger than this: refused */
#define CC_REVALIDATE "no-cache"              /* the compiled-in pages change with a build */
#define CC_ASSET "public, max-age=86400"

/* The /docs page: Swagger UI from /docs/<asset>, reading /openapi.json. */
static const char DOCS_PAGE[] =
    "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>relayq API</title>\n"
    "<link rel=\"icon\" type=\"image/png\" href=\"/docs/favicon-32x32.png\">\n"
    "<link rel=\"stylesheet\" href=\"/docs/swagger-ui.css\">\n</head>\n<body>\n"
    "<div id=\"swagger-ui\"></div>\n"
    "<script src=\"/docs/swagger-ui-bundle.js\"></script>\n"
    "<script src=\"/docs/swagger-ui-standalone-preset.js\"></script>\n"
    "<script>\nwindow.ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui',\n"
    "  deepLinking: true, presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],\n"
    "  layout: 'StandaloneLayout'});\n</script>\n</body>\n</html>\n";

/* One served file: its bytes and its ETag (a quoted FNV-1a 64 of the bytes). */
typedef struct {
    const unsigned char *data;
    size_t len;
    char etag[20];
} blob_t;

/* The Swagger UI allow-list: /docs/<name>, nothing else is read from the directory. */
static const struct {
    const char *name;
    const char *type;
} ASSETS[] = {
    {"swagger-ui-bundle.js", "text/javascript; charset=utf-8"},
    {"swagger-ui-standalone-preset.js", "text/javascript; charset=utf-8"},
    {"swagger-ui.css", "text/css; charset=utf-8"},
    {"favicon-32x32.png", "image/png"},
    {"favicon-16x16.png", "image/png"},
};
#define NASSETS (sizeof(ASSETS) / sizeof(ASSETS[0]))

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static blob_t cache[NASSETS];      /* data != NULL once read */
static char cache_dir[PATH_MAX];   /* where they were read from */
static blob_t page_docs, page_api; /* made once (etag[0] != '\0') */
#ifdef RQ_HAVE_ASSETS
static blob_t page_viewer;
#endif

/* Fills b's ETag from its bytes. */
static void blob_tag(blob_t *b)
{
    unsigned long long h = 1469598103934665603ULL;

    for (size_t i = 0; i < b->len; i++) {
        h ^= b->data[i];
        h *= 1099511628211ULL;
    }
    snprintf(b->etag, sizeof(b->etag), "\"%016llx\"", h);
}

/* A compiled-in blob, tagged on first use (under cache_lock). */
static const blob_t *blob_once(blob_t *b, const void *data, size_t len)
{
    pthread_mutex_lock(&cache_lock);
    if (b->etag[0] == '\0') {
        b->data = data;
        b->len = len;
        blob_tag(b);
    }
    pthread_mutex_unlock(&cache_lock);
    return b;
}

/* 1 when If-None-Match holds `etag` (or is "*"). */
static int etag_matches(struct MHD_Connection *conn, const char *etag)
{
    const char *inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "If-None-Match");

    if (inm == NULL)
        return 0;
    return strcmp(inm, "*") == 0 || strstr(inm, etag) != NULL;
}

/* 200 with b's bytes (persistent: not copied), or 304 when the client has them. */
static enum MHD_Result reply_blob(req_ctx_t *c, const blob_t *b, const char *type,
                                  const char *cache_control)
{
    int fresh = etag_matches(c->conn, b->etag);
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(fresh ? 0 : b->len, fresh ? NULL : (void *)b->data,
                                           MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    if (!fresh)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, b->etag);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, cache_control);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    c->status = fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK;
    ret = MHD_queue_response(c->conn, c->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Reads dir/name whole into *b (at most ASSET_MAX_BYTES). Returns 0, or -1. */
static int read_asset(const char *dir, const char *name, blob_t *b)
{
    char path[PATH_MAX];
    unsigned char *data = NULL;
    FILE *f = NULL;
    struct stat st;
    int rc = -1;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
        goto out;
    f = fopen(path, "rb");
    if (f == NULL || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) ||
        st.st_size > (off_t)ASSET_MAX_BYTES)
        goto out;
    data = malloc((size_t)st.st_size + 1);
    if (data == NULL || fread(data, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
        goto out;
    b->data = data;
    b->len = (size_t)st.st_size;
    blob_tag(b);
    data = NULL;
    rc = 0;
out:
    free(data);
    if (f != NULL)
        fclose(f);
    return rc;
}

/* The Swagger UI directory to use: DOCS_UI_DIR when set, else the first of
 * <dir of the executable>/../npm/node_modules/swagger-ui-dist and /usr/share/relayq/swagger-ui
 * that holds swagger-ui-bundle.js. Writes it into out (cap bytes). */
static void ui_dir(const rq_config_t *cfg, char *out, size_t cap)
{
    char exe[PATH_MAX], probe[PATH_MAX + 32];
    ssize_t n;

    if (cfg->docs_ui_dir != NULL && cfg->docs_ui_dir[0] != '\0') {
        snprintf(out, cap, "%s", cfg->docs_ui_dir);
        return;
    }
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash != NULL) {
            *slash = '\0';
            snprintf(out, cap, "%s/../npm/node_modules/swagger-ui-dist", exe);
            snprintf(probe, sizeof(probe), "%s/swagger-ui-bundle.js", out);
            if (access(probe, R_OK) == 0)
                return;
        }
    }
    snprintf(out, cap, "%s", "/usr/share/relayq/swagger-ui");
}

/* Reads every allow-listed asset once (all or none; a failure is tried again on a later
 * request, so files installed after the start are found). Under cache_lock. Returns 0, or -1
 * with the directory tried in dir. */
static int cache_fill(const rq_config_t *cfg, char *dir, size_t cap)
{
    blob_t got[NASSETS];
    size_t i;
    int rc = -1;

    if (cache[0].data != NULL) {
        snprintf(dir, cap, "%s", cache_dir);
        return 0;
    }
    memset(got, 0, sizeof(got));
    ui_dir(cfg, dir, cap);
    for (i = 0; i < NASSETS; i++)
        if (read_asset(dir, ASSETS[i].name, &got[i]) != 0)
            goto out;
    memcpy(cache, got, sizeof(cache));
    memset(got, 0, sizeof(got));
    snprintf(cache_dir, sizeof(cache_dir), "%s", dir);
    rc = 0;
out:
    for (i = 0; i < NASSETS; i++)
        free((void *)got[i].data);
    return rc;
}

/* 503 naming DOCS_UI_DIR and the directory tried. */
static enum MHD_Result reply_no_ui(req_ctx_t *c, const char *dir)
{
    json_t *o = json_pack("{s:s,s:s,s:s}", "error",
                          "Swagger UI files not found: set DOCS_UI_DIR to a swagger-ui-dist "
                          "directory (npm install swagger-ui-dist)",
                          "setting", "DOCS_UI_DIR", "dir", dir);
    return rq_api_reply_503_json(c, o);
}

/* GET /docs/<name>: an allow-listed Swagger UI file. */
static enum MHD_Result serve_asset(req_ctx_t *c, const char *name)
{
    char dir[PATH_MAX];
    size_t i;
    int rc;

    for (i = 0; i < NASSETS; i++)
        if (strcmp(name, ASSETS[i].name) == 0)
            break;
    if (i == NASSETS)
        return rq_api_reply_error(c, MHD_HTTP_NOT_FOUND, "no such documentation file");
    pthread_mutex_lock(&cache_lock);
    rc = cache_fill(c->api->cfg, dir, sizeof(dir));
    pthread_mutex_unlock(&cache_lock);
    if (rc != 0)
        return reply_no_ui(c, dir);
    return reply_blob(c, &cache[i], ASSETS[i].type, CC_ASSET);
}

/* GET /docs: the page, or 503 when Swagger UI cannot be served (the page would be blank). */
static enum MHD_Result serve_docs(req_ctx_t *c)
{
    char dir[PATH_MAX];
    int rc;

    pthread_mutex_lock(&cache_lock);
    rc = cache_fill(c->api->cfg, dir, sizeof(dir));
    pthread_mutex_unlock(&cache_lock);
    if (rc != 0)
        return reply_no_ui(c, dir);
    return reply_blob(c, blob_once(&page_docs, DOCS_PAGE, sizeof(DOCS_PAGE) - 1),
                      "text/html; charset=utf-8", CC_REVALIDATE);
}

enum MHD_Result rq_static_route(req_ctx_t *c, const char *url)
{
    const char *m = c->method;

    if (strcmp(url, "/openapi.json") != 0 && strcmp(url, "/viewer") != 0 &&
        strcmp(url, "/docs") != 0 && strncmp(url, "/docs/", 6) != 0)
        return rq_api_reply_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
    if (m == NULL || (strcmp(m, MHD_HTTP_METHOD_GET) != 0 && strcmp(m, MHD_HTTP_METHOD_HEAD) != 0))
        return rq_api_reply_405(c, "GET, HEAD");
    if (strcmp(url, "/docs") == 0)
        return serve_docs(c);
    if (strncmp(url, "/docs/", 6) == 0)
        return serve_asset(c, url + 6);
#ifdef RQ_HAVE_ASSETS
    if (strcmp(url, "/openapi.json") == 0)
        return reply_blob(c, blob_once(&page_api, rq_asset_openapi_json, rq_asset_openapi_json_len),
                          "application/json", CC_REVALIDATE);
    return reply_blob(c, blob_once(&page_viewer, rq_asset_viewer_html, rq_asset_viewer_html_len),
                      "text/html; charset=utf-8", CC_REVALIDATE);
#else
    (void)page_api;
    return rq_api_reply_503(c, "not compiled in: this build lacks the generated assets "
                               "(scripts/gen-assets.py)");
#endif
}

void rq_static_cleanup(void)
{
    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; i < NASSETS; i++) {
        free((void *)cache[i].data);
        memset(&cache[i], 0, sizeof(cache[i]));
    }
    cache_dir[0] = '\0';
    pthread_mutex_unlock(&cache_lock);
}
