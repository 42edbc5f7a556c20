#!/usr/bin/python3
"""Wire tests of relayq (issue 11, items 9 and 10) against real RabbitMQ brokers.

Scenarios (all by default; each starts what it needs and stops it by PID):
  frame-max          a broker with frame_max = 4096 (scripts/broker.sh BROKER_EXTRA_CONF):
                     bodies larger than a frame through the producer (201, in OUTPUT_FILE)
                     and through the consumer's reply path (?wait=true: 200 with the reply),
                     over AMQP and AMQPS; the producer's connection is never dropped.
  producer-freeze    the broker is frozen (SIGSTOP) and a burst of large /produce requests
                     fills the producer's socket: every request is answered 503/504 within
                     PUBLISH_TIMEOUT_MS + slack, and SIGTERM (broker still frozen) exits 0
                     within its grace. Over AMQP and AMQPS.
  producer-alarm     the same with the broker's memory alarm (it stops reading publishers;
                     the producer, told by connection.blocked, mostly holds back instead).
  consumer-freeze    a consumer replying (large replies) to a backlog when the broker freezes:
                     SIGTERM exits 0 within its grace.
  consumer-alarm     a consumer replying to a backlog under a memory alarm: SIGTERM exits 0
                     within its grace; after the alarm every message is written exactly once.
The send-deadline scenarios (but producer-alarm) check that the test means something: the
service's socket to the broker holds over 1 MiB that the broker did not read (/proc/net/tcp
tx_queue).

Usage: test_wire_review.py --build-dir build [SCENARIO ...] [--transport plain|tls|both]
Prints one PASS/FAIL line per check and `N passed, M failed`; exit 1 on any failure. Every
wait is bounded. Standard library only (/usr/bin/python3); openssl makes a throw-away CA.
"""
import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_reliability as rel  # noqa: E402 - the shared helpers (Stack, http_call, Checks)

PUBLISH_TIMEOUT_MS = 3000
CONNECT_TIMEOUT_MS = 3000
SLACK_S = 2.5  # answer after its deadline: send abort, close, one bounded reconnect attempt
PRODUCER_STOP_LIMIT_S = 12.0  # stop grace (PUBLISH_TIMEOUT_MS) + a send deadline + slack
CONSUMER_STOP_LIMIT_S = 16.0  # a send deadline (10 s for the consumer's copies) + slack
FULL_BYTES = 1 << 20  # "the broker stopped reading": this much waits in the socket


def log(msg):
    print(f"[wire {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_pki(d):
    """A throw-away CA and a server certificate for localhost/127.0.0.1 (EC P-256)."""
    os.makedirs(d, exist_ok=True)

    def run(*a):
        subprocess.run(a, check=True, capture_output=True, timeout=60)

    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "2", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-subj",
        "/CN=relayq wire test CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr", "-subj", "/CN=localhost")
    with open(f"{d}/server.ext", "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.pem", "-CAkey",
        f"{d}/ca.key", "-CAcreateserial", "-days", "2", "-out", f"{d}/server.pem", "-extfile",
        f"{d}/server.ext")
    for n in ("ca.pem", "server.pem", "server.key"):
        os.chmod(f"{d}/{n}", 0o644)  # read by the broker (user rabbitmq)


class WireStack(rel.Stack):
    """A broker with extra rabbitmq.conf lines (a TLS listener, frame_max...), and services
    that talk to it over plain AMQP or AMQPS."""

    def __init__(self, build, tmp, name, extra_conf_fn):
        super().__init__(build, tmp, f"wire_{name}_{os.getpid()}")
        self.broker_dir = os.path.join(tmp, f"broker-{name}")
        self.tls_port = rel.free_port()
        self.pki = os.path.join(tmp, "pki")
        self.extra_conf = extra_conf_fn(self)
        self.env.update(PUBLISH_TIMEOUT_MS=str(PUBLISH_TIMEOUT_MS),
                        RABBITMQ_CONNECT_TIMEOUT_MS=str(CONNECT_TIMEOUT_MS),
                        # heartbeats must not be what rescues a hung send
                        RABBITMQ_HEARTBEAT="60")

    def broker(self, cmd):
        old = os.environ.get("BROKER_EXTRA_CONF")
        os.environ["BROKER_EXTRA_CONF"] = self.extra_conf
        try:
            super().broker(cmd)
        finally:
            if old is None:
                os.environ.pop("BROKER_EXTRA_CONF", None)
            else:
                os.environ["BROKER_EXTRA_CONF"] = old

    def transport_env(self, tls):
        if not tls:
            return {}
        return dict(RABBITMQ_HOST="localhost", RABBITMQ_PORT=str(self.tls_port), RABBITMQ_TLS="1",
                    RABBITMQ_TLS_CA=os.path.join(self.pki, "ca.pem"))

    def use_queue(self, queue):
        self.queue = queue
        self.env["REQUEST_QUEUE"] = queue
        self.output = os.path.join(self.tmp, f"{queue}.out")


