#!/usr/bin/python3
"""The status stream transport (common/status_log.c, issue 17) against a real broker of this
script's own (scripts/broker.sh, 127.0.0.1), driven by tools/rq_status_tool:
  order      appends read back in order by a reader that starts later (replay from first)
  from-ms    a reader started at a time (--from-ms) skips what was appended before it
  stop-flush a log freed right after its appends publishes them first (within about 1 s)
  stop-linger a log freed while its events wait out a linger (3 s, no callbacks) publishes
             them at once: every event read back, the stop takes under 0.5 s of CPU (it
             used to spin through the linger until the stop's 0.8 s bound and drop them)
  args       the stream is declared with relayq's arguments (rabbitmqctl list_queues)
  pika       a foreign client (python3-pika) reading the stream sees the same bodies, and
             the properties (persistent, application/json, timestamp)
  restart    the broker restarted (stop + start on its folder) under appends and a reader:
             every confirmed event is read, every append is confirmed in the end, the reader
             does not start over (no offset read twice), one warning per outage
  crash      the same with the broker frozen (SIGSTOP) for 1.5 s and then killed (kill -9):
             the events published meanwhile are never confirmed and are published again
  mismatch   a stream declared before with another x-max-age is used, after one warning
  barrier    barriers against a concurrent writer (another connection): none passes before
             the writer's events confirmed before it were read
  wakeups    a producer under /produce load (16 keep-alive callers, 3 s): its status log
             thread (rq-status-log) wakes at most 1,000 times a second, the linger's pace
             (5 ms: publishes, their confirms and the read-back), not once per completion
Usage: test_status_log.py --build-dir build [--keep] [CHECK ...] (default: all; restart
runs last). Prints PASS/FAIL lines and `N passed, M failed`; exit 1 on any failure. Every
wait is bounded (about 60 s in all); only processes this script started are signalled, by
PID.
"""
import argparse
import http.client
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_reliability import Checks, free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STREAM = "relayq.status.test"


