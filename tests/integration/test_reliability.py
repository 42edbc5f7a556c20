#!/usr/bin/python3
"""Reliability tests of relayq (issue 4): things break for real, nothing is lost.

Scenarios (one per run; each uses its own queue, and broker-restart its own broker):
  broker-restart  8 threads post /produce while the broker is first frozen (SIGSTOP: it
                  accepts TCP and answers nothing; heartbeats must notice) and thawed, then
                  stopped and started again: every 201 is in OUTPUT_FILE exactly once, no
                  answer is later than PUBLISH_TIMEOUT_MS + slack, 201s resume after each
                  recovery, /health/ready of both services is 503 during the outage and 200
                  within seconds after.
  consumer-kill   the consumer is kill -9'd twice while it holds a prefetch of messages
                  with processing_time: after restarts, every message is in the output once.
  producer-kill   the producer is kill -9'd under HTTP load and restarted: every request
                  answered 201 is in the output once.
  retry-dlq       fail_times retries through the delay queues (reply and line once, after
                  the backoff), dead-lettering after MAX_RETRIES (GET /dlq shows reason and
                  attempts), undecodable messages dead-lettered with their reason, and
                  POST /dlq/retry bringing messages back.
  dlq-race        GET /dlq?limit=3 and at once POST /dlq/retry, round after round (--rounds,
                  --dlq-messages): the retry moves every message (none still out with the
                  page) and none of them is left behind in the DLQ (quorum DLQ: a multiple
                  ack of many basic.get deliveries lost most of its settles at the close).
  graceful        SIGTERM under load: the consumer (mid-backlog) and the producer (under HTTP
                  load) exit 0; no line is lost, repeated or half-written.
  output-full     the consumer's OUTPUT_FILE sits on a 1 MiB tmpfs that is then filled: the
                  consumer keeps the deliveries and retries the write with a growing pause
                  (no requeue, so the quorum queue's delivery limit never sends them to the
                  DLQ); once space is freed every line is written exactly once. Needs
                  mount(2) (root); without it the scenario says SKIP and checks nothing.
  broker-alarm    the broker's memory alarm (rabbitmqctl set_vm_memory_high_watermark 0)
                  blocks publishers: the first publish after it is held by the broker (503
                  on its deadline), then the producer reports connection.blocked (gauge, 503
                  naming the alarm at once, /health/ready stays 200: the broker is up) and
                  holds back the tailer; once the alarm clears every 201 and every line
                  tailed meanwhile is in OUTPUT_FILE exactly once.

Usage: test_reliability.py --build-dir build SCENARIO [--amqp-port P] [--seconds S]
Without --amqp-port the scenario starts (and stops) a broker of its own on a free port
(scripts/broker.sh, 127.0.0.1). Prints one PASS/FAIL line per check, the figures measured,
and `N passed, M failed`; exit 1 on any failure. Every wait is bounded, and only processes
this script started are signalled, by PID. Standard library only (/usr/bin/python3).
"""
import argparse
import collections
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from rq_ports import free_port  # noqa: E402  (below the ephemeral range)

PUBLISH_TIMEOUT_MS = 3000
LATENCY_SLACK_S = 1.5


def log(msg):
    print(f"[reliability {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS  {name}", flush=True)
        else:
            self.failed += 1
            detail = detail if len(detail) <= 400 else detail[:400] + "..."
            print(f"FAIL  {name}{': ' + detail if detail else ''}", flush=True)
        return ok


# ---------------------------------------------------------------------------------------------
# HTTP


def http_call(url, method="GET", body=None, timeout=30.0, conn=None):
    """One request. Returns (status, headers dict lower-case, body bytes, elapsed s, conn);
    status 0 when the connection failed. `conn` is reused (keep-alive) when given."""
    u = urllib.parse.urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    t0 = time.monotonic()
    for attempt in (0, 1):
        if conn is None:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            payload = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            if hdrs.get("connection", "").lower() == "close":
                conn.close()
                conn = None
            return r.status, hdrs, payload, time.monotonic() - t0, conn
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = None
            # a keep-alive connection the server closed meanwhile: one fresh try
            if attempt == 0 and time.monotonic() - t0 < 0.05:
                continue
            return 0, {}, b"", time.monotonic() - t0, None
    return 0, {}, b"", time.monotonic() - t0, None


def get_json(url, timeout=10.0):
    st, _, body, _, _ = http_call(url, timeout=timeout)
    try:
        return st, json.loads(body.decode()) if body else None
    except ValueError:
        return st, None


def metrics(url):
    """Parses a Prometheus text page into {"name{labels}": value}."""
    st, _, body, _, _ = http_call(url + "/metrics", timeout=5)
    out = {}
    if st != 200:
        return out
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


class Load:
    """THREADS threads posting /produce with unique ids (payload = id) until stopped. Every
    answer is recorded: (id, status, latency s, t_sent, t_done, retry_after)."""

    def __init__(self, url_fn, prefix, threads=8, rate=150.0, timeout=30.0):
        self.url_fn, self.prefix, self.rate, self.timeout = url_fn, prefix, rate, timeout
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self, timeout=60):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self.threads)

    def _run(self, k):
        conn = None
        n = 0
        interval = 1.0 / self.rate if self.rate > 0 else 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            mid = f"{self.prefix}-{k}-{n}"
            n += 1
            t_sent = time.monotonic()
            st, hdrs, _, lat, conn = http_call(self.url_fn() + "/produce", "POST",
                                               {"id": mid, "payload": mid},
                                               timeout=self.timeout, conn=conn)
            with self.lock:
                self.results.append((mid, st, lat, t_sent, t_sent + lat,
                                     hdrs.get("retry-after")))
            if st == 0:
                time.sleep(0.05)  # the producer is down (killed): do not spin
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()

    def snapshot(self):
        with self.lock:
            return list(self.results)