def tls_conf(st, more=""):
    d = st.broker_dir + "-tls"
    os.makedirs(d, exist_ok=True)
    for n in ("ca.pem", "server.pem", "server.key"):
        shutil.copy(os.path.join(st.pki, n), d)
    subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", d], capture_output=True, timeout=30)
    return (f"listeners.ssl.1 = 127.0.0.1:{st.tls_port}\n"
            f"ssl_options.cacertfile = {d}/ca.pem\n"
            f"ssl_options.certfile = {d}/server.pem\n"
            f"ssl_options.keyfile = {d}/server.key\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n" + more)


def send_queue(pid, port):
    """Bytes the process `pid` has written to 127.0.0.1:port that the peer has not read
    (tx_queue of its TCP sockets to that port, /proc/net/tcp and tcp6)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return 0
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            col = row.split()
            if len(col) < 10 or col[9] not in inodes:
                continue
            if int(col[2].rsplit(":", 1)[1], 16) == port:
                total += int(col[4].split(":")[0], 16)
    return total


def max_send_queue(st, name, port, seconds):
    """The largest send queue of service `name` towards `port` seen within `seconds`
    (returns early once it passes FULL_BYTES)."""
    best = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        p = st.procs.get(name)
        if p is None or p.poll() is not None:
            break
        best = max(best, send_queue(p.pid, port))
        if best >= FULL_BYTES:
            break
        time.sleep(0.05)
    return best


def stuck_send_queue(st, name, port, seconds, still=1.5):
    """Waits (up to `seconds`) until service `name` has at least FULL_BYTES waiting in its
    socket to `port` and that figure has not moved for `still` seconds: the broker reads
    nothing and the service is blocked writing. Returns the figure (0 when never full)."""
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        p = st.procs.get(name)
        if p is None or p.poll() is not None:
            break
        q = send_queue(p.pid, port)
        if q != last:
            last, since = q, time.monotonic()
        elif q >= FULL_BYTES and time.monotonic() - since >= still:
            return q
        time.sleep(0.05)
    return 0


def note_201(stored, status, body):
    """Appends a 201's message_id (from its JSON body) to `stored`, unless stored is None."""
    if status == 201 and stored is not None:
        stored.append(json.loads(body).get("message_id"))


def burst(url, n, size, tag, timeout=25.0, late=4, stored=None):
    """n threads each POST one /produce of `size` payload bytes at once, then `late` small
    ones 1 s later (they meet a publisher already stuck). Returns [(status, latency, kind,
    sent at)]; the message_id of each 201 is appended to `stored` when given."""
    out = []
    lock = threading.Lock()

    def one(i, big):
        body = {"payload": ("x" * size) if big else f"{tag}-late-{i}"}
        t_sent = time.monotonic()
        st, _, data, lat, _ = rel.http_call(url + "/produce", "POST", body, timeout=timeout)
        with lock:
            out.append((st, lat, "big" if big else "late", t_sent - t_start))
            note_201(stored, st, data)

    ts = [threading.Thread(target=one, args=(i, True), daemon=True) for i in range(n)]
    t_start = time.monotonic()
    for t in ts:
        t.start()
    time.sleep(1.0)
    late_ts = [threading.Thread(target=one, args=(i, False), daemon=True) for i in range(late)]
    for t in late_ts:
        t.start()
    for t in ts + late_ts:
        t.join(timeout + 5)
    return out


def check_burst(c, what, res, n):
    by = collections.Counter(r[0] for r in res)
    worst = max((r[1] for r in res), default=0.0)
    log(f"{what}: {len(res)} answers ({dict(by)}), slowest {worst:.2f} s; "
        + ", ".join(f"{k}@{t:.1f}:{s}/{lat:.1f}s" for s, lat, k, t in sorted(res, key=lambda r: r[3])))
    c.check(f"{what}: every request answered ({n})", len(res) == n and by.get(0, 0) == 0,
            f"{dict(by)} (0 = no answer before the client's timeout)")
    c.check(f"{what}: every answer within PUBLISH_TIMEOUT_MS + {SLACK_S} s (slowest "
            f"{worst:.2f} s)", worst <= PUBLISH_TIMEOUT_MS / 1000 + SLACK_S)
    c.check(f"{what}: answers are 503/504 (nothing can be stored)",
            set(by) <= {503, 504}, f"{dict(by)}")


