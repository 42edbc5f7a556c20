/* rq_sse_bench - many SSE subscribers on one topic, and a publisher at a fixed rate (issue 18's
 * benchmark, `make bench` step 12).
 *
 *   rq_sse_bench [-H host] [-p port] [-t topic] [-n subscribers] [-r messages/s]
 *                [-d seconds] [-k token] [-P producer-pid]
 *
 * Opens n connections to GET /topics/<topic>/events (HTTP/1.0: the stream is not chunked),
 * waits until every one has its ": subscribed" line, then publishes r messages a second for
 * d seconds through POST /topics/<topic>/messages on one keep-alive connection, each payload
 * {"t": <CLOCK_MONOTONIC ns>, "seq": k}. Every subscriber's events are read on one epoll loop
 * and their latency (receipt - t) recorded. Prints one JSON object: subscribers, published,
 * expected and received events, lost, latency p50/p99/max in ms, the producer's peak VmRSS
 * (sampled every 100 ms with -P) and how many streams ended early.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_MAX 65536

typedef struct sub {
    int fd;
    int subscribed, ended, headers_done;
    size_t len;
    char buf[BUF_MAX];
    uint64_t events;
} sub_t;

static struct {
    const char *host, *topic, *token;
    int port, n, rate, secs, pid;
} opt = {"127.0.0.1", "bench", NULL, 5000, 1000, 200, 20, 0};

static atomic_int published, publish_errors;
static atomic_int publishing_done;
static uint32_t *lat_us;
static size_t lat_n, lat_cap;
static long rss_peak_kb;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int connect_to(int nonblock)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    int fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    int one = 1;

    if (fd < 0)
        return -1;
    inet_pton(AF_INET, opt.host, &a.sin_addr);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void record(uint32_t us)
{
    if (lat_n == lat_cap) {
        size_t cap = lat_cap ? lat_cap * 2 : 1 << 20;
        uint32_t *p = realloc(lat_us, cap * sizeof *p);
        if (p == NULL)
            return;
        lat_us = p;
        lat_cap = cap;
    }
    lat_us[lat_n++] = us;
}

/* Consumes the complete lines of s->buf. */
static void parse_lines(sub_t *s)
{
    size_t start = 0;
    for (size_t i = 0; i < s->len; i++) {
        if (s->buf[i] != '\n')
            continue;
        char *line = s->buf + start;
        size_t ll = i - start;
        line[ll] = '\0';
        if (!s->headers_done) {
            if (ll == 0 || (ll == 1 && line[0] == '\r'))
                s->headers_done = 1;
        } else if (strncmp(line, ": subscribed", 12) == 0) {
            s->subscribed = 1;
        } else if (strncmp(line, "event: end", 10) == 0) {
            s->ended = 1;
        } else if (strncmp(line, "data: ", 6) == 0) {
            char *t = strstr(line, "\"t\":");
            if (t != NULL) {
                int64_t sent = strtoll(t + 4, NULL, 10), d = now_ns() - sent;
                record(d > 0 ? (uint32_t)(d / 1000) : 0);
                s->events++;
            }
        }
        start = i + 1;
    }
    memmove(s->buf, s->buf + start, s->len - start);
    s->len -= start;
}

static void *publisher(void *arg)
{
    (void)arg;
    int fd = connect_to(0);
    char req[1024], body[128], resp[4096];
    int64_t t0 = now_ns(), period = 1000000000LL / opt.rate;
    int total = opt.rate * opt.secs;

    for (int k = 0; k < total && fd >= 0; k++) {
        int64_t due = t0 + k * period, w;
        while ((w = due - now_ns()) > 0) {
            struct timespec ts = {w / 1000000000LL, w % 1000000000LL};
            nanosleep(&ts, NULL);
        }
        int bl = snprintf(body, sizeof body,
                          "{\"payload\":{\"t\":%lld,\"seq\":%d},\"routing_key\":\"bench.k\"}",
                          (long long)now_ns(), k);
        int rl = snprintf(req, sizeof req,
                          "POST /topics/%s/messages HTTP/1.1\r\nHost: x\r\nContent-Type: "
                          "application/json\r\nContent-Length: %d\r\n%s%s%s\r\n%s",
                          opt.topic, bl, opt.token ? "Authorization: Bearer " : "",
                          opt.token ? opt.token : "", opt.token ? "\r\n" : "", body);
        if (write_all(fd, req, (size_t)rl) != 0)
            break;
        /* read one answer: headers + Content-Length body */
        size_t got = 0;
        long clen = -1;
        char *hend = NULL;
        for (;;) {
            ssize_t r = read(fd, resp + got, sizeof resp - 1 - got);
            if (r <= 0)
                goto out;
            got += (size_t)r;
            resp[got] = '\0';
            if (hend == NULL && (hend = strstr(resp, "\r\n\r\n")) != NULL) {
                char *cl = strcasestr(resp, "Content-Length:");
                clen = cl ? strtol(cl + 15, NULL, 10) : 0;
            }
            if (hend != NULL && (long)(got - (size_t)(hend + 4 - resp)) >= clen)
                break;
        }
        if (strncmp(resp + 9, "201", 3) == 0)
            atomic_fetch_add(&published, 1);
        else
            atomic_fetch_add(&publish_errors, 1);
    }
out:
    if (fd >= 0)
        close(fd);
    atomic_store(&publishing_done, 1);
    return NULL;
}