def log(msg):
    print(f"[status_log {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Env:
    def __init__(self, build, tmp, port):
        self.tool = os.path.join(build, "bin", "rq_status_tool")
        self.tmp, self.port = tmp, port
        self.broker_dir = os.path.join(tmp, "broker")
        self.env = dict(os.environ, RABBITMQ_HOST="127.0.0.1", RABBITMQ_PORT=str(port),
                        STATUS_STREAM=STREAM, STATUS_MAX_AGE_S="7200",
                        STATUS_MAX_BYTES=str(100 << 20), RABBITMQ_HEARTBEAT="5",
                        RABBITMQ_CONNECT_TIMEOUT_MS="2000")

    def broker(self, cmd, *extra, timeout=90):
        return subprocess.run(["bash", os.path.join(ROOT, "scripts/broker.sh"), cmd,
                               self.broker_dir, *extra], capture_output=True, text=True,
                              timeout=timeout)

    def run(self, *args, timeout=30, **env):
        e = dict(self.env, **env)
        return subprocess.run([self.tool, *args], capture_output=True, text=True, env=e,
                              timeout=timeout)

    def spawn(self, name, *args, **env):
        out = open(os.path.join(self.tmp, f"{name}.out"), "w")
        err = open(os.path.join(self.tmp, f"{name}.log"), "w")
        return subprocess.Popen([self.tool, *args], stdout=out, stderr=err,
                                env=dict(self.env, **env), text=True)

    def text(self, name, ext):
        with open(os.path.join(self.tmp, f"{name}.{ext}")) as f:
            return f.read()


def events(out, tag=None):
    """(offset, body dict) of every 'OFFSET BODY' line of a `read`, in order."""
    res = []
    for line in out.splitlines():
        m = re.fullmatch(r"(\d+) (\{.*\})", line)
        if m:
            b = json.loads(m.group(2))
            if tag is None or b.get("tag") == tag:
                res.append((int(m.group(1)), b))
    return res


def warnings(stderr, needle=""):
    return [line for line in stderr.splitlines()
            if '"level":"warn"' in line and needle in line]


def check_order(c, e):
    r = e.run("append", "50", "--tag", "order")
    c.check("order: 50 appends confirmed", r.returncode == 0 and "confirmed 50 " in r.stdout,
            r.stdout[-200:] + r.stderr[-300:])
    r = e.run("read", "--count", "50", "--tag", "order", "--timeout", "15")
    got = events(r.stdout, "order")
    ns = [b["n"] for _, b in got]
    offs = [o for o, _ in got]
    c.check("order: a later reader replays all 50 from the first, in order",
            ns == list(range(50)) and offs == sorted(offs) and len(set(offs)) == 50,
            f"n {ns[:10]}... ({len(ns)}), rc {r.returncode}")
    c.check("order: the reader caught up (its marker came back), no marker passed on",
            "caught_up 1" in r.stdout and all("n" in b for _, b in events(r.stdout)),
            r.stdout[-200:])


def check_from_ms(c, e):
    t = time.time()
    time.sleep(1.05 - (t - int(t)))  # the stream's timestamp offsets are seconds
    e.run("append", "5", "--tag", "before")
    time.sleep(1.1)
    t0 = int(time.time() * 1000)
    r = e.run("append", "20", "--tag", "after")
    c.check("from-ms: 20 more appends confirmed", r.returncode == 0, r.stdout[-200:])
    r = e.run("read", "--count", "21", "--from-ms", str(t0), "--timeout", "4")
    got = events(r.stdout)
    tags = {b["tag"] for _, b in got}
    c.check("from-ms: a reader from T reads the 20 after T and nothing before",
            tags == {"after"} and [b["n"] for _, b in got] == list(range(20)),
            f"tags {tags}, {len(got)} events")
    r = e.run("read", "--count", "5", "--tag", "before", "--from-ms", "1", "--timeout", "4")
    c.check("from-ms: a time just after the epoch (1 ms) reads from the stream's start",
            r.returncode == 0, r.stdout[-200:])


def check_stop_flush(c, e):
    # --timeout 0: the log is freed right after the appends (while it may still connect)
    r = e.run("append", "200", "--tag", "flush", "--timeout", "0")
    c.check("stop-flush: a log freed right after 200 appends publishes them first (all "
            "confirmed)", r.returncode == 0 and "confirmed 200 " in r.stdout,
            r.stdout[-120:] + r.stderr[-300:])


def check_stop_linger(c, e):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    # a stream of its own: its one packed message would show 50 events under one offset to
    # the restart checks' reader of STREAM
    stream = STREAM + ".linger"
    r = e.run("append", "50", "--tag", "linger", "--linger", "3000", "--stream", stream)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    c.check("stop-linger: 50 appends without callbacks, a 3 s linger, the log freed at once "
            "(none dropped)", r.returncode == 0 and "dropped 0" in r.stdout,
            r.stdout[-120:] + r.stderr[-300:])
    c.check(f"stop-linger: the stop took {cpu:.2f} s of CPU, {wall:.2f} s in all (at most 0.5 s "
            f"of CPU: no spin through the linger)", cpu <= 0.5, r.stderr[-300:])
    r = e.run("read", "--count", "50", "--tag", "linger", "--timeout", "10", "--stream", stream,
              timeout=30)
    c.check("stop-linger: all 50 events were published at the stop (read back)",
            r.returncode == 0 and len(events(r.stdout, "linger")) == 50,
            r.stdout[-200:] + r.stderr[-200:])


def check_args(c, e):
    r = e.broker("ctl", "list_queues", "name", "type", "arguments")
    line = next((x for x in r.stdout.splitlines() if x.startswith(STREAM + "\t")), "")
    want = ['"x-queue-type","stream"', '"x-max-age","7200s"',
            f'"x-max-length-bytes",{100 << 20}', f'"x-stream-max-segment-size-bytes",{25 << 20}']
    c.check("args: the stream has x-queue-type stream, x-max-age, x-max-length-bytes, "
            "segment size (max_bytes / 4)",
            "\tstream\t" in line and all(w in line for w in want), line or r.stdout[-300:])
    r = e.run("stream-args")
    c.check("args: stream-args prints the same", "x-max-age 7200s" in r.stdout and
            f"x-stream-max-segment-size-bytes {25 << 20}" in r.stdout, r.stdout)


def pika_read(port, stream, until, timeout=10):
    """(properties, body) of the stream from its first offset until `until` bodies hold
    '"tag":"order"' (or timeout s)."""
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=100)
        got = []

        def on_msg(ch_, method, props, body):
            got.append((props, body))
            ch_.basic_ack(method.delivery_tag)
            if sum(b'"tag":"order"' in b for _, b in got) >= until:
                ch_.stop_consuming()

        ch.basic_consume(stream, on_msg, arguments={"x-stream-offset": "first"})
        conn.call_later(timeout, ch.stop_consuming)
        try:
            ch.start_consuming()
        except pika.exceptions.AMQPError:
            pass  # pika rejects the deliveries it still holds at the cancel; a stream refuses
        return got
    finally:
        if conn.is_open:
            conn.close()