def warm_up(c, st, what, n=3, stored=None):
    """n small /produce requests, each must be 201 (their message ids go to `stored`)."""
    codes = []
    for i in range(n):
        code, _, data, _, _ = rel.http_call(st.url("producer") + "/produce", "POST",
                                            {"payload": f"warm-{i}"}, timeout=10)
        codes.append(code)
        note_201(stored, code, data)
    return c.check(f"{what}: {n} x 201 before the fault", codes.count(201) == n, f"{codes}")


def producer_fault(c, st, tls, fault):
    name = "AMQPS" if tls else "AMQP"
    what = f"producer {fault} over {name}"
    port = st.tls_port if tls else st.amqp
    st.use_queue(f"wire_p{fault}_{'tls' if tls else 'tcp'}_{os.getpid()}")
    st.start("producer", **st.transport_env(tls))
    stored = []  # message ids answered 201 (warm-up, fault, recovery): each must be queued
    warm_up(c, st, what, stored=stored)
    if fault == "freeze":
        st.freeze(True)
    else:
        st.ctl("set_vm_memory_high_watermark", "0")
    try:
        n, late = 16, 4
        box = {}
        watcher = threading.Thread(
            target=lambda: box.update(q=max_send_queue(st, "producer", port, 6.0)), daemon=True)
        watcher.start()
        res = burst(st.url("producer"), n, 900_000, f"p{fault}", late=late, stored=stored)
        watcher.join(10)
        if fault == "freeze":
            c.check(f"{what}: the broker stopped reading (>= 1 MiB waiting in the producer's "
                    f"socket: {box.get('q', 0)} bytes)", box.get("q", 0) >= FULL_BYTES)
        else:
            # connection.blocked comes first: the publisher holds the messages back
            log(f"{what}: {box.get('q', 0)} bytes waited in the producer's socket")
        check_burst(c, what, res, n + late)
        rc, secs = st.term("producer", timeout=PRODUCER_STOP_LIMIT_S + 8)
        c.check(f"{what}: SIGTERM exits 0 within {PRODUCER_STOP_LIMIT_S:.0f} s with the broker "
                f"still stuck ({secs:.1f} s)", rc == 0 and secs <= PRODUCER_STOP_LIMIT_S,
                f"status {rc}")
    finally:
        if fault == "freeze":
            st.freeze(False)
        else:
            st.ctl("set_vm_memory_high_watermark", "0.4")
    st.start("producer", **st.transport_env(tls))
    warm_up(c, st, f"{what}, after recovery", 1, stored=stored)
    if fault == "freeze":
        # SIGTERM while the publisher thread is blocked in the send itself
        st.freeze(True)
        try:
            t = threading.Thread(target=burst, args=(st.url("producer"), 16, 900_000, "pterm"),
                                 kwargs={"late": 0, "stored": stored}, daemon=True)
            t.start()
            q = max_send_queue(st, "producer", port, 6.0)
            rc, secs = st.term("producer", timeout=PRODUCER_STOP_LIMIT_S + 8)
            c.check(f"{what}: SIGTERM in the middle of the stuck send ({q} bytes waiting) exits 0 "
                    f"within {PRODUCER_STOP_LIMIT_S:.0f} s ({secs:.1f} s)",
                    q >= FULL_BYTES and rc == 0 and secs <= PRODUCER_STOP_LIMIT_S, f"status {rc}")
            t.join(30)
        finally:
            st.freeze(False)
    st.term("producer")
    check_stored(c, st, what, stored)


def check_stored(c, st, what, stored):
    """Every message answered 201 is in the queue (the 503/504 ones may be there too: the
    broker may still read them once it runs again)."""
    out = st.tool("get", "--queue", st.queue, "--format", "props")
    ids = {line.split("\t")[1] for line in out.splitlines() if line.count("\t") >= 2}
    lost = [i for i in stored if i not in ids]
    c.check(f"{what}: every 201 is in the queue ({len(stored)} answered 201, "
            f"{len(ids)} messages in the queue)", not lost, f"not in the queue: {lost}")


class Deferred:
    """Collects checks to be passed on to a Checks object later (or dropped)."""

    def __init__(self):
        self.items = []

    def check(self, name, ok, detail=""):
        self.items.append((name, ok, detail))
        return ok

    def replay(self, c):
        for name, ok, detail in self.items:
            c.check(name, ok, detail)


