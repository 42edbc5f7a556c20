/* relayq_env_example - prints the `.env.example` document generated from the settings table.
 *
 * Usage: relayq_env_example > .env.example
 * The committed `.env.example` must equal this output (tests/unit/common/test_config.c checks it).
 */
#include <stdio.h>

#include "config.h"

int main(void)
{
    rq_config_print_env_example(stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("relayq_env_example: stdout");
        return 1;
    }
    return 0;
}
