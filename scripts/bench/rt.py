#!/usr/bin/python3
"""Real-time delivery benchmark (issue 18, `make bench` step 12).

1. SSE fan-out: --subscribers SSE clients on one topic (tools/rq_sse_bench: one epoll loop,
   HTTP/1.0 streams), --rate messages/s published through POST /topics/{name}/messages for
   --seconds, --sse-repeats times (a topic each, the same producer); delivery latency p50/p99
   (publish start -> event read) of the run with the median p99, events lost, and the
   producer's peak RSS over every run. Targets: p99 <= 50 ms, RSS <= 64 MB (reported, not enforced).
2. WebSocket queue consumption: --count messages in a queue, consumed through
   GET /queues/{id}/ws (auto ack: acked once written) by --ws-clients clients (python3-
   websockets, one process each), beside the broker's own consume rate of the same count in
   the same run (tools/rq_consume_rate). Prints one JSON object (also written to --out).

    scripts/bench/rt.py [--bin build/bin] [--amqp-port P --mgmt-port M] [--subscribers 1000]
                        [--rate 200] [--seconds 20] [--sse-repeats 3] [--count 100000]
                        [--ws-clients 2]
"""

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import qharness  # noqa: E402


def run(argv, timeout, env=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise RuntimeError("%s: rc %d: %s" % (argv[0], r.returncode, (r.stderr or r.stdout)[-600:]))
    return r.stdout


def ws_consume(port, queue, stop_at, out_q):
    """One WebSocket client: counts messages until stop_at (epoch s) or an idle second."""
    import websockets  # python3-websockets

    async def main():
        n, t_first, t_last = 0, None, None
        uri = "ws://127.0.0.1:%d/queues/%s/ws" % (port, queue)
        async with websockets.connect(uri, max_size=1 << 24, ping_interval=None) as ws:
            while time.time() < stop_at:
                try:
                    await asyncio.wait_for(ws.recv(), timeout=1.0)
                except asyncio.TimeoutError:
                    if n:
                        break
                    continue
                now = time.monotonic()
                t_first = t_first or now
                t_last = now
                n += 1
        out_q.put((n, t_first, t_last))

    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001
        out_q.put((0, None, repr(e)))


def sse_run(args, st, p, k):
    """One SSE fan-out run on a topic of its own; returns rq_sse_bench's figures."""
    topic = st.qname("bench-topic%d" % k)
    r = st.request(p, "POST", "/topics", body=json.dumps({"name": topic}).encode(),
                   headers={"Content-Type": "application/json"})
    st.ck.check("bench: topic created", r.status in (200, 201), r.status)
    out = run([os.path.join(args.bin, "rq_sse_bench"), "-p", str(p.port), "-t", topic,
               "-n", str(args.subscribers), "-r", str(args.rate), "-d", str(args.seconds),
               "-P", str(p.proc.pid)], args.seconds + 180)
    sse = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    sse["loadavg"] = open("/proc/loadavg").read().split()[:3]
    st.request(p, "DELETE", "/topics/%s" % topic)
    return sse


def sse_step(args, st, p, res):
    """--sse-repeats runs; the figures of the run with the median p99, every run listed, the
    producer's peak RSS over all of them (VmHWM only grows)."""
    runs = []
    for k in range(max(1, args.sse_repeats)):
        sse = sse_run(args, st, p, k)
        runs.append(sse)
        st.ck.check("bench: run %d: every published message reached every subscriber" % (k + 1),
                    sse["lost"] == 0, sse)
        print("sse run %d: %d subscribers x %d msg/s for %d s: p50 %.2f ms, p99 %.2f ms, max "
              "%.2f ms, lost %d, producer RSS peak %.1f MB (load %s)"
              % (k + 1, sse["subscribers"], sse["rate"], sse["seconds"],
                 sse["latency_ms"]["p50"], sse["latency_ms"]["p99"], sse["latency_ms"]["max"],
                 sse["lost"], sse["producer_rss_peak_kb"] / 1024.0, " ".join(sse["loadavg"])),
              flush=True)
    med = sorted(runs, key=lambda x: x["latency_ms"]["p99"])[len(runs) // 2]
    sse = dict(med, producer_rss_peak_kb=max(x["producer_rss_peak_kb"] for x in runs),
               lost=sum(x["lost"] for x in runs))
    res["sse"], res["sse_runs"] = sse, runs
    rss_mb = sse["producer_rss_peak_kb"] / 1024.0
    res["targets"]["sse_p99_le_50ms"] = sse["latency_ms"]["p99"] <= 50.0
    res["targets"]["producer_rss_le_64mb"] = rss_mb <= 64.0
    print("sse: %d subscribers x %d msg/s for %d s, median of %d runs: p50 %.2f ms, p99 %.2f ms, "
          "max %.2f ms, lost %d, producer RSS peak %.1f MB"
          % (sse["subscribers"], sse["rate"], sse["seconds"], len(runs),
             sse["latency_ms"]["p50"], sse["latency_ms"]["p99"], sse["latency_ms"]["max"],
             sse["lost"], rss_mb))


def ws_step(args, st, p, res):
    tool = os.path.join(args.bin, "rq_amqp_tool")
    port = str(args.amqp_port)

    def fill(q):
        run([tool, "declare", "--port", port, "--quiet", "--queue", q, "--topology",
             "--queue-type", args.queue_type], 60)
        run([tool, "publish", "--port", port, "--quiet", "--queue", q, "--count", str(args.count),
             "--id-prefix", "b", "--window", "2000"], 600)

    qa, qb = st.qname("bench-consume"), st.qname("bench-ws")
    fill(qa)
    res["broker_consume"] = json.loads(run([os.path.join(args.bin, "rq_consume_rate"), qa,
                                            str(args.count), port], 600))
    fill(qb)
    out_q = multiprocessing.Queue()
    stop_at = time.time() + 120
    procs = [multiprocessing.Process(target=ws_consume, args=(p.port, qb, stop_at, out_q))
             for _ in range(args.ws_clients)]
    for pr in procs:
        pr.start()
    got = [out_q.get(timeout=180) for _ in procs]
    for pr in procs:
        pr.join(10)
    n = sum(g[0] for g in got)
    firsts = [g[1] for g in got if g[1]]
    lasts = [g[2] for g in got if isinstance(g[2], float)]
    span = (max(lasts) - min(firsts)) if firsts and lasts else 0
    rate = round(n / span) if span > 0 else 0
    broker = res["broker_consume"].get("rate") or 1
    res["ws"] = {"clients": args.ws_clients, "messages": n, "seconds": round(span, 2),
                 "rate": rate, "vs_broker_consume": round(rate / broker, 3),
                 "errors": [g[2] for g in got if isinstance(g[2], str)]}
    st.ck.check("bench: the WebSocket clients consumed every message", n >= args.count, res["ws"])
    print("ws: %d clients consumed %d messages at %d msg/s = %.0f%% of the broker's consume "
          "rate %s msg/s" % (args.ws_clients, n, rate, 100.0 * rate / broker, broker))


def main():
    ap = qharness.arg_parser(__doc__)
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--sse-repeats", type=int, default=3,
                    help="SSE runs (the figures of the median p99 are reported)")
    ap.add_argument("--count", type=int, default=100000)
    ap.add_argument("--ws-clients", type=int, default=2)
    ap.add_argument("--queue-type", default="quorum", choices=["quorum", "classic"])
    ap.add_argument("--producer-env", default="", help="extra VAR=VALUE words for the producer")
    ap.add_argument("--steps", default="sse ws")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    import resource  # 1,000 sockets on each side: the producer inherits this limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    res = {"targets": {}, "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    with qharness.Stack(args) as st:
        env = {"LOG_LEVEL": "warn", "RT_MAX_SUBSCRIPTIONS": str(args.subscribers + 100),
               "HTTP_MAX_CONNECTIONS": str(args.subscribers + 200)}
        for kv in args.producer_env.split():
            k, _, v = kv.partition("=")
            env[k] = v
        p = st.producer("bench-rt", env)
        if "sse" in args.steps:
            sse_step(args, st, p, res)
        if "ws" in args.steps:
            ws_step(args, st, p, res)
        res["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    sys.exit(st.ck.summary())


if __name__ == "__main__":
    main()