def consumer_fault(c, st, tls, fault, attempts=3):
    """Runs the scenario until its precondition (the consumer really stuck in a send) holds,
    at most `attempts` times: how far the consumer got before the fault depends on the
    machine's load. Only the checks of the run whose precondition held (or of the last run)
    count."""
    for attempt in range(1, attempts + 1):
        d = Deferred()
        held = consumer_fault_once(d, st, tls, fault, attempt)
        if held or attempt == attempts:
            d.replay(c)
            return
        log(f"consumer {fault}: the consumer was not stuck in a send this time "
            f"(attempt {attempt}): trying again")


def consumer_fault_once(c, st, tls, fault, attempt):
    name = "AMQPS" if tls else "AMQP"
    what = f"consumer {fault} over {name}"
    port = st.tls_port if tls else st.amqp
    st.use_queue(f"wire_c{fault}_{'tls' if tls else 'tcp'}_{os.getpid()}_{attempt}")
    count, size = 120, 100_000  # 12 MB of replies: far more than the socket buffers hold
    body = '{"payload": "' + "y" * size + '", "processing_time": 0.05}'
    st.tool("publish", "--queue", st.queue, "--declare", "--count", str(count), "--body", body,
            "--reply-to", f"{st.queue}.sink", "--id-prefix", f"c{fault}")
    try:
        # the backlog is prefetched (PREFETCH_COUNT 100) and, one job at a time
        # (HANDLER_CONCURRENCY 1: the consumer otherwise finishes them all at once and sends
        # every reply in one burst before the fault), the replies go out one processing_time
        # apart: the fault comes when most of them are still to be sent
        st.start("consumer", HANDLER_CONCURRENCY="1", **st.transport_env(tls))
        rel.wait_until(lambda: len(rel.read_output(st.output)[0]) >= 3, 20, 0.01)
        if fault == "freeze":
            st.freeze(True)
        else:
            st.ctl("set_vm_memory_high_watermark", "0")
        q = stuck_send_queue(st, "consumer", port, 20.0)
        held = c.check(f"{what}: the consumer is stuck writing replies the broker does not "
                       f"read (>= 1 MiB waiting in its socket, not moving: {q} bytes)",
                       q >= FULL_BYTES)
        rc, secs = st.term("consumer", timeout=CONSUMER_STOP_LIMIT_S + 8)
        c.check(f"{what}: SIGTERM exits 0 within {CONSUMER_STOP_LIMIT_S:.0f} s with the broker "
                f"still stuck ({secs:.1f} s)", rc == 0 and secs <= CONSUMER_STOP_LIMIT_S,
                f"status {rc}")
    finally:
        if fault == "freeze":
            st.freeze(False)
        else:
            st.ctl("set_vm_memory_high_watermark", "0.4")
    st.start("consumer", **st.transport_env(tls))
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines, _ = rel.read_output(st.output)
        if len(lines) >= count:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # a duplicate would show up now
    lines, nl = rel.read_output(st.output)
    c.check(f"{what}: after recovery every message written exactly once ({len(lines)} of "
            f"{count})", len(lines) == count and nl)
    st.term("consumer")
    return held


