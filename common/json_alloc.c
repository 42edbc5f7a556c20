/* json_alloc.c - jansson's allocator, noting allocation failures per thread. */
#include "json_alloc.h"

#include <jansson.h>
#include <stdlib.h>

static _Thread_local int json_oom;

static void *json_alloc(size_t n)
{
    void *p = malloc(n);

    if (p == NULL)
        json_oom = 1;
    return p;
}

void rq_json_alloc_init(void)
{
    json_set_alloc_funcs(json_alloc, free);
}

void rq_json_oom_clear(void)
{
    json_oom = 0;
}

int rq_json_oom(void)
{
    return json_oom;
}
