/* fuzz_env.c - libFuzzer harness: the .env line parser and config validation.
 * Parses the input as one line; a parsed NAME=value is then offered to rq_config_set, which
 * must accept or reject it without crashing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1);
    char *name = NULL, *value = NULL;
    rq_config_error_t err;
    rq_config_t c;

    if (line == NULL)
        abort();
    memcpy(line, data, size);
    line[size] = '\0';
    if (rq_env_parse_line(line, &name, &value, &err) == 0 && name != NULL) {
        if (value == NULL)
            abort();
        if (rq_config_defaults(&c) != 0)
            abort();
        rq_config_set(&c, name, value, &err);
        rq_config_free(&c);
    }
    free(line);
    return 0;
}