def frame_max(c, st, tls):
    name = "AMQPS" if tls else "AMQP"
    st.use_queue(f"wire_fm_{'tls' if tls else 'tcp'}_{os.getpid()}")
    env = st.transport_env(tls)
    st.start("producer", **env)
    st.start("consumer", **env)
    pu = st.url("producer")
    m0 = rel.metrics(pu)
    fms = st.ctl("list_connections", "frame_max").split()
    c.check(f"frame_max 4096 over {name}: the broker negotiated frame_max 4096 with the services "
            f"(the test means something)", fms.count("4096") >= 2, f"{fms}")
    payloads = [f"fm-{name}-{n}-" + "z" * n for n in (4000, 4090, 5000, 20000, 300000)]
    codes = [rel.http_call(pu + "/produce", "POST", {"payload": p}, timeout=15)[0]
             for p in payloads]
    c.check(f"frame_max 4096 over {name}: bodies of 4 KB..300 KB through the producer: all 201",
            codes == [201] * len(payloads), f"{codes}")
    wait_payload = f"fm-wait-{name}-" + "w" * 9000
    s, _, body, _, _ = rel.http_call(pu + "/produce?wait=true", "POST", {"payload": wait_payload},
                                     timeout=20)
    c.check(f"frame_max 4096 over {name}: ?wait=true with a 9 KB payload: 200 with the "
            f"consumer's 9 KB reply (reply path)",
            s == 200 and (b"Consumer processed: " + wait_payload.encode()) in body,
            f"{s} {body[:160]!r}")
    # the consumer's reply path alone: a 9 KB request with reply_to, published with the tool
    replies = f"{st.queue}.replies"
    direct = f"fm-direct-{name}-" + "d" * 9000
    reply = b""
    try:
        st.tool("declare", "--queue", replies, "--transient")
        st.tool("publish", "--queue", st.queue, "--body", '{"payload": "%s"}' % direct,
                "--reply-to", replies, "--id-prefix", f"fm-direct-{name}")
        reply = st.tool("get", "--queue", replies, "--count", "1", "--wait", "15").encode()
    except RuntimeError as e:
        reply = str(e).encode()
    c.check(f"frame_max 4096 over {name}: the consumer's 9 KB reply to a reply_to queue arrives",
            (b"Consumer processed: " + direct.encode()) in reply, f"{reply[:200]!r}")
    want = set(p.encode() for p in payloads) | {wait_payload.encode(), direct.encode()}
    lines = rel.wait_lines(st.output, want, 20)
    c.check(f"frame_max 4096 over {name}: every body is in OUTPUT_FILE",
            want.issubset(lines), f"{len(want - set(lines))} missing")
    m1 = rel.metrics(pu)
    key = "producer_broker_connections_total"
    c.check(f"frame_max 4096 over {name}: the producer's connection was never dropped",
            m0.get(key) is not None and m1.get(key) == m0.get(key), f"{key}: {m0.get(key)} -> "
            f"{m1.get(key)}")
    for n in ("producer", "consumer"):
        rc, secs = st.term(n)
        c.check(f"frame_max 4096 over {name}: {n} exits 0 on SIGTERM ({secs:.1f} s)", rc == 0,
                f"status {rc}")


SCENARIOS = ["frame-max", "producer-freeze", "producer-alarm", "consumer-freeze",
             "consumer-alarm"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    ap.add_argument("--build-dir", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--transport", choices=("plain", "tls", "both"), default="both")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    scen = args.scenarios or SCENARIOS
    if not set(scen) <= set(SCENARIOS):
        ap.error(f"unknown scenario in {scen}; choose from {', '.join(SCENARIOS)}")
    tlss = {"plain": [False], "tls": [True], "both": [False, True]}[args.transport]
    build = os.path.abspath(args.build_dir)
    tmp = tempfile.mkdtemp(prefix="relayq-wire.")
    os.chmod(tmp, 0o755)  # the broker (user rabbitmq) must reach its folders inside
    c = rel.Checks()
    t0 = time.monotonic()
    stacks = []
    try:
        pki = os.path.join(tmp, "pki")
        make_pki(pki)
        if "frame-max" in scen:
            st = WireStack(build, tmp, "fm", lambda s: tls_conf(s, "frame_max = 4096\n"))
            stacks.append(st)
            st.broker("start")
            log(f"broker with frame_max = 4096: AMQP {st.amqp}, AMQPS {st.tls_port}")
            for tls in tlss:
                try:
                    frame_max(c, st, tls)
                except Exception as e:  # noqa: BLE001 - reported as a failed check
                    c.check(f"frame-max ({'tls' if tls else 'plain'}) ran to the end", False,
                            f"{type(e).__name__}: {e}")
            st.close()
        faults = [s for s in scen if s != "frame-max"]
        if faults:
            # A small broker receive buffer: what it has not read piles up on our side.
            st = WireStack(build, tmp, "sd", lambda s: tls_conf(s, "tcp_listen_options.recbuf"
                                                                   " = 65536\n"))
            stacks.append(st)
            st.broker("start")
            log(f"broker: AMQP {st.amqp}, AMQPS {st.tls_port}")
            for s in faults:
                who, fault = s.split("-")
                for tls in tlss:
                    log(f"--- {s} over {'AMQPS' if tls else 'AMQP'}")
                    try:
                        (producer_fault if who == "producer" else consumer_fault)(c, st, tls,
                                                                                   fault)
                    except Exception as e:  # noqa: BLE001 - reported as a failed check
                        c.check(f"{s} ({'tls' if tls else 'plain'}) ran to the end", False,
                                f"{type(e).__name__}: {e}")
                    for name in list(st.procs):
                        st.term(name, 10)
    except Exception as e:  # noqa: BLE001 - any error is a failed check, reported
        c.check("wire tests ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        for st in stacks:
            st.close()
    return rel.finish(c, tmp, t0, args.keep)


if __name__ == "__main__":
    sys.exit(main())