static long rss_kb(void)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", opt.pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Reads what is ready on s; 0, or -1 when the stream closed. */
static int pump(sub_t *s)
{
    for (;;) {
        ssize_t r = read(s->fd, s->buf + s->len, BUF_MAX - 1 - s->len);
        if (r > 0) {
            s->len += (size_t)r;
            parse_lines(s);
            if (s->len >= BUF_MAX - 1)
                s->len = 0; /* a line longer than the buffer: not ours, drop it */
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        return -1;
    }
}

static void parse_args(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "H:p:t:n:r:d:k:P:")) != -1) {
        switch (c) {
        case 'H':
            opt.host = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 't':
            opt.topic = optarg;
            break;
        case 'n':
            opt.n = atoi(optarg);
            break;
        case 'r':
            opt.rate = atoi(optarg);
            break;
        case 'd':
            opt.secs = atoi(optarg);
            break;
        case 'k':
            opt.token = optarg;
            break;
        case 'P':
            opt.pid = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: rq_sse_bench [-H host] [-p port] [-t topic] [-n subs] "
                            "[-r rate] [-d seconds] [-k token] [-P pid]\n");
            exit(2);
        }
    }
    if (opt.n < 1 || opt.rate < 1 || opt.secs < 1)
        exit(2);
}

static int open_subs(sub_t *subs, int ep)
{
    char req[512];
    int rl = snprintf(req, sizeof req, "GET /topics/%s/events HTTP/1.0\r\nHost: x\r\n%s%s%s\r\n",
                      opt.topic, opt.token ? "Authorization: Bearer " : "",
                      opt.token ? opt.token : "", opt.token ? "\r\n" : "");
    for (int i = 0; i < opt.n; i++) {
        subs[i].fd = connect_to(0);
        if (subs[i].fd < 0 || write_all(subs[i].fd, req, (size_t)rl) != 0) {
            fprintf(stderr, "rq_sse_bench: subscriber %d: %s\n", i, strerror(errno));
            return -1;
        }
        fcntl(subs[i].fd, F_SETFL, fcntl(subs[i].fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &subs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev);
    }
    return 0;
}

/* Runs the epoll loop until every subscriber is subscribed (phase 0) or until publishing is
 * over and deliveries settled (phase 1). Returns subscribers subscribed (phase 0). */
static int loop(sub_t *subs, int ep, int phase, int64_t deadline_ns)
{
    struct epoll_event evs[256];
    int64_t settle = 0, last_rss = 0;
    for (;;) {
        int n = epoll_wait(ep, evs, 256, 50);
        for (int i = 0; i < n; i++) {
            sub_t *s = evs[i].data.ptr;
            if (pump(s) != 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
                s->ended = 1;
            }
        }
        int64_t now = now_ns();
        if (opt.pid > 0 && now - last_rss > 100000000LL) {
            long kb = rss_kb();
            if (kb > rss_peak_kb)
                rss_peak_kb = kb;
            last_rss = now;
        }
        if (phase == 0) {
            int ok = 0;
            for (int i = 0; i < opt.n; i++)
                ok += subs[i].subscribed;
            if (ok == opt.n || now > deadline_ns)
                return ok;
        } else if (atomic_load(&publishing_done)) {
            if (settle == 0)
                settle = now + 2000000000LL; /* 2 s for the last deliveries */
            if (now > settle)
                return 0;
        }
    }
}

int main(int argc, char **argv)
{
    struct rlimit rl = {65536, 65536};
    parse_args(argc, argv);
    setrlimit(RLIMIT_NOFILE, &rl);
    sub_t *subs = calloc((size_t)opt.n, sizeof *subs);
    int ep = epoll_create1(0);
    if (subs == NULL || ep < 0 || open_subs(subs, ep) != 0)
        return 1;
    int64_t t_sub = now_ns();
    int ok = loop(subs, ep, 0, now_ns() + 60000000000LL);
    double sub_s = (double)(now_ns() - t_sub) / 1e9;
    if (ok != opt.n) {
        fprintf(stderr, "rq_sse_bench: %d of %d subscribed within 60 s\n", ok, opt.n);
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, publisher, NULL);
    loop(subs, ep, 1, 0);
    pthread_join(th, NULL);
    uint64_t received = 0;
    int ended = 0;
    for (int i = 0; i < opt.n; i++) {
        received += subs[i].events;
        ended += subs[i].ended;
    }
    qsort(lat_us, lat_n, sizeof *lat_us, cmp_u32);
    double p50 = lat_n ? lat_us[lat_n / 2] / 1000.0 : -1;
    double p99 = lat_n ? lat_us[(size_t)((double)lat_n * 0.99)] / 1000.0 : -1;
    double mx = lat_n ? lat_us[lat_n - 1] / 1000.0 : -1;
    uint64_t expected = (uint64_t)atomic_load(&published) * (uint64_t)opt.n;
    printf("{\"subscribers\": %d, \"subscribe_s\": %.2f, \"rate\": %d, \"seconds\": %d, "
           "\"published\": %d, \"publish_errors\": %d, \"expected\": %llu, \"received\": %llu, "
           "\"lost\": %lld, \"ended_early\": %d, \"latency_ms\": {\"p50\": %.2f, \"p99\": %.2f, "
           "\"max\": %.2f}, \"producer_rss_peak_kb\": %ld}\n",
           opt.n, sub_s, opt.rate, opt.secs, atomic_load(&published), atomic_load(&publish_errors),
           (unsigned long long)expected, (unsigned long long)received,
           (long long)expected - (long long)received, ended, p50, p99, mx, rss_peak_kb);
    for (int i = 0; i < opt.n; i++)
        close(subs[i].fd);
    free(subs);
    free(lat_us);
    close(ep);
    return 0;
}