def check_pika(c, e):
    try:
        import pika  # noqa: F401
    except ImportError:
        c.check("pika: python3-pika is installed (scripts/install-deps.sh)", False)
        return
    r = e.run("read", "--count", "50", "--tag", "order", "--timeout", "10")
    ours = [json.dumps(b, separators=(",", ":")) for _, b in events(r.stdout, "order")]
    got = pika_read(e.port, STREAM, 50)
    events_p = [(p, b) for p, b in got if not (p.headers or {}).get("x-relayq-marker")]
    theirs = [b.decode() for p, b in events_p if b'"tag":"order"' in b]
    c.check("pika: a foreign reader sees the same bodies in the same order",
            theirs == ours and len(ours) == 50, f"ours {len(ours)}, theirs {len(theirs)}")
    p = events_p[0][0] if events_p else None
    now = time.time()
    c.check("pika: persistent, application/json, timestamp (s) and x-relayq-ts-ms set",
            p is not None and p.delivery_mode == 2 and p.content_type == "application/json"
            and abs(p.timestamp - now) < 600
            and abs(p.headers.get("x-relayq-ts-ms", 0) / 1000 - p.timestamp) < 1.001,
            str(p))


def check_mismatch(c, e):
    name = STREAM + ".mismatch"
    try:
        import pika
    except ImportError:
        c.check("mismatch: python3-pika is installed", False)
        return
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", e.port))
    # relayq's arguments but x-max-age (the broker names the first argument that differs)
    conn.channel().queue_declare(name, durable=True, arguments={
        "x-queue-type": "stream", "x-max-age": "1h", "x-max-length-bytes": 100 << 20,
        "x-stream-max-segment-size-bytes": 25 << 20})
    conn.close()
    r = e.run("append", "3", "--tag", "mm", STATUS_STREAM=name)
    w = warnings(r.stderr, "other arguments")
    c.check("mismatch: a stream with another x-max-age is used (appends confirmed)",
            r.returncode == 0, r.stdout[-200:] + r.stderr[-300:])
    c.check("mismatch: one warning naming the difference, no other",
            len(w) == 1 and "x-max-age" in w[0] and len(warnings(r.stderr)) == 1, r.stderr[-600:])
    r = e.run("read", "--count", "3", "--tag", "mm", "--timeout", "10", STATUS_STREAM=name)
    c.check("mismatch: and read back", r.returncode == 0, r.stdout[-200:] + r.stderr[-300:])


