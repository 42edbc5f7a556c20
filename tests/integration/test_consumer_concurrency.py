#!/usr/bin/python3
"""One consumer process works on up to PREFETCH_COUNT messages at once (issue 14).

A broker of its own (scripts/broker.sh on a free port, 127.0.0.1), a producer and one
consumer with PREFETCH_COUNT=50 (HANDLER echo: processing_time is a timer, not a sleep):
  parallel  40 concurrent wait=true callers, processing_time 1 s each: every one answered
            200 with its own reply ("Consumer processed: <its payload>", matched by the
            producer's correlation id) within PARALLEL_BOUND_S of the first request; the
            output file holds each line once.
  mixed     5 slow messages (processing_time 3 s) sent first, then 10 fast ones (none): each
            fast one is answered within FAST_BOUND_S (not held behind a slow one), the slow
            ones after their 3 s; every line once.
  sigterm   20 messages with processing_time 15 s are taken in, then SIGTERM: the consumer
            exits 0 within 10 s, none of them is in the output; after a restart all 20 are
            redelivered and processed: each line exactly once.
  bench     figures only (no check beyond every answer being 200): 40 callers x 1 s and 200
            callers x 0.1 s, round trips/s and p99 latency.

Usage: test_consumer_concurrency.py --build-dir build [SCENARIO ...] (default: all, in one
broker). Prints PASS/FAIL lines, figures, and `N passed, M failed`; exit 1 on any failure.
Every wait is bounded; only processes this script started are signalled, by PID.
Standard library only (/usr/bin/python3).
"""
import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_reliability import Checks, Stack, http_call, log, metrics, read_output  # noqa: E402

PARALLEL_BOUND_S = 1.5  # 40 x 1 s through one consumer: one round of 1 s plus slack
FAST_BOUND_S = 1.0  # a message without processing_time behind slow ones
PREFETCH = int(os.environ.get("CONC_PREFETCH", "50"))  # the bench also runs 200


def call_all(st, bodies, timeout=40.0):
    """POSTs every body of `bodies` to /produce?wait=true at once, one thread each (started
    together). Returns [(body, status, parsed json or None, latency s, t_done)] and the
    time the first request was released."""
    results = [None] * len(bodies)
    go = threading.Event()

    def one(i):
        go.wait(10)
        t0 = time.monotonic()
        stc, _, raw, lat, _ = http_call(st.url("producer") + "/produce?wait=true", "POST",
                                        bodies[i], timeout=timeout)
        try:
            doc = json.loads(raw.decode()) if raw else None
        except ValueError:
            doc = None
        results[i] = (bodies[i], stc, doc, lat, t0 + lat)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(bodies))]
    for t in threads:
        t.start()
    time.sleep(0.2)  # every thread waits on the event
    t_start = time.monotonic()
    go.set()
    for t in threads:
        t.join(timeout + 10)
    return results, t_start


def replies_match(results):
    """Requests whose 200 reply is not 'Consumer processed: <their payload>'."""
    bad = []
    for body, stc, doc, _, _ in results:
        want = "Consumer processed: " + body["payload"]
        if stc != 200 or not isinstance(doc, dict) or doc.get("reply") != want:
            bad.append((body["payload"], stc, (doc or {}).get("reply")))
    return bad


def lines_once(c, st, want, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines, _ = read_output(st.output)
        if want.issubset(lines):
            break
        time.sleep(0.2)
    time.sleep(0.5)
    lines, nl = read_output(st.output)
    counts = collections.Counter(lines)
    missing = [x for x in want if counts[x] == 0]
    dups = [x for x in want if counts[x] > 1]
    c.check(f"{what}: every line in the output exactly once ({len(want)})",
            not missing and not dups and nl,
            f"{len(missing)} missing, {len(dups)} twice, e.g. {(missing + dups)[:3]}")


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))] if v else 0.0


def parallel(c, st, args):
    bodies = [{"id": f"par-{i}", "payload": f"par-{i}", "processing_time": 1}
              for i in range(40)]
    res, t0 = call_all(st, bodies)
    statuses = collections.Counter(r[1] for r in res)
    last = max(r[4] for r in res) - t0
    lats = [r[3] for r in res]
    log(f"parallel: 40 x 1 s: statuses {dict(statuses)}, all answered after {last:.2f} s, "
        f"latency min {min(lats):.2f} max {max(lats):.2f} s")
    c.check("parallel: all 40 answered 200", statuses == {200: 40}, f"{dict(statuses)}")
    c.check(f"parallel: all answered within {PARALLEL_BOUND_S} s of the first request "
            f"({last:.2f} s)", last <= PARALLEL_BOUND_S)
    bad = replies_match(res)
    c.check("parallel: each caller got its own reply", not bad, f"{bad[:3]}")
    lines_once(c, st, {f"par-{i}".encode() for i in range(40)}, "parallel")


