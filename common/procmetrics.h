/* procmetrics.h - the process's own metrics, under the names every Prometheus client library
 * exports, read afresh at each scrape (a collector of the registry):
 *
 *   process_cpu_seconds_total        user + system CPU time (getrusage)
 *   process_resident_memory_bytes    resident set size (/proc/self/statm)
 *   process_virtual_memory_bytes     virtual memory size (/proc/self/statm)
 *   process_open_fds                 open file descriptors (/proc/self/fd)
 *   process_max_fds                  the soft RLIMIT_NOFILE
 *   process_start_time_seconds       Unix time the registration ran (start-up)
 *   process_threads                  threads of the process (/proc/self/stat)
 *   process_heap_bytes{state}        glibc malloc's view (mallinfo2): "in_use" is what the
 *                                    program holds (arena chunks plus mmapped blocks), "free"
 *                                    what malloc keeps for reuse without returning it
 *
 * RSS that grows while heap in_use stays flat is fragmentation (glibc's per-thread arenas);
 * in_use that grows with the work done is a leak. Where mallinfo2 does not exist (glibc before
 * 2.33, another libc) or reads nothing (AddressSanitizer's allocator) the heap family is not
 * registered. process_open_fds counts the three /proc descriptors the collector keeps open.
 */
#ifndef RQ_PROCMETRICS_H
#define RQ_PROCMETRICS_H

#include "metrics.h"

/* Registers the families above in m and a collector that refreshes them at each render (the
 * registry owns its state). Returns 0, or -1 on allocation failure or a name already
 * registered (then none of the collector runs; families registered so far stay). */
int rq_procmetrics_register(rq_metrics_t *m);

#endif