def check_barrier(c, e):
    r = e.run("barrier", "--count", "1500", "--rate", "500", "--timeout", "25", timeout=40)
    m = re.search(r"barriers (\d+) ok (\d+) failed (\d+) violations (\d+) max_ms (\d+)", r.stdout)
    c.check("barrier: barriers against a concurrent writer never pass before its confirmed "
            "events were read", r.returncode == 0 and m and int(m.group(1)) > 10
            and m.group(4) == "0" and m.group(3) == "0", r.stdout[-300:] + r.stderr[-300:])
    if m:
        log(f"figures: {m.group(1)} barriers, the slowest {m.group(5)} ms")


def check_restart(c, e, how="stop"):
    n, tag = 1200, "rs-" + how
    sc = "restart" if how == "stop" else "crash"
    reader = e.spawn(f"{sc}-reader", "read", "--count", str(n), "--tag", tag,
                     "--timeout", "45")
    writer = e.spawn(f"{sc}-writer", "append", str(n), "--tag", tag, "--rate", "150",
                     "--timeout", "40")
    time.sleep(2)
    t0 = time.monotonic()
    if how == "kill":
        # frozen first: what the writer publishes meanwhile is never confirmed, and lost
        # with the node, so it must be published again on the next connection
        with open(os.path.join(e.broker_dir, "rabbitmq.pid")) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGSTOP)
        time.sleep(1.5)
    r = e.broker(how)
    c.check(f"{sc}: broker {'stopped' if how == 'stop' else 'killed (-9)'}",
            r.returncode == 0, r.stderr[-300:])
    barrier = e.spawn(f"{sc}-barrier", "barrier", "--count", "0", "--timeout", "40")
    time.sleep(1)
    r = e.broker("start", str(e.port))
    c.check(f"{sc}: broker started again on the same folder", r.returncode == 0,
            r.stderr[-300:])
    log(f"figures: broker away {time.monotonic() - t0:.1f} s")
    try:
        wrc = writer.wait(50)
        rrc = reader.wait(50)
    except subprocess.TimeoutExpired:
        writer.kill()
        reader.kill()
        c.check(f"{sc}: writer and reader finished in time", False)
        return
    try:
        barrier.wait(30)
    except subprocess.TimeoutExpired:
        barrier.kill()
    bout = e.text(f"{sc}-barrier", "out")
    c.check(f"{sc}: a barrier called while the broker is away passes once it is back",
            barrier.returncode == 0 and "barrier ok" in bout, bout[-200:])
    wout, rout = e.text(f"{sc}-writer", "out"), e.text(f"{sc}-reader", "out")
    confirmed = {int(x) for x in re.findall(r"^confirmed (\d+)$", wout, re.M)}
    allev = events(rout)
    got = events(rout, tag)
    read_ns = {b["n"] for _, b in got}
    offs = [o for o, _ in allev]
    c.check(f"{sc}: every append confirmed in the end ({n})",
            wrc == 0 and len(confirmed) == n, wout[-200:])
    c.check(f"{sc}: every confirmed event was read", rrc == 0 and confirmed <= read_ns,
            f"rc {rrc}, missing {sorted(confirmed - read_ns)[:10]}")
    dup_off = len(offs) - len(set(offs))
    c.check(f"{sc}: the reader resumed after the last offset (no offset read twice, "
            "offsets increasing)", dup_off == 0 and offs == sorted(offs),
            f"{dup_off} offsets twice")
    order_seen = len(events(rout, "order"))
    c.check(f"{sc}: the history before the restart was read once", order_seen == 50,
            f"{order_seen} x 'order'")
    c.check(f"{sc}: the reader read the whole stream, old events included, in one pass",
            len(set(offs)) == len(offs) and len(offs) >= n + 50, f"{len(offs)} events")
    log(f"figures: {len(got) - len(read_ns)} events stored twice (republished unconfirmed)")
    for who in (f"{sc}-writer", f"{sc}-reader"):
        w = warnings(e.text(who, "log"))
        c.check(f"{sc}: {who.split('-')[1]}: one warning for the outage", len(w) == 1,
                "\n".join(w)[-600:])


