/* curl_lazy.c - loads libcurl.so.4 at run time: see curl_lazy.h. */
#define RQ_CURL_LAZY_IMPL 1
#include "curl_lazy.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* The soname of libcurl 7.16 and later (Debian's libcurl4, libcurl3-gnutls is another name). */
#define RQ_CURL_SONAME "libcurl.so.4"

rq_curl_api_t rq_curl_api;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_err[256];
static int load_rc = -1;

static void load(void)
{
    rq_curl_api_t api;
    void *lib = dlopen(RQ_CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
    void *sym;

    if (lib == NULL) {
        const char *why = dlerror();
        snprintf(load_err, sizeof(load_err),
                 "cannot load " RQ_CURL_SONAME " (Debian: apt-get install libcurl4): %s",
                 why ? why : "?");
        return;
    }
    memset(&api, 0, sizeof(api));
    /* dlsym's void * to a function pointer: POSIX allows it; memcpy keeps -Wpedantic quiet. */
#define RQ_CURL_RESOLVE(name)                                                                      \
    sym = dlsym(lib, #name);                                                                       \
    if (sym == NULL) {                                                                             \
        snprintf(load_err, sizeof(load_err), RQ_CURL_SONAME " has no %s (too old a libcurl)",      \
                 #name);                                                                           \
        goto fail;                                                                                 \
    }                                                                                              \
    memcpy(&api.name, &sym, sizeof(sym));
    RQ_CURL_FUNCS(RQ_CURL_RESOLVE)
#undef RQ_CURL_RESOLVE
    rq_curl_api = api;
    load_rc = 0;
    return;
fail:
    dlclose(lib);
}

int rq_curl_load(char *err, size_t errlen)
{
    pthread_once(&load_once, load);
    if (load_rc != 0)
        rq_errf(err, errlen, "%s", load_err);
    return load_rc;
}
