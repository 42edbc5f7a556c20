/* config_table.h - internals of config.c, shared only with its unit tests.
 *
 * The settings table and the descriptor-driven value parser. Nothing outside config.c and
 * tests/unit/common/test_config.c should include this: services use config.h.
 */
#ifndef RQ_CONFIG_TABLE_H
#define RQ_CONFIG_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef enum rq_cfg_type {
    RQ_CFG_STRING, /* char * (heap copy); min..max bound the length in bytes */
    RQ_CFG_INT,    /* int; min..max */
    RQ_CFG_INT64,  /* int64_t; min..max */
    RQ_CFG_DOUBLE, /* double; dmin..dmax, finite decimal numbers only */
    RQ_CFG_BOOL,   /* bool; true|false|1|0|yes|no, case-insensitive */
    RQ_CFG_ENUM,   /* char * (heap copy of the canonical choice); one of `choices`; and the
                      choice's index as an int-sized enum at `enum_offset` */
} rq_cfg_type_t;

/* The sections of --help and .env.example, in print order. */
typedef enum rq_cfg_group {
    RQ_CFG_GROUP_GENERAL,
    RQ_CFG_GROUP_RABBITMQ,
    RQ_CFG_GROUP_PRODUCER,
    RQ_CFG_GROUP_CONSUMER,
    RQ_CFG_GROUP_COUNT,
} rq_cfg_group_t;

enum {
    RQ_CFG_SECRET = 1u << 0, /* never echo a value from the environment or a file */
};

/* One setting. `offset` is the field's offset in the struct the setting fills. */
typedef struct rq_cfg_desc {
    const char *name;           /* environment variable */
    rq_cfg_type_t type;         /* how the text is parsed and stored */
    const char *def;            /* default, as text (parsed like any other value) */
    size_t offset;              /* offsetof the field */
    int64_t min, max;           /* RQ_CFG_INT/INT64 bounds; RQ_CFG_STRING length bounds */
    double dmin, dmax;          /* RQ_CFG_DOUBLE bounds */
    const char *const *choices; /* RQ_CFG_ENUM: NULL-terminated */
    unsigned services;          /* RQ_SVC_* mask of the services that read it */
    unsigned flags;             /* RQ_CFG_SECRET */
    rq_cfg_group_t group;       /* section in --help and .env.example */
    const char *desc;           /* one line, no trailing period */
    size_t enum_offset; /* RQ_CFG_ENUM: offsetof the int-sized enum field that gets the index in
                           `choices`; 0: none */
} rq_cfg_desc_t;

/* The table of every setting, in print order. Returns a static array; *n gets its length. */
const rq_cfg_desc_t *rq_config_table(size_t *n);

/* Parses `value` as described by `d` and stores it in the field at `base + d->offset`
 * (a string field's old value is freed only on success; an RQ_CFG_ENUM also stores the
 * choice's index at `base + d->enum_offset`). Returns 0, or -1 with err filled:
 * the text starts with the variable name and gives the allowed range or choices. */
int rq_cfg_parse(const rq_cfg_desc_t *d, void *base, const char *value, rq_config_error_t *err);

/* Writes the allowed range or choices of `d` (e.g. "1..65535", "debug|info|warn|error")
 * into buf (always NUL-terminated). */
void rq_cfg_describe_range(const rq_cfg_desc_t *d, char *buf, size_t len);

#endif
