/* curl_lazy.h - libcurl, loaded at run time (dlopen) by the only module that needs it.
 *
 * Only a webhook consumer (HANDLER=http(s)://...) uses libcurl, and libcurl brings a dozen
 * libraries with it (Kerberos, LDAP, HTTP/2, SSH, RTMP, PSL): linked at build time they
 * were mapped, relocated and initialised in every consumer, an echo or exec one included
 * (about 1.5 MB more of peak RSS and a slower start). handler_webhook.c includes this header
 * instead of <curl/curl.h>: each curl_* function it calls names a pointer in rq_curl_api,
 * filled by rq_curl_load() from libcurl.so.4 (the soname of Debian's libcurl4 packages).
 * The types come from the headers of the build (libcurl4-openssl-dev); the functions used
 * are all in libcurl's stable ABI (soname 4, curl_url_* since 7.62).
 *
 * The type-checking macros of <curl/curl.h> (typecheck-gcc.h) are off here: they wrap the
 * real functions' names, which this header maps to pointers. */
#ifndef RQ_CURL_LAZY_H
#define RQ_CURL_LAZY_H

#include <stddef.h>

#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

/* X(name): every libcurl function handler_webhook.c calls. */
#define RQ_CURL_FUNCS(X)                                                                           \
    X(curl_global_init)                                                                            \
    X(curl_global_cleanup)                                                                         \
    X(curl_version_info)                                                                           \
    X(curl_easy_init)                                                                              \
    X(curl_easy_reset)                                                                             \
    X(curl_easy_cleanup)                                                                           \
    X(curl_easy_setopt)                                                                            \
    X(curl_easy_getinfo)                                                                           \
    X(curl_easy_strerror)                                                                          \
    X(curl_multi_init)                                                                             \
    X(curl_multi_cleanup)                                                                          \
    X(curl_multi_setopt)                                                                           \
    X(curl_multi_add_handle)                                                                       \
    X(curl_multi_remove_handle)                                                                    \
    X(curl_multi_socket_action)                                                                    \
    X(curl_multi_info_read)                                                                        \
    X(curl_slist_append)                                                                           \
    X(curl_slist_free_all)                                                                         \
    X(curl_url)                                                                                    \
    X(curl_url_cleanup)                                                                            \
    X(curl_url_set)                                                                                \
    X(curl_url_strerror)

#define RQ_CURL_MEMBER(name) __typeof__(name) *name;
typedef struct rq_curl_api {
    RQ_CURL_FUNCS(RQ_CURL_MEMBER)
} rq_curl_api_t;
#undef RQ_CURL_MEMBER

/* The loaded functions; every pointer is NULL until rq_curl_load() succeeded. */
extern rq_curl_api_t rq_curl_api;

/* Loads libcurl.so.4 and resolves every function of RQ_CURL_FUNCS, once per process
 * (thread-safe; later calls return the first call's result). Returns 0, or -1 with the
 * reason (dlopen's or the first missing symbol's) in err[0..errlen). The library stays
 * loaded until the process ends. */
int rq_curl_load(char *err, size_t errlen);

#ifndef RQ_CURL_LAZY_IMPL
/* <curl/curl.h> defines these three as function-like macros naming themselves. */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt
#define curl_global_init rq_curl_api.curl_global_init
#define curl_global_cleanup rq_curl_api.curl_global_cleanup
#define curl_version_info rq_curl_api.curl_version_info
#define curl_easy_init rq_curl_api.curl_easy_init
#define curl_easy_reset rq_curl_api.curl_easy_reset
#define curl_easy_cleanup rq_curl_api.curl_easy_cleanup
#define curl_easy_setopt rq_curl_api.curl_easy_setopt
#define curl_easy_getinfo rq_curl_api.curl_easy_getinfo
#define curl_easy_strerror rq_curl_api.curl_easy_strerror
#define curl_multi_init rq_curl_api.curl_multi_init
#define curl_multi_cleanup rq_curl_api.curl_multi_cleanup
#define curl_multi_setopt rq_curl_api.curl_multi_setopt
#define curl_multi_add_handle rq_curl_api.curl_multi_add_handle
#define curl_multi_remove_handle rq_curl_api.curl_multi_remove_handle
#define curl_multi_socket_action rq_curl_api.curl_multi_socket_action
#define curl_multi_info_read rq_curl_api.curl_multi_info_read
#define curl_slist_append rq_curl_api.curl_slist_append
#define curl_slist_free_all rq_curl_api.curl_slist_free_all
#define curl_url rq_curl_api.curl_url
#define curl_url_cleanup rq_curl_api.curl_url_cleanup
#define curl_url_set rq_curl_api.curl_url_set
#define curl_url_strerror rq_curl_api.curl_url_strerror
#endif

#endif
