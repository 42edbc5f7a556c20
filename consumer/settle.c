/* settle.c - acknowledgement planning for a group of deliveries (see settle.h). */
#include "settle.h"

size_t rq_settle_plan(const uint64_t *tags, const rq_disp_t *disp, size_t n, uint64_t other,
                      rq_settle_op_t *ops)
{
    size_t nops = 0;
    int ascending = 1;

    for (size_t i = 1; i < n; i++) {
        if (tags[i] <= tags[i - 1]) {
            ascending = 0;
            break;
        }
    }
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;

        /* j = end of the run of equal dispositions starting at i; `multiple` would also settle
         * `other` (outstanding, not ours), so no run reaches it */
        while (ascending && j < n && disp[j] == disp[i] && tags[j] < other)
            j++;
        ops[nops].disp = disp[i];
        ops[nops].tag = tags[j - 1];
        ops[nops].multiple = j - i > 1;
        nops++;
        i = j;
    }
    return nops;
}

const char *rq_disp_name(rq_disp_t d)
{
    switch (d) {
    case RQ_DISP_ACK:
        return "ack";
    case RQ_DISP_REJECT:
        return "reject";
    case RQ_DISP_REQUEUE:
        return "requeue";
    }
    return "?";
}
