/* fuzz_linesplit.c - libFuzzer harness: the tailer's line splitter.
 * Byte 0 picks max_line (1..32) and the policy; the rest is fed in chunks whose sizes come
 * from the data itself. Invariants: records tile the stream (each offset is the previous
 * end); with SPLIT, concatenating every record (plus '\n' where it had one) and the final
 * flush gives back the input byte for byte; no FULL or PIECE record exceeds max_line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "linesplit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t max_line, pos = 1, outlen = 0;
    rq_overlong_t policy;
    rq_linesplit_t *ls;
    rq_line_t line;
    int64_t expect = 0;
    uint8_t *out;

    if (size < 1)
        return 0;
    max_line = (size_t)(data[0] & 31) + 1;
    policy = (data[0] & 32) ? RQ_OVERLONG_SKIP : RQ_OVERLONG_SPLIT;
    ls = rq_linesplit_new(max_line, policy);
    out = malloc(size + 1);
    if (ls == NULL || out == NULL)
        abort();
    while (pos < size) {
        size_t chunk = (size_t)(data[pos] % 7) + 1;
        if (chunk > size - pos)
            chunk = size - pos;
        if (rq_linesplit_feed(ls, data + pos, chunk) != 0)
            abort();
        pos += chunk;
        while (rq_linesplit_next(ls, &line) == 1) {
            if (line.offset != expect || line.end < line.offset)
                abort();
            if ((line.kind == RQ_LINE_FULL || line.kind == RQ_LINE_PIECE) && line.len > max_line)
                abort();
            if (line.kind != RQ_LINE_SKIPPED) {
                memcpy(out + outlen, line.data, line.len);
                outlen += line.len;
                if (line.newline)
                    out[outlen++] = '\n';
            }
            expect = line.end;
        }
    }
    if (rq_linesplit_flush(ls, &line) == 1) {
        if (line.offset != expect)
            abort();
        if (line.kind != RQ_LINE_SKIPPED) {
            memcpy(out + outlen, line.data, line.len);
            outlen += line.len;
        }
    }
    if (policy == RQ_OVERLONG_SPLIT && (outlen != size - 1 || memcmp(out, data + 1, outlen) != 0))
        abort();
    free(out);
    rq_linesplit_free(ls);
    return 0;
}
