#!/usr/bin/python3
"""The chaos campaign of relayq (issue 13): random faults, a history, an invariant checker.

Starts a private broker, two fault proxies (tests/chaos/proxy.py: one in front of the
producer's broker connections, one in front of the consumers'), the ASan+UBSan builds of the
producer (tailing INPUT_FILE) and the consumer(s) (writing OUTPUT_FILE). Clients run the API
at once (/produce, /batch-produce, wait=true singles and batches, invalid requests), a writer
appends hostile lines to the tailed file (empty, \\r, NUL, invalid UTF-8, overlong), and
hostile messages go straight to the queue (broken JSON, wrong types, huge ids, forged tail
headers). A schedule drawn from --seed mixes proxy faults (cut mid-frame, stop reading,
delay, throttle, RST, refuse), kill -9 + restart of each service, SIGSTOP/SIGCONT of the
broker, broker restart, input rotation (rename, copytruncate), output rotation (rename +
SIGHUP), rabbitmqctl close_connection and a full disk under OUTPUT_FILE (a tmpfs, when
mount(2) is allowed). Then it heals, drains and checks the invariants of the issue
(tests/chaos/checker.py), printing PASS/FAIL per invariant.

Usage: run.py [--seed N] [--duration S] [--table FILE] [--build-dir D] [--tool-build-dir D]
              [--consumers N] [--keep]
Exit 0 when every invariant held. The same seed draws the same schedule (the timing of the
system under test is not replayed). 127.0.0.1 only; only processes it started are signalled,
by PID; every wait is bounded.
"""
import argparse
import glob
import http.client as http_client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import amqp_mini  # noqa: E402
import checker  # noqa: E402
import proxy as px  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from test_reliability import free_port  # noqa: E402  (port and port + 20000 free)

PUBLISH_TIMEOUT_MS = 3000
REPLY_TIMEOUT_MS = 5000
MAX_BATCH = 50
QUEUE = "chaos_q"
NL = b"\n"
T0 = time.monotonic()


def log(msg):
    print(f"[chaos {time.monotonic() - T0:7.2f}] {msg}", flush=True)


def http(port, method, path, body=None, raw=None, ctype="application/json", timeout=10.0):
    """One request on a fresh connection: (status, parsed JSON body or None); 0 on failure."""
    conn = http_client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": ctype} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        payload = r.read()
        try:
            parsed = json.loads(payload.decode()) if payload else None
        except ValueError:
            parsed = None
        return r.status, parsed, payload
    except (OSError, http_client.HTTPException):
        return 0, None, b""
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# the system under test


