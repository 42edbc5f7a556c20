#!/usr/bin/python3
"""The producer's confirm-stall rule (CONFIRM_STALL_MS, issue 19) on one broker node.

A connection with publishes in flight that gets no ack or nack for CONFIRM_STALL_MS, while
the broker does not block it, is treated as lost (its node is left; on one node that means a
new connection to it) and its unconfirmed messages are published again. Scenarios, on a
broker of this script's own (scripts/broker.sh, 127.0.0.1), CONFIRM_STALL_MS at its default:
  load     bench-like load (wrk, 64 connections, /produce, --seconds) on a healthy but
           loaded node: the rule never fires (producer_confirm_stalls_total 0, one
           connection in all), every answer 201.
  alarm    the memory alarm (connection.blocked) held for 2 x CONFIRM_STALL_MS + 1 s under
           load: no confirm comes, and the rule still does not fire (an alarm is
           cluster-wide: moving would not help); 201s again once it clears.
  stall    the request queue's Raft server suspended (sys:suspend through rabbitmqctl eval:
           the node keeps the connection and takes publishes but confirms nothing, as a
           minority node does): the rule fires within CONFIRM_STALL_MS + 2 s, logs one warning
           naming the node, and once the server resumes every 201 is in OUTPUT_FILE once.
Usage: test_confirm_stall.py --build-dir build [SCENARIO ...] (default: all). Prints PASS/FAIL
lines and `N passed, M failed`; exit 1 on any failure. Every wait is bounded; only processes
this script started are signalled, by PID. Standard library only.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_reliability import (Checks, Load, Stack, check_output_exactly_once,  # noqa: E402
                              finish, log, metrics, summarize_load, wait_until)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIRM_STALL_MS = 3000  # the producer's default (not set in the environment here)


def stalls(st):
    return metrics(st.url("producer")).get("producer_confirm_stalls_total", 0)


def connections(st):
    return metrics(st.url("producer")).get("producer_broker_connections_total", 0)


def fresh_output(st, name):
    """The consumer restarted on an OUTPUT_FILE of the scenario's own (the checks read it
    whole)."""
    st.term("consumer")
    st.output = os.path.join(st.tmp, f"output-{name}.txt")
    st.start("consumer")


def confirm_latency_bound(m, m0):
    """The smallest histogram bucket holding every confirm between the metrics m0 and m
    (seconds), or None."""
    name = "producer_queue_publish_latency_seconds"
    total = m.get(f"{name}_count", 0) - m0.get(f"{name}_count", 0)
    les = []
    for key, v in m.items():
        b = re.fullmatch(name + r'_bucket\{le="([^"]+)"\}', key)
        if b and b.group(1) != "+Inf" and v - m0.get(key, 0) >= total:
            les.append(float(b.group(1)))
    return min(les) if les and total else None


def load(c, st, args):
    if shutil.which("wrk") is None:
        c.check("load: wrk is installed (apt-get install wrk)", False)
        return
    m0 = metrics(st.url("producer"))
    base, s0 = connections(st), stalls(st)
    lua = os.path.join(ROOT, "scripts", "bench", "produce.lua")
    r = subprocess.run(["wrk", "-t2", "-c64", f"-d{args.seconds}s", "--timeout", "10s", "-s", lua,
                        st.url("producer") + "/produce"], capture_output=True,
                       timeout=args.seconds + 60)
    out = r.stdout.decode()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    log(f"load: wrk 64 connections x {args.seconds} s: {rate.group(1) if rate else '?'} req/s")
    m = re.search(r"^WRKJSON (.*)$", out, re.M)
    status = json.loads(m.group(1))["status"] if m else {}
    log(f"load: wrk answers by status {status}")
    n, conns = stalls(st) - s0, connections(st)
    m = metrics(st.url("producer"))
    bound = confirm_latency_bound(m, m0)
    log(f"load: producer_confirm_stalls_total {n:.0f}, connections {conns:.0f}, "
        f"messages_produced_total {m.get('messages_produced_total', 0):.0f}; every confirm "
        f"within {bound if bound is not None else '?'} s of its publish (histogram bucket)")
    c.check(f"load: wrk ran ({r.returncode})", r.returncode == 0 and rate is not None)
    c.check(f"load: every answer 201 ({status})", set(status) == {"201"})
    c.check(f"load: the confirm-stall rule never fired under load ({n:.0f})", n == 0)
    c.check(f"load: one broker connection throughout ({conns - base:.0f} new)", conns == base)


def alarm(c, st, args):
    fresh_output(st, "alarm")
    base, s0 = connections(st), stalls(st)
    ld = Load(lambda: st.url("producer"), st.queue + "-alarm", threads=2, rate=20.0).start()
    time.sleep(2)
    st.ctl("set_vm_memory_high_watermark", "0")
    t_alarm = time.monotonic()
    try:
        blocked = wait_until(lambda: metrics(st.url("producer")).get("producer_broker_blocked",
                                                                     0) == 1, 10)
        c.check("alarm: the producer sees connection.blocked", blocked)
        time.sleep(max(0.0, 2 * CONFIRM_STALL_MS / 1000 + 1 - (time.monotonic() - t_alarm)))
        n, conns = stalls(st) - s0, connections(st) - base
        log(f"alarm: {time.monotonic() - t_alarm:.1f} s blocked: {n:.0f} stalls, "
            f"{conns:.0f} new connections")
        c.check(f"alarm: no confirm-stall failover while blocked ({n:.0f})", n == 0)
        c.check(f"alarm: the connection kept while blocked ({conns:.0f} new)", conns == 0)
    finally:
        st.ctl("set_vm_memory_high_watermark", "0.4")
    t_clear = time.monotonic()
    time.sleep(3)
    ld.finish()
    res = ld.snapshot()
    log(f"alarm: {summarize_load(res)}")
    c.check("alarm: 201s again once the alarm cleared",
            any(r[1] == 201 and r[3] >= t_clear for r in res))
    accepted = {r[0].encode() for r in res if r[1] == 201}
    check_output_exactly_once(c, st.output, accepted, "alarm", timeout=60,
                              allowed_extra={r[0].encode() for r in res})


def ra_eval(st, fn):
    name = "%2F_" + st.queue
    return st.ctl("eval", f'sys:{fn}(list_to_atom("{name}")).').strip()


def stall(c, st, args):
    fresh_output(st, "stall")
    s0 = stalls(st)
    logf = os.path.join(st.tmp, "producer.log")
    ld = Load(lambda: st.url("producer"), st.queue + "-stall", threads=2, rate=20.0).start()
    time.sleep(2)
    ra_eval(st, "suspend")
    t0 = time.monotonic()
    try:
        fired = wait_until(lambda: stalls(st) > s0, CONFIRM_STALL_MS / 1000 + 5, 0.05)
        dt = time.monotonic() - t0
        log(f"stall: the rule fired {dt:.2f} s after the queue's Raft server was suspended"
            if fired else "stall: the rule never fired")
        c.check(f"stall: the rule fires within {CONFIRM_STALL_MS / 1000 + 2:.0f} s "
                f"({'%.2f s' % dt if fired else 'never'})",
                fired and dt <= CONFIRM_STALL_MS / 1000 + 2)
    finally:
        ra_eval(st, "resume")
    t_res = time.monotonic()
    time.sleep(4)
    ld.finish()
    res = ld.snapshot()
    log(f"stall: {summarize_load(res)}")
    with open(logf, errors="replace") as f:
        lines = [ln for ln in f if "no confirm from broker node" in ln]
    c.check(f"stall: one warning line naming the node and the stall ({len(lines)})",
            len(lines) >= 1 and re.search(r"node 127\.0\.0\.1:\d+ for \d+ ms", lines[0]),
            lines[0][:200] if lines else "none")
    c.check("stall: 201s again after the resume", any(r[1] == 201 and r[3] >= t_res for r in res))
    statuses = {r[1] for r in res}
    c.check(f"stall: every answer 201 or 503 ({sorted(statuses)})", statuses <= {201, 503})
    accepted = {r[0].encode() for r in res if r[1] == 201}
    check_output_exactly_once(c, st.output, accepted, "stall", timeout=60,
                              allowed_extra={r[0].encode() for r in res})


SCENARIOS = {"alarm": alarm, "stall": stall, "load": load}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--seconds", type=int, default=20, help="load: wrk seconds")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("scenarios", nargs="*", help=" ".join(SCENARIOS) + " (default: all)")
    args = ap.parse_args()
    unknown = [n for n in args.scenarios if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}")
    c = Checks()
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="relayq-stall.")
    os.chmod(tmp, 0o755)
    st = Stack(os.path.abspath(args.build_dir), tmp, f"stall_{os.getpid()}")
    st.env.pop("CONFIRM_STALL_MS", None)
    try:
        st.broker("start")
        st.start("consumer")
        st.start("producer")
        for name in args.scenarios or list(SCENARIOS):
            log(f"scenario {name}")
            try:
                SCENARIOS[name](c, st, args)
            except Exception as e:  # noqa: BLE001 - a failure; the cleanup goes on
                c.check(f"{name} ran to the end", False, f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001
        c.check("the stack started", False, f"{type(e).__name__}: {e}")
    finally:
        st.close()
    sys.exit(finish(c, tmp, t0, args.keep, ("producer", "consumer"), "confirm-stall"))


if __name__ == "__main__":
    main()