class PortWatch(threading.Thread):
    """Records when a TCP port on 127.0.0.1 starts accepting connections (polls every 50 ms
    until it does or `stop` is set)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.t_open = None
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                self.t_open = time.monotonic()
                return
            except OSError:
                self.stop.wait(0.05)


class Poller(threading.Thread):
    """Polls GET url every 100 ms, recording (t, status)."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url = url
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            st, _, _, _, _ = http_call(self.url, timeout=2)
            self.samples.append((time.monotonic(), st))
            self.stop.wait(0.1)


# ---------------------------------------------------------------------------------------------
# processes


class Stack:
    """A broker (own or shared), producers and consumers started by this script."""

    def __init__(self, build, tmp, queue, amqp_port=None, extra_env=None):
        self.build, self.tmp, self.queue = build, tmp, queue
        self.own_broker = amqp_port is None
        self.amqp = amqp_port or free_port()
        self.broker_dir = os.path.join(tmp, "broker")
        self.output = os.path.join(tmp, "output.txt")
        self.procs = {}
        self.ports = {"producer": free_port(), "consumer": free_port()}
        self.env = dict(os.environ)
        self.env.update(RABBITMQ_HOST="127.0.0.1", RABBITMQ_PORT=str(self.amqp), LOG_LEVEL="info",
                        REQUEST_QUEUE=queue, RABBITMQ_HEARTBEAT="5",
                        PUBLISH_TIMEOUT_MS=str(PUBLISH_TIMEOUT_MS))
        self.env.update(extra_env or {})

    def url(self, name):
        return f"http://127.0.0.1:{self.ports[name]}"

    def broker(self, cmd):
        args = ["bash", os.path.join(ROOT, "scripts/broker.sh"), cmd, self.broker_dir]
        if cmd == "start":
            args.append(str(self.amqp))
        with open(os.path.join(self.tmp, "broker.out"), "a") as out:
            rc = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT,
                                timeout=150).returncode
        if rc != 0:
            raise RuntimeError(f"broker {cmd} failed (see {self.tmp}/broker.out)")

    def start(self, name, wait=True, **env):
        e = dict(self.env)
        if name == "producer":
            e.update(PRODUCER_BIND="127.0.0.1", PRODUCER_PORT=str(self.ports[name]))
        else:
            e.update(CONSUMER_BIND="127.0.0.1", CONSUMER_PORT=str(self.ports[name]),
                     OUTPUT_FILE=self.output)
        e.update({k: str(v) for k, v in env.items()})
        logf = open(os.path.join(self.tmp, f"{name}.log"), "a")
        self.procs[name] = subprocess.Popen([os.path.join(self.build, "bin", name)], env=e,
                                            stdout=logf, stderr=logf)
        logf.close()
        if wait:
            self.wait_ready(name)

    def wait_ready(self, name, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st, _, _, _, _ = http_call(self.url(name) + "/health/ready", timeout=2)
            if st == 200:
                return
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.procs[name].returncode}")
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready within {timeout} s")

    def running(self, name):
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def freeze(self, on):
        """SIGSTOP (on) or SIGCONT the broker this script started (pid from its pidfile)."""
        if not self.own_broker:
            raise RuntimeError("freezing a broker this script did not start")
        with open(os.path.join(self.broker_dir, "rabbitmq.pid")) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGSTOP if on else signal.SIGCONT)
        self.frozen = on

    def kill9(self, name):
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def term(self, name, timeout=15):
        """SIGTERM; returns (exit status, seconds) or (None, timeout) after SIGKILL."""
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return (p.returncode if p else None), 0.0
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout), time.monotonic() - t0
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None, timeout

    def close(self):
        if getattr(self, "frozen", False):
            self.freeze(False)
        for name in list(self.procs):
            self.term(name, 10)
        for m in getattr(self, "mounts", []):
            subprocess.run(["umount", m], capture_output=True, timeout=30)
        if self.own_broker:
            try:
                self.broker("stop")
            except Exception as e:  # noqa: BLE001 - reported, the cleanup goes on
                log(f"broker stop: {e}")

    def ctl(self, *args):
        """rabbitmqctl ARGS against the broker this script started."""
        if not self.own_broker:
            raise RuntimeError("rabbitmqctl on a broker this script did not start")
        r = subprocess.run(["bash", os.path.join(ROOT, "scripts/broker.sh"), "ctl",
                            self.broker_dir] + list(args), capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {r.stderr.decode()[-300:]}")
        return r.stdout.decode()

    def tool(self, *args):
        cmd = [os.path.join(self.build, "bin", "rq_amqp_tool"), args[0], "--host", "127.0.0.1",
               "--port", str(self.amqp), "--quiet"] + list(args[1:])
        r = subprocess.run(cmd, capture_output=True, timeout=120, env=self.env)
        if r.returncode != 0:
            raise RuntimeError(f"rq_amqp_tool {' '.join(args)}: {r.stderr.decode()[-300:]}")
        return r.stdout.decode()


def read_output(path):
    """(lines, ends_with_newline) of the output file ([] and True when absent)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], True
    return data.split(b"\n")[:-1] if data else [], data == b"" or data.endswith(b"\n")


def wait_lines(path, want, timeout):
    """Waits until every line in `want` (a set of bytes) is in the output file. Returns the
    lines read last."""
    deadline = time.monotonic() + timeout
    while True:
        lines, _ = read_output(path)
        if want.issubset(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.25)


def wait_output_size(path, size, timeout):
    """Waits (at most `timeout` s) until the output file holds `size` bytes, then a second
    more (a line written twice would show up); returns its bytes (b"" when absent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.path.getsize(path) >= size:
                break
        except OSError:
            pass
        time.sleep(0.5)
    time.sleep(1.0)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def check_output_exactly_once(c, path, accepted, what, timeout=60, allowed_extra=None):
    """Every line of `accepted` is in the output exactly once; no line at all appears twice;
    the file ends with a newline. `allowed_extra` (a set) may also appear (requests whose
    answer was lost: published or not). Returns the lines."""
    want = set(accepted)
    lines = wait_lines(path, want, timeout)
    time.sleep(1.0)  # a duplicate would show up now
    lines, nl = read_output(path)
    counts = collections.Counter(lines)
    missing = [x for x in want if counts[x] == 0]
    dups = [x for x, n in counts.items() if n > 1]
    extra = [x for x in counts if x not in want and (allowed_extra is None or x not in allowed_extra)]
    c.check(f"{what}: all {len(want)} accepted messages in the output", not missing,
            f"{len(missing)} missing, e.g. {missing[:3]}")
    c.check(f"{what}: no line written twice ({len(lines)} lines)", not dups,
            f"{len(dups)} duplicated, e.g. {dups[:3]}")
    c.check(f"{what}: output ends with a newline (no half-written line)", nl)
    if allowed_extra is not None:
        c.check(f"{what}: no unexpected line in the output", not extra, f"e.g. {extra[:3]}")
    return lines


def expect_clean_exit(c, st, when=""):
    """SIGTERM to the producer, then the consumer: each must exit 0."""
    for name in ("producer", "consumer"):
        rc, secs = st.term(name)
        c.check(f"{name} exits 0 on SIGTERM{when} ({secs:.1f} s)", rc == 0, f"status {rc}")


def summarize_load(results):
    by = collections.Counter(r[1] for r in results)
    return ", ".join(f"{k or 'no answer'}: {v}" for k, v in sorted(by.items()))


# ---------------------------------------------------------------------------------------------
# scenarios


def broker_restart(c, st, args):
    st.env["RABBITMQ_HEARTBEAT"] = "2"  # a frozen broker is noticed after ~4 s
    st.start("consumer")
    st.start("producer")
    pr = Poller(st.url("producer") + "/health/ready")
    cr = Poller(st.url("consumer") + "/health/ready")
    pr.start()
    cr.start()
    load = Load(lambda: st.url("producer"), "br").start()
    t0 = time.monotonic()
    time.sleep(args.before)

    # 1. the broker freezes (SIGSTOP): TCP still accepts, nothing answers
    log(f"{sum(1 for r in load.snapshot() if r[1] == 201)} x 201 so far; freezing the broker "
        f"(SIGSTOP) for {args.freeze:.0f} s")
    t_freeze = time.monotonic()
    st.freeze(True)
    time.sleep(args.freeze)
    st.freeze(False)
    t_thaw = time.monotonic()
    time.sleep(4)
    thawed = [r for r in load.snapshot() if r[1] == 201 and r[3] >= t_thaw]
    c.check("201s resume after the broker thaws (SIGCONT)", len(thawed) > 50, f"{len(thawed)}")
    unready = min((t for t, s in pr.samples if t >= t_freeze and s != 200), default=None)
    c.check("producer /health/ready turns 503 while the broker is frozen (heartbeats)",
            unready is not None and unready <= t_thaw + 0.5)
    frozen = [r for r in load.snapshot() if t_freeze <= r[3] <= t_thaw]
    if frozen:
        log("figures (freeze): producer unready %s s after the freeze; max latency of requests "
            "sent while frozen %.2f s; %d x 503 of %d" % (
                "%.2f" % (unready - t_freeze) if unready else "?", max(r[2] for r in frozen),
                sum(1 for r in frozen if r[1] == 503), len(frozen)))

    # 2. the broker stops and starts again
    before = sum(1 for r in load.snapshot() if r[1] == 201)
    log(f"{before} answered 201 before the restart; stopping the broker")
    t_stop = time.monotonic()
    st.broker("stop")
    t_stopped = time.monotonic()
    log(f"broker stopped in {t_stopped - t_stop:.1f} s; starting it again")
    time.sleep(1)
    watch = PortWatch(st.amqp)
    watch.start()
    st.broker("start")
    t_up = time.monotonic()
    watch.stop.set()
    watch.join(2)
    # the broker accepts AMQP connections a little before broker.sh returns
    t_listen = watch.t_open or t_up
    log(f"broker up again after {t_up - t_stopped:.1f} s down; load goes on {args.after:.0f} s")
    time.sleep(args.after)
    c.check("load threads stop", load.finish())
    pr.stop.set()
    cr.stop.set()
    pr.join(5)
    cr.join(5)
    res = load.snapshot()
    log(f"{len(res)} requests in {time.monotonic() - t0:.1f} s: {summarize_load(res)}")

    c.check("requests answered 201 before the restart", before > 50, f"only {before}")
    statuses = {r[1] for r in res}
    c.check("every request answered 201 or 503 (never a dropped connection or 500)",
            statuses <= {201, 503}, f"statuses {sorted(statuses)}")
    no_ra = [r for r in res if r[1] == 503 and not r[5]]
    c.check("every 503 carries Retry-After", not no_ra, f"{len(no_ra)} without")
    n503 = sum(1 for r in res if r[1] == 503)
    c.check("the outage was seen by clients (503s)", n503 > 0)
    lat = max(r[2] for r in res)
    bound = PUBLISH_TIMEOUT_MS / 1000 + LATENCY_SLACK_S
    slow = sorted((r for r in res), key=lambda r: -r[2])[:3]
    c.check(f"no answer later than PUBLISH_TIMEOUT_MS + {LATENCY_SLACK_S} s = {bound:.1f} s "
            f"(max {lat:.2f} s)", lat <= bound, f"slowest {[(r[0], r[1], round(r[2], 2)) for r in slow]}")
    after = [r for r in res if r[1] == 201 and r[3] >= t_up]
    c.check("201s resume after the broker is back", len(after) > 50, f"only {len(after)}")
    first_201 = min((r[4] for r in res if r[1] == 201 and r[3] >= t_stopped), default=None)
    ready_down = [t for t, s in pr.samples if t_stopped <= t <= t_up and s == 503]
    c.check("producer /health/ready 503 while the broker is down", len(ready_down) > 0)
    went_down = min((t for t, s in pr.samples if t >= t_stop and s != 200), default=None)
    for name, poller in (("producer", pr), ("consumer", cr)):
        back = min((t for t, s in poller.samples if t >= t_listen and s == 200), default=None)
        rec = back - t_listen if back is not None else None
        c.check(f"{name} /health/ready 200 within 10 s of the broker's return "
                f"({'%.2f s' % rec if rec is not None else 'never'} after its port opened)",
                rec is not None and rec <= 10)
    log("figures: broker port open %.2f s before broker.sh returned; producer not ready %s s "
        "after the stop began; first 201 %s s after the port opened; %d x 201 after broker.sh "
        "returned; max latency %.2f s; %d x 503" % (
            t_up - t_listen, "%.2f" % (went_down - t_stop) if went_down else "?",
            "%.2f" % (first_201 - t_listen) if first_201 else "?", len(after), lat, n503))
    accepted = {r[0].encode() for r in res if r[1] == 201}
    sent = {r[0].encode() for r in res}
    check_output_exactly_once(c, st.output, accepted, "broker restart", timeout=90,
                              allowed_extra=sent)
    expect_clean_exit(c, st, " after the restart")


def consumer_kill(c, st, args):
    n = args.messages
    st.start("consumer", PREFETCH_COUNT=50)
    st.tool("publish", "--queue", st.queue, "--count", str(n), "--id-prefix", "ck",
            "--processing-time", "0.01")
    ids = {f"ck-{i}".encode() for i in range(n)}
    payloads = {f"ck message {i}".encode() for i in range(n)}
    in_flight_seen = 0
    for k, at in enumerate((n // 6, n // 2)):
        deadline = time.monotonic() + 60
        while len(read_output(st.output)[0]) < at and time.monotonic() < deadline:
            time.sleep(0.02)
        written = len(set(read_output(st.output)[0]))
        ready = int(st.tool("depth", "--queue", st.queue).split()[0])
        held = n - written - ready  # delivered to the consumer, not yet written
        st.kill9("consumer")
        in_flight_seen = max(in_flight_seen, held)
        log(f"kill -9 #{k + 1}: {written} lines written, {ready} ready, ~{held} unacked in flight")
        st.start("consumer", PREFETCH_COUNT=50)
    c.check("messages were in flight at a kill -9", in_flight_seen > 0, f"{in_flight_seen}")
    lines = check_output_exactly_once(c, st.output, payloads, "consumer kill -9", timeout=90,
                                      allowed_extra=set())
    m = metrics(st.url("consumer"))
    log(f"figures: {len(lines)} lines; redelivered and skipped as already written: "
        f"{m.get('consumer_duplicates_skipped_total', 0):.0f}")
    c.check("queue drained", st.tool("depth", "--queue", st.queue).split()[0] == "0")
    rc, secs = st.term("consumer")
    c.check(f"consumer exits 0 on SIGTERM ({secs:.1f} s)", rc == 0, f"status {rc}")
    del ids


def producer_kill(c, st, args):
    st.start("consumer")
    st.start("producer")
    load = Load(lambda: st.url("producer"), "pk").start()
    time.sleep(args.before)
    before = sum(1 for r in load.snapshot() if r[1] == 201)
    t_kill = time.monotonic()
    st.kill9("producer")
    log(f"producer kill -9 after {before} x 201")
    time.sleep(0.5)
    st.start("producer", wait=False)
    st.wait_ready("producer")
    t_back = time.monotonic()
    log(f"producer ready {t_back - t_kill:.2f} s after the kill")
    time.sleep(args.after)
    c.check("load threads stop", load.finish())
    res = load.snapshot()
    log(f"{len(res)} requests: {summarize_load(res)}")
    c.check("201s before the kill", before > 50, f"{before}")
    after = sum(1 for r in res if r[1] == 201 and r[3] >= t_back)
    c.check("201s after the restart", after > 50, f"{after}")
    odd = [r for r in res if r[1] not in (201, 503, 0)]
    c.check("answers are 201 or 503 (or no answer while the producer is dead)", not odd,
            f"{odd[:3]}")
    late_fail = [r for r in res if r[1] == 0 and not (t_kill - 1 <= r[3] <= t_back)]
    c.check("no unanswered request outside the kill window", not late_fail, f"{late_fail[:3]}")
    accepted = {r[0].encode() for r in res if r[1] == 201}
    sent = {r[0].encode() for r in res}
    check_output_exactly_once(c, st.output, accepted, "producer kill -9", timeout=60,
                              allowed_extra=sent)
    expect_clean_exit(c, st)


def wait_until(fn, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def retry_dlq(c, st, args):
    max_retries, base_ms = 3, 100
    st.env.update(MAX_RETRIES=str(max_retries), RETRY_BASE_MS=str(base_ms))
    st.start("consumer")
    st.start("producer")
    pu, cu = st.url("producer"), st.url("consumer")
    tag = str(os.getpid())

    def m(name):
        return metrics(cu).get(name, 0.0)

    def dlq(limit=10):
        s, body = get_json(f"{pu}/dlq?limit={limit}")
        return body if s == 200 else None

    # 1. fails twice, then succeeds on the third attempt; the reply survives the copies
    for fail_times in (2, max_retries):
        r0 = m("consumer_retries_total")
        payload = f"retry-ok-{fail_times}-{tag}"
        s, _, body, el, _ = http_call(pu + "/produce?wait=true", "POST",
                                      {"payload": payload, "fail_times": fail_times}, timeout=30)
        reply = json.loads(body).get("reply") if s == 200 else body[:200]
        min_delay = sum(base_ms * 2 ** i for i in range(fail_times)) / 1000
        c.check(f"fail_times={fail_times}: 200 with the reply of attempt {fail_times + 1} after "
                f"{el:.2f} s (backoff >= {min_delay:.1f} s)",
                s == 200 and reply == "Consumer processed: " + payload and el >= min_delay,
                f"status {s}, reply {reply!r}, {el:.2f} s")
        c.check(f"fail_times={fail_times}: {fail_times} retries counted",
                m("consumer_retries_total") - r0 == fail_times)
        lines = wait_lines(st.output, {payload.encode()}, 10)
        c.check(f"fail_times={fail_times}: line in the output once",
                lines.count(payload.encode()) == 1, f"{lines.count(payload.encode())} times")

    # 2. fails every attempt: dead-lettered after MAX_RETRIES retries
    dead = f"dead-{tag}"
    s, _, body, _, _ = http_call(pu + "/produce", "POST",
                                 {"payload": dead, "fail_times": max_retries + 5})
    dead_id = json.loads(body)["message_id"] if s == 201 else None
    c.check("fail_times > MAX_RETRIES: accepted (201)", s == 201, f"{s}")
    d = wait_until(lambda: (lambda x: x if x and x["count"] >= 1 else None)(dlq()), 15)
    msg = d["messages"][0] if d and d["messages"] else {}
    c.check(f"GET /dlq shows it with reason and attempts ({msg.get('reason', '')[:60]}...)",
            msg.get("message_id") == dead_id and
            msg.get("reason", "").startswith(f"processing failed after {max_retries + 1} attempts")
            and msg.get("attempts") == max_retries + 1, f"{d}")
    c.check("dead-lettered counted (reason failed)",
            m('consumer_dead_lettered_total{reason="failed"}') == 1)

    # 3. undecodable: straight to the DLQ, reason in a header
    st.tool("publish", "--queue", st.queue, "--body", '{"id":"bad-1","payload":', "--id-prefix",
            f"undecodable-{tag}")
    d = wait_until(lambda: (lambda x: x if x and x["count"] >= 2 else None)(dlq()), 10)
    bad = [x for x in (d or {}).get("messages", []) if x.get("message_id", "").startswith("undecodable")]
    c.check("undecodable message in the DLQ with its reason and 1 attempt",
            len(bad) == 1 and bad[0]["reason"].startswith("undecodable: invalid JSON") and
            bad[0].get("attempts") == 1, f"{d}")
    c.check("dead-lettered counted (reason undecodable)",
            m('consumer_dead_lettered_total{reason="undecodable"}') == 1)

    # 4. valid messages that sit in the DLQ (dead-lettered for a reason that no longer holds,
    # e.g. by an older consumer): POST /dlq/retry brings them back and they are processed.
    # Several hundred, so that confirms of the replay arrive while it still fetches messages.
    nrep = 300
    st.tool("publish", "--queue", st.queue + ".dlq", "--id-prefix", f"replay-{tag}",
            "--count", str(nrep))
    replay_lines = {f"replay-{tag} message {i}".encode() for i in range(nrep)}
    wait_until(lambda: (lambda x: x and x["count"] == nrep + 2)(dlq(0)), 5)
    retries0 = m("consumer_retries_total")
    s, body = get_json(pu + "/dlq?limit=3")
    c.check(f"GET /dlq: {nrep + 2} messages, 3 shown", s == 200 and body["count"] == nrep + 2
            and len(body["messages"]) == 3, f"{s} {str(body)[:200]}")
    st_, _, body, _, _ = http_call(pu + "/dlq/retry", "POST", {})
    moved = json.loads(body).get("moved") if st_ == 200 else None
    c.check(f"POST /dlq/retry moves all {nrep + 2} back", moved == nrep + 2,
            f"{st_} {body[:200]}")
    lines = wait_lines(st.output, replay_lines, 15)
    got = collections.Counter(x for x in lines if x in replay_lines)
    c.check(f"the {nrep} replayed valid messages are processed (each line in the output once)",
            len(got) == nrep and max(got.values()) == 1, f"{len(got)} lines")
    # the failing one runs its retries again and returns; the undecodable one returns at once
    back = wait_until(lambda: m('consumer_dead_lettered_total{reason="failed"}') == 2 and
                      m('consumer_dead_lettered_total{reason="undecodable"}') == 2, 15)
    c.check("the replayed failing and undecodable messages come back to the DLQ", back)
    c.check("the replayed failing message was retried MAX_RETRIES times again",
            m("consumer_retries_total") - retries0 == max_retries)
    d = dlq()
    ids = sorted(x.get("message_id", "") for x in (d or {}).get("messages", []))
    c.check("DLQ holds exactly the two bad messages again",
            d is not None and d["count"] == 2 and dead_id in ids, f"{d}")
    lines, nl = read_output(st.output)
    c.check("the dead message never reached the output", dead.encode() not in lines)

    # 5. POST /dlq/retry with a count moves only that many
    st_, _, body, _, _ = http_call(pu + "/dlq/retry", "POST", {"count": 1})
    c.check("POST /dlq/retry {count: 1} moves 1", st_ == 200 and json.loads(body)["moved"] == 1,
            f"{st_} {body[:200]}")
    back = wait_until(lambda: (lambda x: x and x["count"] == 2)(dlq(0)) and
                      m('consumer_dead_lettered_total{reason="failed"}') +
                      m('consumer_dead_lettered_total{reason="undecodable"}') == 5, 15)
    c.check("... and it comes back to the DLQ", bool(back))

    # 6. the DLQ deleted under the consumer: the copy comes back unroutable; its original is
    # requeued (not acked, not lost), and the consumer reconnects, declaring the DLQ again
    st.tool("delete", "--queue", st.queue + ".dlq")
    rq0, rc0 = m("consumer_messages_requeued_total"), m("consumer_reconnects_total")
    st.tool("publish", "--queue", st.queue, "--body", "not json", "--id-prefix", f"lost-dlq-{tag}")
    d = wait_until(lambda: (lambda x: x if x and x["count"] >= 1 else None)(dlq()), 15)
    c.check("DLQ deleted: the undecodable message lands in the re-declared DLQ, once",
            d is not None and d["count"] == 1 and
            d["messages"][0].get("message_id") == f"lost-dlq-{tag}-0", f"{d}")
    c.check("... after its original was requeued once and the consumer reconnected",
            m("consumer_messages_requeued_total") - rq0 == 1 and
            m("consumer_reconnects_total") - rc0 == 1,
            f"requeued +{m('consumer_messages_requeued_total') - rq0}, "
            f"reconnects +{m('consumer_reconnects_total') - rc0}")
    expect_clean_exit(c, st)


def graceful(c, st, args):
    backlog = args.backlog
    st.start("producer")  # declares the topology
    # a backlog keeps the consumer busy in the middle of batches when SIGTERM comes
    st.tool("publish", "--queue", st.queue, "--count", str(backlog), "--id-prefix", "gb")
    st.start("consumer")
    load = Load(lambda: st.url("producer"), "gr").start()
    wait_until(lambda: len(read_output(st.output)[0]) >= backlog // 10, 30, 0.01)
    rc, secs = st.term("consumer")
    lines, nl = read_output(st.output)
    c.check(f"consumer exits 0 on SIGTERM under load ({secs:.2f} s, {len(lines)} lines then)",
            rc == 0, f"status {rc}")
    c.check("consumer stopped mid-backlog (the test means something)",
            0 < len(lines) < backlog, f"{len(lines)} lines of {backlog}")
    c.check("after the consumer's SIGTERM the output ends with a newline", nl)
    c.check("after the consumer's SIGTERM no line is written twice",
            len(set(lines)) == len(lines))
    st.start("consumer")
    time.sleep(2.0)
    n201 = sum(1 for r in load.snapshot() if r[1] == 201)
    rc, secs = st.term("producer", timeout=PUBLISH_TIMEOUT_MS / 1000 + 10)
    c.check(f"producer exits 0 on SIGTERM under HTTP load ({secs:.2f} s, {n201} x 201 before)",
            rc == 0, f"status {rc}")
    c.check("load threads stop", load.finish())
    res = load.snapshot()
    log(f"{len(res)} requests: {summarize_load(res)}")
    odd = [r for r in res if r[1] not in (201, 503, 0)]
    c.check("answers are 201 or 503 (no answer once the producer is gone)", not odd, f"{odd[:3]}")
    accepted = {r[0].encode() for r in res if r[1] == 201}
    accepted |= {f"gb message {i}".encode() for i in range(backlog)}
    sent = {r[0].encode() for r in res}
    check_output_exactly_once(c, st.output, accepted, "graceful shutdown", timeout=90,
                              allowed_extra=sent)
    dup = metrics(st.url("consumer")).get("consumer_duplicates_skipped_total")
    c.check("the stopped consumer had acked every line it wrote (no redelivery of one)",
            dup == 0, f"consumer_duplicates_skipped_total {dup}")
    rc, secs = st.term("consumer")
    c.check(f"consumer exits 0 on SIGTERM when idle ({secs:.2f} s)", rc == 0, f"status {rc}")
    lines, nl = read_output(st.output)
    c.check("final output ends with a newline", nl)


def output_full(c, st, args):
    outfs = os.path.join(st.tmp, "outfs")
    os.makedirs(outfs)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", outfs],
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        log("SKIP output-full: cannot mount a tmpfs (%s)" % r.stderr.decode().strip()[:200])
        return
    st.mounts = [outfs]
    st.output = os.path.join(outfs, "output.txt")
    st.start("consumer")
    st.start("producer")
    pu, cu = st.url("producer"), st.url("consumer")
    tag = str(os.getpid())
    accepted = set()

    pad = "x" * 6000  # lines larger than a page: a full tmpfs cannot absorb them in slack

    def post(i):
        line = f"full-{tag}-{i}-{pad}"
        s, _, _, _, _ = http_call(pu + "/produce", "POST", {"payload": line})
        if s == 201:
            accepted.add(line.encode())
        return s

    for i in range(10):
        post(i)
    c.check("before: 10 lines written", len(wait_lines(st.output, set(accepted), 20)) >= 10)
    filler = os.path.join(outfs, "filler")
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    log("tmpfs full")
    sent = [post(i) for i in range(100, 130)]
    c.check("while the disk is full the producer still accepts (30 x 201)",
            sent.count(201) == 30, f"{collections.Counter(sent)}")

    def out_errors():
        return sum(v for k, v in metrics(cu).items()
                   if k.startswith("message_processing_errors_total") and "output" in k)

    c.check("the failed writes are counted (message_processing_errors_total output)",
            wait_until(lambda: out_errors() > 0, 15))
    time.sleep(8)  # the old behaviour requeued every second: 8 requeues by now
    m = metrics(cu)
    requeued = m.get("consumer_messages_requeued_total", -1)
    c.check("the consumer holds the deliveries: nothing requeued", requeued == 0,
            f"consumer_messages_requeued_total {requeued}")
    depth = st.tool("depth", "--queue", st.queue, "--consumers").split()
    dlq = st.tool("depth", "--queue", st.queue + ".dlq").strip()
    c.check("nothing waits in the queue or went to the DLQ",
            depth[0] == "0" and dlq == "0", f"queue ready {depth}, dlq {dlq}")
    os.unlink(filler)
    log("filler removed")
    lines = check_output_exactly_once(c, st.output, accepted, "output full", timeout=60)
    c.check("all 40 lines written once the space is back", len(lines) == 40, f"{len(lines)}")
    expect_clean_exit(c, st)


def broker_alarm(c, st, args):
    tail_in = os.path.join(st.tmp, "input.log")
    state = os.path.join(st.tmp, "state")
    os.makedirs(state, exist_ok=True)
    open(tail_in, "w").close()
    st.start("consumer")
    st.start("producer", INPUT_FILE=tail_in, TAIL_STATE_DIR=state, TAIL_POLL_MS="100")
    pu = st.url("producer")
    tag = str(os.getpid())
    accepted, tailed = set(), []

    def post(i):
        s, h, body, _, _ = http_call(pu + "/produce", "POST", {"payload": f"alarm-{tag}-{i}"},
                                     timeout=15)
        if s == 201:
            accepted.add(f"alarm-{tag}-{i}".encode())
        return s, h, body

    def tail_lines(first, n):
        with open(tail_in, "a") as f:
            for i in range(first, first + n):
                f.write(f"tailed-{tag}-{i}\n")
                tailed.append(f"tailed-{tag}-{i}".encode())

    ok = [post(i)[0] for i in range(20)]
    c.check("before the alarm: 20 x 201", ok.count(201) == 20, f"{collections.Counter(ok)}")
    tail_lines(0, 50)
    st.ctl("set_vm_memory_high_watermark", "0")
    log("memory alarm raised (vm_memory_high_watermark 0)")
    # RabbitMQ blocks a connection (and says connection.blocked) at its next publish, and
    # holds that message until the alarm clears: its request cannot be confirmed in time.
    s, _, body = post(1000)
    c.check("the first publish after the alarm: 503 within PUBLISH_TIMEOUT_MS (never 201)",
            s == 503, f"{s} {body[:200]!r}")
    blocked = wait_until(lambda: metrics(pu).get("producer_broker_blocked", 0) == 1, 20)
    c.check("the producer sees connection.blocked (producer_broker_blocked 1)", blocked)
    s, h, body = post(1001)
    err = ""
    try:
        err = json.loads(body.decode()).get("error", "")
    except ValueError:
        pass
    c.check("POST /produce while blocked: 503 naming the alarm, with Retry-After",
            s == 503 and "alarm" in err and "retry-after" in h, f"{s} {body[:200]!r}")
    rs, _ = get_json(pu + "/health/ready")
    c.check("the producer stays ready (the broker is up, only blocking)", rs == 200, f"{rs}")
    tail_lines(50, 50)  # tailed while blocked: held back, not lost
    time.sleep(2)
    st.ctl("set_vm_memory_high_watermark", "0.4")
    log("memory alarm cleared (vm_memory_high_watermark 0.4)")
    unblocked = wait_until(lambda: metrics(pu).get("producer_broker_blocked", 1) == 0, 20)
    c.check("connection.unblocked clears the gauge", unblocked)
    ok = [post(i)[0] for i in range(2000, 2020)]
    c.check("after the alarm: 20 x 201", ok.count(201) == 20, f"{collections.Counter(ok)}")
    tail_lines(100, 50)
    check_output_exactly_once(c, st.output, accepted | set(tailed), "broker alarm", timeout=60)
    expect_clean_exit(c, st)


def dlq_race(c, st, args):
    """GET /dlq followed at once by POST /dlq/retry, round after round, with the consumer
    working: every message read by the page must be back in the DLQ before the retry counts
    it, and every message the retry moved must leave the DLQ (CI: moved 299 of 302, then 71
    originals back in the DLQ)."""
    st.start("consumer")
    st.start("producer")
    pu = st.url("producer")
    tag = str(os.getpid())
    n, bad = args.dlq_messages, []

    def dlq_count():
        page = get_json(f"{pu}/dlq?limit=0")[1]
        return page.get("count") if page else None

    for rnd in range(args.rounds):
        prefix = f"race-{tag}-{rnd}"
        st.tool("publish", "--queue", st.queue + ".dlq", "--id-prefix", prefix,
                "--count", str(n))
        want = {f"{prefix} message {i}".encode() for i in range(n)}
        s, page = get_json(f"{pu}/dlq?limit=3")
        s2, _, body, _, _ = http_call(pu + "/dlq/retry", "POST", {})
        moved = json.loads(body).get("moved") if s2 == 200 else None
        lines = wait_lines(st.output, want, 20)
        got = collections.Counter(x for x in lines if x in want)
        empty = wait_until(lambda: dlq_count() == 0, 5)
        ok = (s == 200 and page.get("count") == n and moved == n and len(got) == n and
              max(got.values(), default=0) == 1 and empty)
        if not ok:
            bad.append(f"round {rnd}: page {s} count {page and page.get('count')}, retry {s2} "
                       f"{body[:120]!r}, {len(got)} of {n} lines, DLQ then {dlq_count()}")
            if len(bad) >= 3:
                break
    c.check(f"{args.rounds} rounds of GET /dlq then POST /dlq/retry of {n}: each moves all, "
            "each message processed once, the DLQ empty after", not bad, "; ".join(bad))
    expect_clean_exit(c, st)


SCENARIOS = {
    "broker-restart": broker_restart,
    "consumer-kill": consumer_kill,
    "producer-kill": producer_kill,
    "retry-dlq": retry_dlq,
    "dlq-race": dlq_race,
    "graceful": graceful,
    "broker-alarm": broker_alarm,
    "output-full": output_full,
}


def finish(c, tmp, t0, keep=False, logs=(), what=""):
    """The end of a test script: how long it took, the scratch folder kept (on a failure or
    `keep`, with the last lines of each log in `logs`) or removed, and `N passed, M failed`.
    Returns the exit status."""
    log(f"{what + ' ' if what else ''}took {time.monotonic() - t0:.1f} s")
    if c.failed or keep:
        log(f"scratch folder kept: {tmp}")
        for name in logs if c.failed else ():
            p = os.path.join(tmp, f"{name}.log")
            if os.path.exists(p):
                print(f"--- {name}.log (last lines)")
                with open(p, errors="replace") as f:
                    print("".join(f.readlines()[-15:]), end="")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


def run_scenario(scenarios, args, prefix):
    """Runs scenarios[args.scenario](c, st, args) on a Stack of its own (its own broker unless
    args.amqp_port), queue `<prefix>_<scenario>_<pid>`; cleans up; returns the exit status."""
    build = os.path.abspath(args.build_dir)
    tmp = tempfile.mkdtemp(prefix=f"relayq-{prefix}-{args.scenario}.")
    os.chmod(tmp, 0o755)  # the broker (user rabbitmq) must reach its folder inside
    queue = f"{prefix}_{args.scenario.replace('-', '_')}_{os.getpid()}"
    st = Stack(build, tmp, queue, args.amqp_port)
    c = Checks()
    t0 = time.monotonic()
    try:
        if st.own_broker:
            st.broker("start")
        log(f"{args.scenario}: queue {queue}, broker 127.0.0.1:{st.amqp}, scratch {tmp}")
        scenarios[args.scenario](c, st, args)
    except Exception as e:  # noqa: BLE001 - any error is a failed check, reported
        c.check(f"{args.scenario} ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        st.close()
        if not st.own_broker:
            for q in (queue, queue + ".dlq") + tuple(f"{queue}.retry.{i}" for i in range(1, 21)):
                try:
                    st.tool("delete", "--queue", q)
                except Exception:  # noqa: BLE001 - best effort cleanup of a shared broker
                    pass
    return finish(c, tmp, t0, getattr(args, "keep", False), ("producer", "consumer"),
                  args.scenario)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--build-dir", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--amqp-port", type=int, help="use this broker (else start one)")
    ap.add_argument("--messages", type=int, default=600, help="consumer-kill backlog")
    ap.add_argument("--backlog", type=int, default=10000, help="graceful: consumer backlog")
    ap.add_argument("--before", type=float, default=3.0, help="load seconds before a fault")
    ap.add_argument("--after", type=float, default=6.0, help="load seconds after recovery")
    ap.add_argument("--freeze", type=float, default=6.0, help="broker-restart: SIGSTOP seconds")
    ap.add_argument("--rounds", type=int, default=10, help="dlq-race: rounds")
    ap.add_argument("--dlq-messages", type=int, default=200, help="dlq-race: messages a round")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    return run_scenario(SCENARIOS, args, "rel")


if __name__ == "__main__":
    sys.exit(main())