def thread_switches(pid, name):
    """Voluntary context switches of PID's thread NAME (its wake-ups), None without one."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        return int(line.split()[1])
        except OSError:
            continue
    return None


def produce_load(port, seconds, callers=16):
    """POST /produce from CALLERS keep-alive threads for SECONDS; returns the 201 count."""
    body = json.dumps({"payload": {"n": 1, "text": "wakeups"}})
    stop = time.monotonic() + seconds
    counts = []

    def caller():
        n = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            while time.monotonic() < stop:
                conn.request("POST", "/produce", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                n += r.status == 201
        except (OSError, http.client.HTTPException):
            pass
        conn.close()
        counts.append(n)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 10)
    return sum(counts)


def check_wakeups(c, e):
    hport = free_port()
    env = dict(e.env, PRODUCER_BIND="127.0.0.1", PRODUCER_PORT=str(hport), LOG_LEVEL="warn",
               REQUEST_QUEUE="status.wakeups", STATUS_STREAM=STREAM + ".wakeups")
    err = open(os.path.join(e.tmp, "wakeups.producer.log"), "w")
    p = subprocess.Popen([os.path.join(os.path.dirname(e.tool), "producer")], env=env,
                         stdout=err, stderr=err)
    try:
        ready = False
        for _ in range(100):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", hport, timeout=1)
                conn.request("GET", "/health/ready")
                ready = conn.getresponse().status == 200
                conn.close()
            except OSError:
                pass
            if ready:
                break
            time.sleep(0.1)
        if not c.check("wakeups: producer ready", ready, e.text("wakeups.producer", "log")[-300:]):
            return
        produce_load(hport, 1)  # warm-up: connections, the stream declared
        before, t0 = thread_switches(p.pid, "rq-status-log"), time.monotonic()
        n = produce_load(hport, 3)
        after, secs = thread_switches(p.pid, "rq-status-log"), time.monotonic() - t0
        if not c.check("wakeups: the producer has a thread named rq-status-log",
                       before is not None and after is not None):
            return
        per_s = (after - before) / secs
        c.check(f"wakeups: the status log thread woke {per_s:.0f} times/s for {n / secs:.0f} "
                f"requests/s (at most 1,000)", n >= 1000 and per_s <= 1000,
                f"{n} answered 201 in {secs:.1f} s")
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        err.close()


CHECKS = {"order": check_order, "from-ms": check_from_ms, "stop-flush": check_stop_flush,
          "stop-linger": check_stop_linger,
          "args": check_args, "pika": check_pika, "mismatch": check_mismatch,
          "barrier": check_barrier, "wakeups": check_wakeups, "restart": check_restart,
          "crash": lambda c, e: check_restart(c, e, "kill")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("checks", nargs="*", choices=[[]] + list(CHECKS), default=[])
    args = ap.parse_args()
    names = args.checks or list(CHECKS)
    if {"pika", "restart", "crash"} & set(names) and "order" not in names:
        names.insert(0, "order")
    tmp = tempfile.mkdtemp(prefix="relayq-status-log.")
    os.chmod(tmp, 0o755)  # the broker (user rabbitmq) must reach its folder inside
    e = Env(os.path.abspath(args.build_dir), tmp, free_port())
    c = Checks()
    t0 = time.monotonic()
    try:
        r = e.broker("start", str(e.port))
        if not c.check("broker started", r.returncode == 0, r.stderr[-300:]):
            names = []
        for name in names:
            log(f"check {name}")
            CHECKS[name](c, e)
    finally:
        e.broker("stop")
    log(f"took {time.monotonic() - t0:.1f} s")
    if c.failed or args.keep:
        log(f"scratch folder kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