def mixed(c, st, args):
    slow = [{"id": f"slow-{i}", "payload": f"slow-{i}", "processing_time": 3} for i in range(5)]
    fast = [{"id": f"fast-{i}", "payload": f"fast-{i}"} for i in range(10)]
    out = {}

    def run(name, bodies):
        out[name] = call_all(st, bodies)

    ts = threading.Thread(target=run, args=("slow", slow), daemon=True)
    ts.start()
    time.sleep(0.6)  # the slow ones are taken in first
    run("fast", fast)
    ts.join(60)
    fres, _ = out["fast"]
    sres, _ = out["slow"]
    flat = [r[3] for r in fres]
    slat = [r[3] for r in sres]
    log(f"mixed: fast latency max {max(flat):.2f} s (p50 {pct(flat, 0.5):.2f}); slow latency "
        f"min {min(slat):.2f} max {max(slat):.2f} s")
    c.check("mixed: every request answered 200 with its own reply",
            not replies_match(fres) and not replies_match(sres),
            f"{(replies_match(fres) + replies_match(sres))[:3]}")
    c.check(f"mixed: no fast message held behind a slow one (max {max(flat):.2f} s <= "
            f"{FAST_BOUND_S} s)", max(flat) <= FAST_BOUND_S)
    c.check("mixed: the slow ones took their 3 s", min(slat) >= 2.9, f"min {min(slat):.2f}")
    lines_once(c, st, {b["payload"].encode() for b in slow + fast}, "mixed")


def wait_metric(st, name, pred, timeout):
    deadline = time.monotonic() + timeout
    v = None
    while time.monotonic() < deadline:
        v = metrics(st.url("consumer")).get(name)
        if v is not None and pred(v):
            return v
        time.sleep(0.1)
    return v


def sigterm(c, st, args):
    ids = [f"term-{i}" for i in range(20)]
    for mid in ids:
        stc, _, _, _, _ = http_call(st.url("producer") + "/produce", "POST",
                                    {"id": mid, "payload": mid, "processing_time": 15})
        if stc != 201:
            c.check("sigterm: messages accepted", False, f"{mid}: {stc}")
            return
    # every one taken in by the consumer (the queue holds none ready)
    deadline = time.monotonic() + 10
    ready = None
    while time.monotonic() < deadline:
        out = st.ctl("list_queues", "-q", "name", "messages_ready", "messages_unacknowledged")
        for line in out.splitlines():
            f = line.split()
            if len(f) == 3 and f[0] == st.queue:
                ready = (int(f[1]), int(f[2]))
        if ready == (0, 20):
            break
        time.sleep(0.2)
    c.check("sigterm: the 20 are held unacked by the consumer", ready == (0, 20), f"{ready}")
    time.sleep(0.5)
    rc, secs = st.term("consumer", timeout=10)
    c.check(f"sigterm: the consumer exits 0 within 10 s ({secs:.2f} s)", rc == 0 and secs <= 10,
            f"status {rc}")
    with open(os.path.join(st.tmp, "consumer.log"), errors="replace") as f:
        cut = sum(1 for line in f if "shutting down: message term-" in line)
    c.check(f"sigterm: the 20 jobs were cut short and requeued ({cut} logged)", cut == 20)
    lines, _ = read_output(st.output)
    early = [x for x in lines if x.startswith(b"term-")]
    c.check("sigterm: none of the 20 was written before the stop", not early, f"{early[:3]}")
    t0 = time.monotonic()
    st.start("consumer")
    lines_once(c, st, {m.encode() for m in ids}, "sigterm (after the restart)", timeout=40)
    log(f"sigterm: all 20 written {time.monotonic() - t0:.2f} s after the restart")


def bench(c, st, args):
    for n, pt in ((40, 1), (200, 0.1)):
        bodies = [{"id": f"b{n}-{i}", "payload": f"b{n}-{i}", "processing_time": pt}
                  for i in range(n)]
        res, t0 = call_all(st, bodies)
        total = max(r[4] for r in res) - t0
        lats = [r[3] for r in res]
        ok = sum(1 for r in res if r[1] == 200)
        log(f"bench: {n} callers x {pt} s (prefetch {PREFETCH}): {ok}/{n} x 200 in {total:.2f} s"
            f" = {n / total:.1f} round trips/s; latency p50 {pct(lats, 0.5):.3f} s, p99 "
            f"{pct(lats, 0.99):.3f} s, max {max(lats):.3f} s")
        c.check(f"bench: {n} x {pt} s all answered 200", ok == n, f"{ok}/{n}")


SCENARIOS = {"parallel": parallel, "mixed": mixed, "sigterm": sigterm, "bench": bench}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("scenarios", nargs="*", help=" ".join(SCENARIOS) + " (default: all)")
    args = ap.parse_args()
    unknown = [n for n in args.scenarios if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}")
    build = os.path.abspath(args.build_dir)
    names = args.scenarios or list(SCENARIOS)
    c = Checks()
    tmp = tempfile.mkdtemp(prefix="rq_concurrency.")
    os.chmod(tmp, 0o755)  # the broker (user rabbitmq) must reach its folder inside
    st = Stack(build, tmp, "conc_q", extra_env={"PREFETCH_COUNT": str(PREFETCH),
                                                "REPLY_TIMEOUT_MS": "30000",
                                                "HTTP_THREADS": "4"})
    try:
        st.broker("start")
        st.start("consumer")
        st.start("producer")
        for name in names:
            log(f"scenario {name}")
            if not st.running("consumer"):
                st.start("consumer")
            SCENARIOS[name](c, st, args)
    except Exception as e:  # noqa: BLE001 - reported as a failure, the cleanup goes on
        c.check("scenario ran to the end", False, repr(e))
    finally:
        st.close()
    print(f"{c.passed} passed, {c.failed} failed (logs in {tmp})")
    sys.exit(1 if c.failed else 0)


if __name__ == "__main__":
    main()