class Stack:
    def __init__(self, args, tmp):
        self.args, self.tmp = args, tmp
        self.build = os.path.abspath(args.build_dir)
        self.tool_build = os.path.abspath(args.tool_build_dir)
        self.amqp = free_port()
        self.broker_dir = os.path.join(tmp, "broker")
        self.outdir = os.path.join(tmp, "out")
        os.makedirs(self.outdir)
        self.mounted = False
        self.mount_note = ""
        # The output and its rotated copies stay on this tmpfs for the checker: room for
        # about 250 KiB/s of output over the whole run (a 900 s run wrote ~100 MiB; a 48 MiB
        # tmpfs filled for good and read as a lost-message violation), the disk-full fault
        # fills what is left anyway.
        size_mb = 48 + int(args.duration / 4)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % size_mb, "tmpfs",
                            self.outdir], capture_output=True, timeout=30)
        if r.returncode == 0:
            self.mounted = True
            self.mount_note = "tmpfs mounted (%d MiB): full-disk fault on" % size_mb
        else:
            self.mount_note = ("mount not allowed (" + r.stderr.decode().strip()[:120] +
                               "): full-disk fault skipped")
        self.output = os.path.join(self.outdir, "out.txt")
        self.input = os.path.join(tmp, "in.log")
        self.san = os.path.join(tmp, "san")
        os.makedirs(self.san)
        self.procs = {}
        self.expected_down = set()
        self.deaths = []
        self.frozen = False
        self.ports = {"producer": free_port()}
        self.consumers = [f"consumer{i}" for i in range(args.consumers)]
        for c in self.consumers:
            self.ports[c] = free_port()
        self.pprox = px.Proxy(0, ("127.0.0.1", self.amqp), "producer-proxy",
                              log_file=os.path.join(tmp, "faults.log"), seed=args.seed).start()
        self.cprox = px.Proxy(0, ("127.0.0.1", self.amqp), "consumer-proxy",
                              log_file=os.path.join(tmp, "faults.log"),
                              seed=args.seed + 1).start()
        self.pctl = self.pprox.serve_control(0)
        self.cctl = self.cprox.serve_control(0)
        base = dict(os.environ)
        base.update(RABBITMQ_HOST="127.0.0.1", LOG_LEVEL="info", REQUEST_QUEUE=QUEUE,
                    RABBITMQ_HEARTBEAT="5", MAX_RETRIES="3", RETRY_BASE_MS="200",
                    ASAN_OPTIONS=f"detect_leaks=1:log_path={self.san}/asan",
                    UBSAN_OPTIONS=f"print_stacktrace=1:log_path={self.san}/ubsan")
        self.env = {"producer": dict(base, RABBITMQ_PORT=str(self.pprox.port),
                                     PRODUCER_BIND="127.0.0.1",
                                     PRODUCER_PORT=str(self.ports["producer"]),
                                     INPUT_FILE=self.input,
                                     TAIL_STATE_DIR=os.path.join(tmp, "tail-state"),
                                     TAIL_POLL_MS="100", TAIL_ROTATE_WAIT_MS="500",
                                     TAIL_MAX_LINE_BYTES="4096", TAIL_CHUNK_BYTES="2048",
                                     PUBLISH_TIMEOUT_MS=str(PUBLISH_TIMEOUT_MS),
                                     REPLY_TIMEOUT_MS=str(REPLY_TIMEOUT_MS),
                                     MAX_BATCH_SIZE=str(MAX_BATCH))}
        for c in self.consumers:
            self.env[c] = dict(base, RABBITMQ_PORT=str(self.cprox.port),
                               CONSUMER_BIND="127.0.0.1", CONSUMER_PORT=str(self.ports[c]),
                               OUTPUT_FILE=self.output, PREFETCH_COUNT="50",
                               PUBLISH_TIMEOUT_MS=str(PUBLISH_TIMEOUT_MS))
        self.lock = threading.Lock()
        self.monitor_stop = threading.Event()

    # -- broker
    def broker(self, cmd):
        args = ["bash", os.path.join(ROOT, "scripts/broker.sh"), cmd, self.broker_dir]
        if cmd == "start":
            args.append(str(self.amqp))
        with open(os.path.join(self.tmp, "broker.out"), "a") as out:
            rc = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT,
                                timeout=150).returncode
        if rc != 0:
            raise RuntimeError(f"broker {cmd} failed (see {self.tmp}/broker.out)")

    def beam_pid(self):
        with open(os.path.join(self.broker_dir, "rabbitmq.pid")) as f:
            return int(f.read().strip())

    def freeze(self, on):
        os.kill(self.beam_pid(), signal.SIGSTOP if on else signal.SIGCONT)
        self.frozen = on

    def ctl(self, *args, timeout=60):
        r = subprocess.run(["bash", os.path.join(ROOT, "scripts/broker.sh"), "ctl",
                            self.broker_dir] + list(args), capture_output=True, timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace")

    def tool(self, *args, timeout=60):
        cmd = [os.path.join(self.tool_build, "bin", "rq_amqp_tool"), args[0], "--host",
               "127.0.0.1", "--port", str(self.amqp), "--quiet"] + list(args[1:])
        r = subprocess.run(cmd, capture_output=True, timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace")

    # -- services
    def start(self, name):
        logf = open(os.path.join(self.tmp, f"{name}.log"), "a")
        binary = "producer" if name == "producer" else "consumer"
        p = subprocess.Popen([os.path.join(self.build, "bin", binary)], env=self.env[name],
                             stdout=logf, stderr=logf)
        logf.close()
        with self.lock:
            self.procs[name] = p
            self.expected_down.discard(name)

    def ready_s(self, name, timeout=30.0):
        """Seconds until /health/ready answers 200, None when not within timeout."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            st, _, _ = http(self.ports[name], "GET", "/health/ready", timeout=2)
            if st == 200:
                return time.monotonic() - t0
            time.sleep(0.1)
        return None

    def kill9(self, name):
        with self.lock:
            self.expected_down.add(name)
            p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def hup(self, name):
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGHUP)

    def term(self, name, timeout=20):
        with self.lock:
            self.expected_down.add(name)
            p = self.procs.get(name)
        if p is None:
            return None
        if p.poll() is not None:
            return p.returncode
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return "timeout (SIGKILL)"

    def monitor(self):
        while not self.monitor_stop.wait(0.2):
            with self.lock:
                for name, p in self.procs.items():
                    if name not in self.expected_down and p.poll() is not None:
                        self.deaths.append(f"{name} (pid {p.pid}) exited with {p.returncode} "
                                           f"at {time.monotonic() - T0:.1f} s, unplanned")
                        self.expected_down.add(name)

    def metric(self, name, metric):
        st, _, raw = http(self.ports[name], "GET", "/metrics", timeout=3)
        if st != 200:
            return None
        for line in raw.decode(errors="replace").splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
        return None

    def close(self):
        if self.frozen:
            try:
                self.freeze(False)
            except OSError:
                pass
        self.monitor_stop.set()
        for name in list(self.procs):
            self.term(name, 10)
        self.pprox.stop()
        self.cprox.stop()
        try:
            self.broker("stop")
        except Exception as e:  # noqa: BLE001 - reported, the cleanup goes on
            log(f"broker stop: {e}")
        if self.mounted:
            subprocess.run(["umount", "-l", self.outdir], capture_output=True, timeout=30)


# ---------------------------------------------------------------------------------------------
# clients


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.records = []

    def add(self, rec):
        with self.lock:
            self.records.append(rec)

    def snapshot(self):
        with self.lock:
            return list(self.records)


class Client(threading.Thread):
    """One API client of one kind, recording every request."""

    def __init__(self, kind, k, stack, hist, seed, stop):
        super().__init__(daemon=True)
        self.kind, self.k, self.stack, self.hist, self.stop = kind, k, stack, hist, stop
        self.rng = random.Random(seed * 1000 + k)
        self.prefix = f"c{seed}-{kind}{k}"
        self.n = 0

    def ids(self, count):
        out = [f"{self.prefix}-{self.n}-{i}" for i in range(count)]
        self.n += 1
        return out

    def request(self):
        """(method path, raw body, content type, ids, deadline s)."""
        pub = PUBLISH_TIMEOUT_MS / 1000
        wait = max(pub, REPLY_TIMEOUT_MS / 1000)
        if self.kind == "single":
            (i,) = self.ids(1)
            return "/produce", {"id": i, "payload": i}, [i], pub
        if self.kind == "batch":
            ids = self.ids(self.rng.randint(1, 20))
            return "/batch-produce", {"messages": [{"id": i, "payload": i} for i in ids]}, ids, pub
        if self.kind == "wait1":
            (i,) = self.ids(1)
            if self.rng.random() < 0.5:
                return "/produce?wait=true", {"id": i, "payload": i}, [i], wait
            return "/produce", {"id": i, "payload": i, "wait": True}, [i], wait
        if self.kind == "waitb":
            ids = self.ids(self.rng.randint(1, 8))
            return ("/batch-produce", {"messages": [{"id": i, "payload": i} for i in ids],
                                       "wait": True}, ids, wait)
        # bad: every one must be a 4xx and publish nothing
        c = self.rng.randrange(8)
        if c == 0:
            (i,) = self.ids(1)
            return "/produce", {"id": i, "payload": i, "processing_time": "slow"}, [i], pub
        if c == 1:
            (i,) = self.ids(1)
            return "/produce", {"id": i, "payload": i, "processing_time": -1}, [i], pub
        if c == 2:
            ids = self.ids(5)
            msgs = [{"id": i, "payload": i} for i in ids]
            del msgs[self.rng.randrange(5)]["payload"]
            return "/batch-produce", {"messages": msgs}, ids, pub
        if c == 3:
            ids = self.ids(MAX_BATCH + 1)
            return "/batch-produce", {"messages": [{"id": i, "payload": i} for i in ids]}, ids, pub
        if c == 4:
            (i,) = self.ids(1)
            # a form type (curl -d without -H) is refused; another type is published raw
            return "/produce", ("RAW", json.dumps({"id": i, "payload": i}).encode(),
                                "application/x-www-form-urlencoded"), [i], pub
        if c == 5:
            (i,) = self.ids(1)
            return "/produce", ("RAW", b'{"id":"' + i.encode() + b'","payload":"' + i.encode() +
                                b'"', "application/json"), [i], pub
        if c == 6:
            (i,) = self.ids(1)
            return "/produce", {"id": i, "payload": i, "id2": 1, "wait": "yes"}, [i], pub
        (i,) = self.ids(1)
        return "/produce", {"id": "x" * 256, "payload": i}, [i], pub

    def run(self):
        port = self.stack.ports["producer"]
        while not self.stop.is_set():
            path, body, ids, deadline = self.request()
            raw, ctype = None, "application/json"
            if isinstance(body, tuple):
                _, raw, ctype = body
                body = None
            t0 = time.monotonic()
            st, parsed, _ = http(port, "POST", path, body=body, raw=raw, ctype=ctype,
                                 timeout=deadline + 10)
            t1 = time.monotonic()
            self.hist.add({"kind": self.kind, "t0": t0, "t1": t1 if st else None, "status": st,
                           "ids": ids, "deadline": deadline, "body": parsed})
            if st == 0:
                time.sleep(0.2)
            else:
                time.sleep(self.rng.uniform(0.01, 0.08))


def make_line(i, rng):
    kinds = [
        b"L%d plain" % i,
        b"",
        b"L%d tab\tand CR\r" % i,
        b"L%d NUL \x00 inside" % i,
        b"L%d not utf-8 \xff\xfe\xc3" % i,
        b"L%d " % i + bytes(rng.randrange(32, 127) for _ in range(rng.randrange(0, 300))),
        b"\r",
    ]
    if rng.random() < 0.02:
        return b"L%d overlong " % i + b"o" * rng.randrange(4000, 12000) + b"\n"
    return kinds[rng.randrange(len(kinds))] + b"\n"


class Writer(threading.Thread):
    """Appends lines to INPUT_FILE (reopening the path for each write, as an application does
    after a `create` rotation); `lock` pauses it for copytruncate."""

    def __init__(self, path, seed, stop):
        super().__init__(daemon=True)
        self.path, self.stop = path, stop
        self.rng = random.Random(seed * 7 + 1)
        self.written = []
        self.lock = threading.Lock()
        self.n = 0

    def run(self):
        while not self.stop.is_set():
            chunk = []
            for _ in range(self.rng.randint(1, 30)):
                chunk.append(make_line(self.n, self.rng))
                self.n += 1
            data = b"".join(chunk)
            with self.lock:
                with open(self.path, "ab") as f:
                    f.write(data)
                self.written.append(data)
            time.sleep(self.rng.uniform(0.02, 0.1))

    def expected(self):
        with self.lock:
            return b"".join(self.written)


def hostile_messages(seed):
    """(message_id, kwargs for Publisher.publish) of messages the consumer must dead-letter."""
    out = []

    def add(body, ct="application/json", headers=None, **kw):
        mid = f"h{seed}-{len(out)}"
        if isinstance(body, str):
            body = body.replace("MID", mid)
        out.append((mid, dict(body=body, content_type=ct, message_id=mid, headers=headers, **kw)))

    add('{"payload": "HOSTILE MID broken"')
    add('{"payload": "HOSTILE MID", "fail_times": 1.5}')
    add('{"payload": "HOSTILE MID", "processing_time": "slow"}')
    add('{"payload": "HOSTILE MID", "fail_times": -1}')
    add('{"payload": "HOSTILE MID", "id": ""}')
    add('{"payload": 1e999, "id": "HOSTILE MID overflow"}')
    add('{"payload": "HOSTILE MID", "id": 5}')
    add(b'{"payload": "HOSTILE \xff\xfe"}')
    add(b"\x89PNG HOSTILE", ct="image/png")
    add('{"payload": "HOSTILE MID", "id": "' + "i" * 300 + '"}', reply_to="nowhere")
    add(b"HOSTILE forged path\n", ct="application/octet-stream",
        headers={"x-file": "../../etc/passwd", "x-offset": 0, "x-format": "lines"})
    add(b"HOSTILE negative\n", ct="application/octet-stream",
        headers={"x-file": "forged:1", "x-offset": -5, "x-format": "lines"})
    add(b"HOSTILE string offset\n", ct="application/octet-stream",
        headers={"x-file": "forged:2", "x-offset": "abc"})
    add(b"HOSTILE end mismatch\n", ct="application/octet-stream",
        headers={"x-file": "forged:3", "x-offset": 0, "x-end": 100, "x-format": "lines"})
    add(b"HOSTILE overflow\n", ct="application/octet-stream",
        headers={"x-file": "forged:4", "x-offset": 2**63 - 3, "x-format": "lines"})
    add(b"HOSTILE no offset\n", ct="application/octet-stream", headers={"x-file": "forged:5"})
    add(b"HOSTILE bad format\n", ct="application/octet-stream",
        headers={"x-file": "forged:6", "x-offset": 0, "x-format": "json"})
    return out


class Hostile(threading.Thread):
    """Publishes the hostile messages straight to the queue (not through a proxy), one every
    ~2 s; records the confirmed ones (must be in the DLQ) and the unknown ones (may be)."""

    def __init__(self, stack, seed, stop):
        super().__init__(daemon=True)
        self.stack, self.stop = stack, stop
        self.msgs = hostile_messages(seed)
        self.confirmed, self.unknown = [], []
        self.rng = random.Random(seed * 13)

    def run(self):
        pending = list(self.msgs)
        while pending and not self.stop.wait(self.rng.uniform(1.0, 3.0)):
            mid, kw = pending[0]
            try:
                p = amqp_mini.Publisher("127.0.0.1", self.stack.amqp, timeout=5)
            except (OSError, amqp_mini.AmqpError):
                continue  # broker down: nothing sent, try again later
            try:
                ok = p.publish(QUEUE, **kw)
                (self.confirmed if ok else self.unknown).append(mid)
                pending.pop(0)
            except (OSError, amqp_mini.AmqpError):
                self.unknown.append(mid)
                pending.pop(0)
            finally:
                p.close()


# ---------------------------------------------------------------------------------------------
# the schedule

FAULTS = [
    # (name, weight)
    ("proxy-cut", 6), ("proxy-pause", 4), ("proxy-delay", 2), ("proxy-throttle", 2),
    ("proxy-reset", 4), ("proxy-refuse", 2), ("kill-producer", 3), ("kill-consumer", 3),
    ("broker-freeze", 2), ("broker-restart", 1), ("input-rename", 2),
    ("input-copytruncate", 1), ("output-rotate", 2), ("close-connection", 3), ("disk-full", 1),
]


def draw_schedule(seed, duration, disk):
    rng = random.Random(seed)
    names = [n for n, _ in FAULTS if disk or n != "disk-full"]
    weights = [w for n, w in FAULTS if disk or n != "disk-full"]
    sched, t = [], 2.0
    restarts = 0
    while t < duration:
        name = rng.choices(names, weights)[0]
        if name == "broker-restart":
            if restarts >= max(1, int(duration // 120)):
                name = "proxy-reset"
            else:
                restarts += 1
        ev = {"at": round(t, 1), "fault": name}
        if name.startswith("proxy-"):
            ev["side"] = rng.choice(["producer", "consumer"])
            ev["dir"] = rng.choice(["up", "down"])
        if name == "proxy-cut":
            ev["bytes"] = rng.choice([0, 1, 7, rng.randrange(1, 64), rng.randrange(1, 20000)])
            ev["hold"] = round(rng.uniform(0.5, 3), 1)
        elif name == "proxy-pause":
            ev["hold"] = round(rng.uniform(1, 8), 1)
        elif name == "proxy-delay":
            ev["value"] = round(rng.uniform(0.05, 0.6), 2)
            ev["hold"] = round(rng.uniform(2, 6), 1)
        elif name == "proxy-throttle":
            ev["value"] = rng.choice([500, 5000, 50000])
            ev["hold"] = round(rng.uniform(2, 6), 1)
        elif name == "proxy-refuse":
            ev["hold"] = round(rng.uniform(1, 5), 1)
        elif name in ("kill-producer", "kill-consumer"):
            ev["hold"] = round(rng.uniform(0.2, 2.5), 1)
        elif name == "broker-freeze":
            ev["hold"] = round(rng.uniform(1, 8), 1)
        elif name == "disk-full":
            ev["hold"] = round(rng.uniform(2, 6), 1)
        else:
            ev["hold"] = 0.5
        ev["pick"] = rng.random()
        sched.append(ev)
        t += ev["hold"] + rng.uniform(1.0, 4.0)
    return sched


class Campaign:
    def __init__(self, stack, writer, schedule):
        self.s, self.w, self.schedule = stack, writer, schedule
        self.applied = []
        self.excused = []  # (t_from, t_to): producer down
        self.in_rot = 0
        self.out_rot = 0

    def restart_after(self, name, hold):
        t_kill = time.monotonic()
        self.s.kill9(name)
        time.sleep(hold)
        self.s.start(name)
        r = self.s.ready_s(name, 60)
        if name == "producer":
            self.excused.append((t_kill, time.monotonic()))
        return r

    def apply(self, ev):
        s, f = self.s, ev["fault"]
        note = ""
        if f.startswith("proxy-"):
            ctl = s.pctl if ev["side"] == "producer" else s.cctl
            d = ev["dir"]
            if f == "proxy-cut":
                r = px.control(ctl, f"cut all {d} {ev['bytes']}")
                time.sleep(ev["hold"])
                px.control(ctl, "pass all")
            elif f == "proxy-pause":
                r = px.control(ctl, f"pause all {d}")
                time.sleep(ev["hold"])
                px.control(ctl, "pass all")
            elif f == "proxy-delay":
                r = px.control(ctl, f"delay all {d} {ev['value']}")
                time.sleep(ev["hold"])
                px.control(ctl, "pass all")
            elif f == "proxy-throttle":
                r = px.control(ctl, f"throttle all {d} {ev['value']}")
                time.sleep(ev["hold"])
                px.control(ctl, "pass all")
            elif f == "proxy-reset":
                r = px.control(ctl, "reset any")
            elif f == "proxy-refuse":
                px.control(ctl, f"refuse {ev['hold']}")
                r = px.control(ctl, "reset all")
                time.sleep(ev["hold"])
            note = f"conns {r.get('conns')}"
        elif f == "kill-producer":
            note = f"ready again after {self.restart_after('producer', ev['hold'])} s"
        elif f == "kill-consumer":
            name = s.consumers[int(ev["pick"] * len(s.consumers))]
            note = f"{name} ready again after {self.restart_after(name, ev['hold'])} s"
        elif f == "broker-freeze":
            s.freeze(True)
            time.sleep(ev["hold"])
            s.freeze(False)
        elif f == "broker-restart":
            s.broker("stop")
            time.sleep(0.5)
            s.broker("start")
        elif f == "input-rename":
            self.in_rot += 1
            with self.w.lock:
                if os.path.exists(s.input):
                    os.rename(s.input, f"{s.input}.{self.in_rot}")
        elif f == "input-copytruncate":
            with self.w.lock:
                deadline = time.monotonic() + 20
                behind = None
                while time.monotonic() < deadline:
                    behind = s.metric("producer", "producer_tail_bytes_behind")
                    if behind == 0:
                        break
                    time.sleep(0.1)
                if behind == 0 and os.path.exists(s.input):
                    shutil.copyfile(s.input, s.input + ".copy")
                    with open(s.input, "r+b") as fh:
                        fh.truncate(0)
                    note = "copied and truncated"
                else:
                    note = f"SKIPPED: the tailer did not catch up (behind {behind})"
        elif f == "output-rotate":
            self.out_rot += 1
            for k in range(self.out_rot - 1, 0, -1):
                src = f"{s.output}.{k}"
                if os.path.exists(src):
                    os.rename(src, f"{s.output}.{k + 1}")
            if os.path.exists(s.output):
                os.rename(s.output, s.output + ".1")
            for c in s.consumers:
                s.hup(c)
        elif f == "close-connection":
            rc, out = s.ctl("list_connections", "pid", "peer_port", timeout=20)
            pids = [ln.split("\t")[0] for ln in out.splitlines() if ln.startswith("<")]
            if pids:
                pid = pids[int(ev["pick"] * len(pids))]
                rc, _ = s.ctl("close_connection", pid, "chaos campaign", timeout=20)
                note = f"closed {pid} (rc {rc}) of {len(pids)}"
            else:
                note = "no connection to close"
        elif f == "disk-full":
            filler = os.path.join(s.outdir, "filler")
            try:
                with open(filler, "wb") as fh:
                    while True:
                        fh.write(b"\0" * 1048576)
                        fh.flush()
            except OSError:
                pass
            time.sleep(ev["hold"])
            os.unlink(filler)
            note = "filled the tmpfs, then freed it"
        return note

    def run(self, stop_at):
        t_start = time.monotonic()
        for ev in self.schedule:
            if time.monotonic() >= stop_at:
                break
            while time.monotonic() < t_start + ev["at"] and time.monotonic() < stop_at:
                time.sleep(0.05)
            try:
                note = self.apply(ev)
            except Exception as e:  # noqa: BLE001 - a fault that failed to apply is logged
                note = f"ERROR applying: {e!r}"
            ev = dict(ev, applied_at=round(time.monotonic() - T0, 1), note=note)
            self.applied.append(ev)
            log(f"fault {ev['fault']} {json.dumps({k: v for k, v in ev.items() if k not in ('fault', 'pick')})}")


# ---------------------------------------------------------------------------------------------


def read_outputs(stack):
    """The bytes of every output file in rotation order (oldest first)."""
    files = sorted(glob.glob(stack.output + ".[0-9]*"), key=lambda p: -int(p.rsplit(".", 1)[1]))
    files.append(stack.output)
    data = b""
    for p in files:
        try:
            with open(p, "rb") as f:
                data += f.read()
        except FileNotFoundError:
            pass
    return data


def sanitizer_reports(stack):
    out = []
    for p in glob.glob(os.path.join(stack.san, "*")):
        with open(p, "rb") as f:
            out.append(f"{os.path.basename(p)}: " + f.read(400).decode(errors="replace"))
    for name in stack.procs:
        try:
            with open(os.path.join(stack.tmp, f"{name}.log"), "rb") as f:
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            continue
        for marker in ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer"):
            k = text.find(marker)
            if k >= 0:
                out.append(f"{name}.log: {text[max(0, k - 100):k + 300]}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--duration", type=float, default=90.0)
    ap.add_argument("--table", default=None, help="append a row per seed to this file")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-chaos-asan"),
                    help="the ASan+UBSan build of producer and consumer")
    ap.add_argument("--tool-build-dir", default=os.path.join(ROOT, "build-chaos"),
                    help="a build with bin/rq_amqp_tool")
    ap.add_argument("--consumers", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--dump", default=None, help="write history.json, output.bin and "
                    "expected_tail.bin here (for tests/chaos/test_checker.py CHAOS_DUMP=DIR)")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1 << 31)
    tmp = tempfile.mkdtemp(prefix=f"relayq-chaos.{args.seed}.")
    os.chmod(tmp, 0o755)
    log(f"seed {args.seed}, duration {args.duration} s, scratch {tmp}")
    stack = Stack(args, tmp)
    log(stack.mount_note)
    schedule = draw_schedule(args.seed, args.duration, stack.mounted)
    hist = History()
    stop = threading.Event()
    writer = Writer(stack.input, args.seed, stop)
    hostile = Hostile(stack, args.seed, stop)
    camp = Campaign(stack, writer, schedule)
    results = []
    ok = False
    t_begin = time.monotonic()
    try:
        stack.broker("start")
        for c in stack.consumers:
            stack.start(c)
            if stack.ready_s(c, 60) is None:
                raise RuntimeError(f"{c} not ready")
        stack.start("producer")
        if stack.ready_s("producer", 60) is None:
            raise RuntimeError("producer not ready")
        threading.Thread(target=stack.monitor, daemon=True).start()
        clients = [Client(kind, k, stack, hist, args.seed, stop)
                   for k, kind in enumerate(["single", "single", "batch", "wait1", "waitb",
                                             "bad"])]
        for t in clients + [writer, hostile]:
            t.start()
        camp.run(time.monotonic() + args.duration)
        log("schedule done: stopping the clients and the writer")
        stop.set()
        for t in clients + [writer, hostile]:
            t.join(PUBLISH_TIMEOUT_MS / 1000 + REPLY_TIMEOUT_MS / 1000 + 15)
        # heal every fault
        log("healing")
        for ctl in (stack.pctl, stack.cctl):
            px.control(ctl, "heal")
        if stack.frozen:
            stack.freeze(False)
        rc_b = subprocess.run(["bash", os.path.join(ROOT, "scripts/broker.sh"), "status",
                               stack.broker_dir], capture_output=True, timeout=60).returncode
        if rc_b != 0:
            stack.broker("start")
        for name in ["producer"] + stack.consumers:
            p = stack.procs[name]
            if p.poll() is not None:
                log(f"{name} not running at heal: starting it")
                stack.start(name)
        t_heal = time.monotonic()
        ready = {}
        for name in ["producer"] + stack.consumers:
            r = stack.ready_s(name, 15)
            ready[name] = None if r is None else round(time.monotonic() - t_heal, 2)
        statuses = []
        for i in range(20):
            mid = f"c{args.seed}-heal-{i}"
            t0 = time.monotonic()
            st, parsed, _ = http(stack.ports["producer"], "POST", "/produce",
                                 {"id": mid, "payload": mid}, timeout=10)
            hist.add({"kind": "heal", "t0": t0, "t1": time.monotonic(), "status": st,
                      "ids": [mid], "deadline": PUBLISH_TIMEOUT_MS / 1000, "body": parsed})
            statuses.append(st)
        heal = {"ready_s": ready, "statuses": statuses}
        # drain
        log("draining")
        expected = writer.expected()
        deadline = time.monotonic() + 150
        last, stable_since = None, time.monotonic()
        while time.monotonic() < deadline:
            out = read_outputs(stack)
            rc, depth = stack.tool("depth", "--queue", QUEUE, timeout=20)
            behind = stack.metric("producer", "producer_tail_bytes_behind")
            key = (len(out), depth.strip())
            if key != last:
                last, stable_since = key, time.monotonic()
            if (depth.strip() == "0" and behind == 0 and
                    time.monotonic() - stable_since > 4):
                break
            time.sleep(0.5)
        else:
            log("drain: the output did not settle within 150 s")
            for name in sorted(stack.procs):  # what the services said last (a full disk?)
                try:
                    with open(os.path.join(stack.tmp, f"{name}.log"), "rb") as f:
                        tail = f.read()[-600:].decode("utf-8", "replace").splitlines()[-2:]
                except OSError:
                    tail = []
                for line in tail:
                    log(f"  {name}: {line[:300]}")
        time.sleep(1)
        code, dlq_body, _ = http(stack.ports["producer"], "GET", "/dlq?limit=1000", timeout=30)
        dlq = (dlq_body or {}).get("messages", []) if code == 200 else []
        if code != 200:
            log(f"GET /dlq answered {code}")
        exits = {}
        for name in ["producer"] + stack.consumers:
            exits[name] = stack.term(name)
        deaths = list(stack.deaths)
        deaths += [f"{n} exited {rc} on SIGTERM (want 0)" for n, rc in exits.items() if rc != 0]
        output = read_outputs(stack)
        kwargs = dict(dlq=dlq, hostile=hostile.confirmed + [m for m in hostile.unknown
                                                            if any(d.get("message_id") == m
                                                                   for d in dlq)],
                      deaths=deaths, sanitizer=sanitizer_reports(stack), heal=heal,
                      excused=camp.excused, consumers=len(stack.consumers))
        results = checker.check(hist.snapshot(), output, expected, **kwargs)
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            with open(os.path.join(args.dump, "history.json"), "w") as f:
                json.dump({"seed": args.seed, "history": hist.snapshot(), "kwargs": kwargs}, f)
            with open(os.path.join(args.dump, "output.bin"), "wb") as f:
                f.write(output)
            with open(os.path.join(args.dump, "expected_tail.bin"), "wb") as f:
                f.write(expected)
        recs = hist.snapshot()
        n201 = sum(1 for r in recs if r["status"] in (200, 201))
        log(f"{len(camp.applied)} faults applied, {len(recs)} requests "
            f"({n201} 201/200, {sum(len(r['ids']) for r in recs if r['status'] in (200, 201))} "
            f"messages), {expected.count(NL)} lines tailed ({len(expected)} bytes), "
            f"{len(hostile.confirmed)} hostile confirmed, DLQ {len(dlq)}")
        statuses_all = {}
        for r in recs:
            statuses_all[r["status"]] = statuses_all.get(r["status"], 0) + 1
        log(f"statuses {dict(sorted(statuses_all.items()))}")
        checker.report(results)
        bad = checker.first_violation(results)
        ok = bad is None
        if not ok:
            print(f"FAILED seed {args.seed}: first violated invariant: {bad[0]}: {bad[2]} "
                  f"ids={bad[3][:10]}")
            print("schedule (as applied):")
            for ev in camp.applied:
                print("  " + json.dumps({k: v for k, v in ev.items() if k != "pick"}))
            print(f"replay: tests/chaos/run.py --seed {args.seed} --duration {args.duration}")
        if args.table:
            held = sum(1 for r in results if r[1] is True)
            total = sum(1 for r in results if r[1] is not None)
            new = not os.path.exists(args.table)
            with open(args.table, "a") as f:
                if new:
                    f.write("seed\tduration_s\tfaults\trequests\t201s\tlines_tailed\t"
                            "invariants_held\tresult\n")
                f.write(f"{args.seed}\t{args.duration:.0f}\t{len(camp.applied)}\t{len(recs)}\t"
                        f"{n201}\t{expected.count(NL)}\t{held}/{total}\t"
                        f"{'PASS' if ok else 'FAIL ' + bad[0].split()[0]}\n")
    except Exception as e:  # noqa: BLE001 - any failure of the campaign itself is reported
        log(f"campaign error: {e!r}")
        import traceback
        traceback.print_exc()
        ok = False
    finally:
        stop.set()
        stack.close()
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"scratch folder kept: {tmp}")
    log(f"{'PASS' if ok else 'FAIL'} seed {args.seed} ({time.monotonic() - t_begin:.0f} s)")
    n_pass = sum(1 for r in results if r[1] is True)
    n_fail = sum(1 for r in results if r[1] is False) + (0 if ok or results else 1)
    print(f"chaos seed {args.seed}: {n_pass} passed, {n_fail} failed", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
