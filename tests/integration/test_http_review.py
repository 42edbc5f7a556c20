#!/usr/bin/python3
"""HTTP and DLQ review cases of issue 11 (items 12 to 15), against a real broker.

Starts its own RabbitMQ (scripts/broker.sh, 127.0.0.1, free ports, with the management
plugin: its HTTP API publishes messages with arbitrary headers and dead-letters them with
basic.reject) and its own producer (HTTP_THREADS=1, so every connection shares one HTTP
thread). No consumer runs: the request queue only fills.

  item 14  a missing or empty body is 400 whatever the Content-Type; 415 only for a body
           of the wrong type; POST /dlq/retry without a body moves everything
  item 15  a body over MAX_BODY_BYTES sent by http.client (Content-Length, and chunked) gets
           a 413 the client can read; a client that never stops sending is cut off within
           the drain bound (bytes, and time for a slow one)
  item 13  a message with 40 user headers (x-firstname, x-last-seen among them) dead-lettered
           by the broker and replayed by POST /dlq/retry keeps every user header and loses
           x-death, x-first-death-*, x-last-death-*
  item 12  while GET /dlq (deep offset) and POST /dlq/retry work through many big messages,
           /health/live on the same producer answers fast; GET /dlq is bounded in bytes
           (the bound is in the response) and pages with limit/offset/next_offset

Standard library only. Prints one PASS/FAIL line per check and `N passed, M failed`; exit 1
on failure. Usage: test_http_review.py [--build-dir build] [--only 12,12b,12s,13,14,15]
[--shutdown-rounds N] [--keep] (12b: only the time budget checks of item 12, 12s: only its
SIGTERM-during-POST /dlq/retry rounds; both also run with 12)
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import test_system as ts  # noqa: E402  (Checker)
from rq_ports import free_port  # noqa: E402  (below the ephemeral range)

HOST = "127.0.0.1"
MAX_BODY = 1048576  # the producer's MAX_BODY_BYTES here (the default)
DRAIN_BYTES = 64 << 20  # RQ_HTTP_DRAIN_MAX_BYTES (common/http_server.h)
DRAIN_S = 10.0  # RQ_HTTP_DRAIN_MAX_MS / 1000


def request(port, method, path, body=None, headers=None, timeout=60.0, chunked=False):
    """(status, headers, body bytes, seconds) of one request on a new connection; status is
    the exception's name when the client saw no answer."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    t0 = time.monotonic()
    try:
        c.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data, time.monotonic() - t0
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__, {}, b"", time.monotonic() - t0
    finally:
        c.close()


def jbody(data):
    try:
        return json.loads(data)
    except ValueError:
        return None


class Env:
    def __init__(self, build, keep):
        self.tmp = tempfile.mkdtemp(prefix="relayq-http-review-")
        os.chmod(self.tmp, 0o755)  # the broker runs as the rabbitmq user
        self.keep = keep
        self.build = build
        self.amqp, self.mgmt, self.http = free_port(), free_port(), free_port()
        self.queue = "relayq_review"
        self.dlq = self.queue + ".dlq"
        self.broker_dir = os.path.join(self.tmp, "broker")
        self.producer = None

    def broker(self, cmd):
        args = ["bash", os.path.join(ROOT, "scripts/broker.sh"), cmd, self.broker_dir]
        if cmd == "start":
            args += [str(self.amqp), str(self.mgmt)]
        with open(os.path.join(self.tmp, "broker.out"), "a") as out:
            rc = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, timeout=180).returncode
        if rc != 0:
            raise RuntimeError("broker %s failed (see %s/broker.out)" % (cmd, self.tmp))

    def start_producer(self, **env):
        e = dict(os.environ)
        e.update(RABBITMQ_HOST=HOST, RABBITMQ_PORT=str(self.amqp), PRODUCER_BIND=HOST,
                 PRODUCER_PORT=str(self.http), REQUEST_QUEUE=self.queue, LOG_LEVEL="info",
                 HTTP_THREADS="1", MAX_BODY_BYTES=str(MAX_BODY))
        e.update({k: str(v) for k, v in env.items()})
        self.logf = open(os.path.join(self.tmp, "producer.log"), "ab")
        self.producer = subprocess.Popen([os.path.join(self.build, "bin", "producer")], env=e,
                                         stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if request(self.http, "GET", "/health/ready", timeout=2)[0] == 200:
                return
            if self.producer.poll() is not None:
                raise RuntimeError("producer exited with %s" % self.producer.returncode)
            time.sleep(0.1)
        raise RuntimeError("producer not ready within 30 s")

    def stop_producer(self):
        p, self.producer = self.producer, None
        if p is None or p.poll() is not None:
            return p.returncode if p else None
        p.send_signal(15)
        try:
            return p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None

    def mgmt_call(self, method, path, body=None, timeout=60):
        c = http.client.HTTPConnection(HOST, self.mgmt, timeout=timeout)
        auth = base64.b64encode(b"guest:guest").decode()
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Authorization": "Basic " + auth,
                               "Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            if r.status >= 300:
                raise RuntimeError("management %s %s: %s %r" % (method, path, r.status, data[:300]))
            return json.loads(data) if data else None
        finally:
            c.close()

    def mgmt_ready(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.mgmt_call("GET", "/api/overview", timeout=3)
                return
            except (OSError, RuntimeError):
                time.sleep(0.5)
        raise RuntimeError("management API not up within 60 s")

    def publish(self, queue, payload, props):
        r = self.mgmt_call("POST", "/api/exchanges/%2F/amq.default/publish",
                           {"properties": props, "routing_key": queue, "payload": payload,
                            "payload_encoding": "string"})
        if not r.get("routed"):
            raise RuntimeError("management publish to %s: not routed" % queue)

    def get(self, queue, count, ackmode):
        return self.mgmt_call("POST", "/api/queues/%%2F/%s/get" % urllib.parse.quote(queue),
                              {"count": count, "ackmode": ackmode, "encoding": "auto",
                               "truncate": 50000})

    def tool(self, *args):
        cmd = [os.path.join(self.build, "bin", "rq_amqp_tool"), args[0], "--host", HOST,
               "--port", str(self.amqp), "--quiet"] + list(args[1:])
        r = subprocess.run(cmd, capture_output=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError("rq_amqp_tool %s: %s" % (" ".join(args), r.stderr.decode()[-300:]))
        return r.stdout.decode()

    def depth(self, queue):
        return int(self.tool("depth", "--queue", queue).split()[0])

    def close(self):
        self.stop_producer()
        try:
            self.broker("stop")
        except Exception as e:  # noqa: BLE001 - reported, the cleanup goes on
            print("INFO  broker stop: %s" % e)
        if self.keep:
            print("INFO  kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---- item 14 ----------------------------------------------------------------------------

def item14(env, ck):
    p = env.http
    ok = json.dumps({"payload": {"a": 1}}).encode()
    cases = [
        ("POST /produce, no body, no Content-Type", "/produce", None, {}, 400),
        ("POST /produce, Content-Length 0, no Content-Type", "/produce", b"", {}, 400),
        ("POST /produce, empty body, text/plain", "/produce", b"", {"Content-Type": "text/plain"},
         400),
        ("POST /produce, empty body, application/json", "/produce", b"",
         {"Content-Type": "application/json"}, 400),
        ("POST /batch-produce, no body, no Content-Type", "/batch-produce", None, {}, 400),
        ("POST /batch-produce, empty body, text/plain", "/batch-produce", b"",
         {"Content-Type": "text/plain"}, 400),
        # (another concrete type is a raw body, published as it is: issue 16)
        ("POST /produce, JSON body, a form type", "/produce", ok,
         {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("POST /produce, JSON body, no Content-Type", "/produce", ok, {}, 415),
        ("POST /batch-produce, JSON body, text/plain", "/batch-produce",
         json.dumps({"messages": [{"payload": 1}]}).encode(), {"Content-Type": "text/plain"}, 415),
        ("POST /dlq/retry, body {} as text/plain", "/dlq/retry", b"{}",
         {"Content-Type": "text/plain"}, 415),
        ("POST /dlq/retry, no body, text/plain (moves all)", "/dlq/retry", b"",
         {"Content-Type": "text/plain"}, 200),
        ("POST /dlq/retry, no body, no Content-Type (moves all)", "/dlq/retry", None, {}, 200),
    ]
    for name, path, body, hdrs, want in cases:
        st, _, data, _ = request(p, "POST", path, body=body, headers=hdrs, timeout=15)
        j = jbody(data)
        good = st == want and isinstance(j, dict) and (want == 200 or "error" in j)
        ck.check("item 14: %s -> %d" % (name, want), good, "%s %r" % (st, data[:160]))
    # chunked with no data at all: still no body
    raw = (b"POST /produce HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n")
    out = raw_exchange(p, raw)
    ck.check("item 14: POST /produce, chunked with no data, text/plain -> 400",
             out.startswith(b"HTTP/1.1 400"), out[:120])


def raw_exchange(port, data, timeout=10):
    s = socket.create_connection((HOST, port), timeout=timeout)
    out = b""
    try:
        s.sendall(data)
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except OSError:
        pass
    finally:
        s.close()
    return out


# ---- item 15 ----------------------------------------------------------------------------

def item15(env, ck):
    p = env.http
    big = b"x" * (8 << 20)
    st, _, data, dt = request(p, "POST", "/produce", body=big,
                              headers={"Content-Type": "application/json"})
    j = jbody(data)
    ck.check("item 15: http.client, 8 MiB with Content-Length: the client reads the 413 JSON",
             st == 413 and isinstance(j, dict) and "exceeds" in j.get("error", ""),
             "%s %r (%.2f s)" % (st, data[:120], dt))
    st, _, data, dt = request(p, "POST", "/produce", body=iter([big[i:i + 65536] for i in
                                                                range(0, len(big), 65536)]),
                              headers={"Content-Type": "application/json"}, chunked=True)
    ck.check("item 15: http.client, 8 MiB chunked: the client reads the 413 JSON",
             st == 413 and isinstance(jbody(data), dict), "%s %r (%.2f s)" % (st, data[:120], dt))
    st, _, data, dt = request(p, "POST", "/produce", body=big,
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    ck.check("item 15: http.client, 8 MiB as a form: the client reads the 415 JSON",
             st == 415 and isinstance(jbody(data), dict), "%s %r (%.2f s)" % (st, data[:120], dt))
    st, _, data, dt = request(p, "PUT", "/produce", body=big,
                              headers={"Content-Type": "application/json"})
    ck.check("item 15: http.client, PUT 8 MiB: the client reads the 405",
             st == 405, "%s %r (%.2f s)" % (st, data[:120], dt))
    # the connection stays usable after a drained 413 (the body was read to its end)
    c = http.client.HTTPConnection(HOST, p, timeout=30)
    try:
        c.request("POST", "/produce", body=b"y" * (2 * MAX_BODY),
                  headers={"Content-Type": "application/json"})
        r1 = c.getresponse()
        r1.read()
        c.request("GET", "/health/live")
        r2 = c.getresponse()
        r2.read()
        res = (r1.status, r2.status)
    except (OSError, http.client.HTTPException) as e:
        res = type(e).__name__
    finally:
        c.close()
    ck.check("item 15: after a 413 the same http.client object serves the next request",
             res == (413, 200), res)
    # lingering close: the answer comes at once, and what the client sends after it is read
    s = socket.create_connection((HOST, p), timeout=10)
    t0 = time.monotonic()
    answer, rest_ok = b"", None
    try:
        s.sendall(b"POST /produce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 8388608\r\n\r\n{")
        s.settimeout(3)
        answer = s.recv(4096)
        dt = time.monotonic() - t0
        try:
            s.settimeout(10)
            s.sendall(b"x" * (8388608 - 1))
            rest_ok = True
        except OSError as e:
            rest_ok = type(e).__name__
    except OSError as e:
        dt = time.monotonic() - t0
        answer = type(e).__name__.encode()
    finally:
        s.close()
    ck.check("item 15: a client that waits after its first body byte gets the 413 at once",
             answer.startswith(b"HTTP/1.1 413") and dt < 2.5, "%r after %.2f s" % (answer[:40], dt))
    ck.check("item 15: ... and can still send the rest of its body (lingering close, no reset)",
             rest_ok is True, rest_ok)
    # a client that never stops sending (fast): cut off at the byte bound
    sent, dt, answer = endless(p, 1 << 20, 0.0, 60)
    ck.info("fast endless chunked sender: cut off after %d bytes, %.2f s" % (sent, dt))
    ck.check("item 15: a fast endless (chunked) sender is cut off within the byte bound",
             MAX_BODY < sent <= MAX_BODY + DRAIN_BYTES + (16 << 20) and dt < DRAIN_S + 10,
             "%d bytes in %.1f s" % (sent, dt))
    sent, dt, answer = endless(p, 1 << 20, 0.0, 60, chunked=False)
    ck.info("Content-Length 1 TiB sender: cut off after %d bytes, %.2f s" % (sent, dt))
    ck.check("item 15: a sender declaring 1 TiB is answered 413 and cut off at once",
             sent <= DRAIN_BYTES and dt < DRAIN_S, "%d bytes in %.1f s" % (sent, dt))
    ck.check("item 15: ... and the server said 413 before it closed",
             answer.startswith(b"HTTP/1.1 413") or answer == b"", answer[:60])
    # a slow one (~1 MiB/s): cut off at the time bound
    sent, dt, _ = endless(p, 65536, 0.06, 60)
    ck.info("slow endless chunked sender: cut off after %d bytes, %.2f s" % (sent, dt))
    ck.check("item 15: a slow endless (chunked) sender is cut off within the time bound",
             dt < DRAIN_S + 6 and sent < DRAIN_BYTES, "%d bytes in %.1f s" % (sent, dt))
    st = request(p, "GET", "/health/live", timeout=5)[0]
    ck.check("item 15: the producer still answers afterwards", st == 200, st)


def endless(port, chunk, pause, limit_s, chunked=True):
    """Sends a POST body that never ends (chunked; or declaring 1 TiB) as fast as it can (or
    with pauses) until the server cuts it off. Returns (bytes sent, seconds, what the server
    sent)."""
    s = socket.create_connection((HOST, port), timeout=limit_s)
    s.sendall(b"POST /produce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
              (b"Transfer-Encoding: chunked\r\n\r\n" if chunked
               else b"Content-Length: 1099511627776\r\n\r\n"))
    buf = b"z" * chunk
    if chunked:
        buf = b"%x\r\n" % chunk + buf + b"\r\n"
    sent, t0 = 0, time.monotonic()
    answer = b""
    try:
        while time.monotonic() - t0 < limit_s:
            sent += s.send(buf)
            if pause:
                time.sleep(pause)
    except OSError:
        pass
    dt = time.monotonic() - t0
    try:
        s.settimeout(2)
        answer = s.recv(4096)
    except OSError:
        pass
    s.close()
    return sent, dt, answer


# ---- item 13 ----------------------------------------------------------------------------

def item13(env, ck):
    p = env.http
    headers = {"h%02d" % i: "v%02d" % i for i in range(37)}
    headers.update({"x-firstname": "Ada", "x-last-seen": "2026-12-01", "x-lastly": "yes"})
    assert len(headers) == 40
    env.publish(env.queue, json.dumps({"id": "hdr40", "payload": 1}),
                {"headers": headers, "message_id": "hdr40", "delivery_mode": 2,
                 "content_type": "application/json"})
    got = env.get(env.queue, 1, "reject_requeue_false")  # the broker dead-letters it
    ck.check("item 13: the 40-header message was taken from the request queue", len(got) == 1,
             got)
    deadline = time.monotonic() + 10
    while env.depth(env.dlq) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    peek = env.get(env.dlq, 1, "ack_requeue_true")
    dh = peek[0]["properties"].get("headers", {}) if peek else {}
    ck.check("item 13: the broker added x-death and x-first-death-* in the DLQ",
             "x-death" in dh and any(k.startswith("x-first-death-") for k in dh), sorted(dh))
    # The management API's get puts the message back after it answered: until the queue has
    # it ready again, POST /dlq/retry finds nothing to move (CI: "moved":0,"remaining":1).
    deadline = time.monotonic() + 10
    while env.depth(env.dlq) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    st, _, data, _ = request(p, "POST", "/dlq/retry", timeout=60)
    ck.check("item 13: POST /dlq/retry moved it", st == 200 and (jbody(data) or {}).get("moved")
             == 1, "%s %r" % (st, data[:200]))
    back = env.get(env.queue, 1, "ack_requeue_false")
    h = back[0]["properties"].get("headers", {}) if back else {}
    missing = sorted(k for k in headers if h.get(k) != headers[k])
    ck.check("item 13: every one of the 40 user headers came back", not missing,
             "missing or changed: %s" % missing)
    ck.check("item 13: x-firstname, x-last-seen and x-lastly kept",
             h.get("x-firstname") == "Ada" and h.get("x-last-seen") == "2026-12-01"
             and h.get("x-lastly") == "yes", h)
    stripped = sorted(k for k in h if k == "x-death" or k.startswith("x-first-death-")
                      or k.startswith("x-last-death-"))
    ck.check("item 13: x-death, x-first-death-*, x-last-death-* stripped", not stripped,
             stripped)
    ck.check("item 13: marked x-relayq-replayed", h.get("x-relayq-replayed") is True, h)


# ---- item 12 ----------------------------------------------------------------------------

def probe_live(port, stop, out):
    """Times /health/live requests back to back until stop is set."""
    while not stop.is_set():
        st, _, _, dt = request(port, "GET", "/health/live", timeout=60)
        out.append((st, dt))
        time.sleep(0.02)


def while_probing(port, fn):
    """Runs fn() while probing /health/live; returns (fn's result, its seconds, the slowest
    probe in seconds, probes, all probes answered 200)."""
    stop, probes = threading.Event(), []
    t = threading.Thread(target=probe_live, args=(port, stop, probes), daemon=True)
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    res = fn()
    dt = time.monotonic() - t0
    stop.set()
    t.join(70)
    worst = max((d for _, d in probes), default=0.0)
    return res, dt, worst, len(probes), all(s == 200 for s, _ in probes)


def item12(env, ck, n_msgs, size):
    p = env.http
    body = os.path.join(env.tmp, "big.bin")
    with open(body, "wb") as f:  # one message per line
        for _ in range(n_msgs):
            f.write(b"B" * (size - 1) + b"\n")
    env.tool("purge", "--queue", env.dlq)
    env.tool("publish", "--queue", env.dlq, "--raw-file", body)
    ck.check("item 12: %d messages of %d KiB in the DLQ" % (n_msgs, size >> 10),
             env.depth(env.dlq) == n_msgs)

    res, dt, worst, n, all_ok = while_probing(
        p, lambda: request(p, "GET", "/dlq?limit=1000&offset=%d" % (n_msgs - 5), timeout=120))
    st, _, data, _ = res
    j = jbody(data) or {}
    ck.info("GET /dlq?limit=1000&offset=%d: %s in %.2f s; /health/live: %d probes, slowest "
            "%.3f s" % (n_msgs - 5, st, dt, n, worst))
    ck.check("item 12: deep GET /dlq answers 200 with the last 5 messages",
             st == 200 and len(j.get("messages", [])) == 5, "%s %r" % (st, data[:200]))
    ck.check("item 12: /health/live stays fast during a slow GET /dlq (slowest < 0.5 s)",
             all_ok and n >= 2 and worst < 0.5, "slowest %.3f s of %d, GET /dlq %.2f s"
             % (worst, n, dt))

    st, _, data, _ = request(p, "GET", "/dlq?limit=1000", timeout=120)
    j = jbody(data) or {}
    mb = j.get("max_bytes")
    ck.check("item 12: GET /dlq?limit=1000 says its byte bound and keeps to it",
             st == 200 and isinstance(mb, int) and len(data) <= mb,
             "%s, %d bytes, max_bytes %r" % (st, len(data), mb))
    ck.check("item 12: ... and says where the next page starts",
             j.get("truncated") is True and isinstance(j.get("next_offset"), int)
             and j["next_offset"] == len(j.get("messages", [])) > 0,
             {k: v for k, v in j.items() if k != "messages"})
    seen, offset, pages = 0, 0, 0
    while offset is not None and pages < 500:
        st, _, data, _ = request(p, "GET", "/dlq?limit=1000&offset=%d" % offset, timeout=120)
        j = jbody(data) or {}
        if st != 200:
            break
        seen += len(j.get("messages", []))
        offset, pages = j.get("next_offset"), pages + 1
    ck.check("item 12: paging with next_offset visits every message once",
             st == 200 and seen == n_msgs, "%s: %d of %d in %d pages" % (st, seen, n_msgs, pages))
    for q, want in [("limit=-1", 400), ("offset=x", 400), ("limit=1001", 400)]:
        st = request(p, "GET", "/dlq?" + q, timeout=30)[0]
        ck.check("item 12: GET /dlq?%s -> %d" % (q, want), st == want, st)

    res, dt, worst, n, all_ok = while_probing(p, lambda: request(p, "POST", "/dlq/retry",
                                                                 timeout=300))
    st, _, data, _ = res
    ck.info("POST /dlq/retry: %s %r in %.2f s; /health/live: %d probes, slowest %.3f s"
            % (st, data[:80], dt, n, worst))
    ck.check("item 12: POST /dlq/retry moved them all", st == 200 and
             (jbody(data) or {}).get("moved") == n_msgs, "%s %r" % (st, data[:200]))
    ck.check("item 12: /health/live stays fast during a slow POST /dlq/retry (slowest < 0.5 s)",
             all_ok and n >= 2 and worst < 0.5, "slowest %.3f s of %d, retry %.2f s"
             % (worst, n, dt))
    env.tool("purge", "--queue", env.queue)


def item12_shutdown(env, ck, n_msgs, size, rounds):
    """SIGTERM while POST /dlq/retry works, `rounds` times (a new producer each): the job is
    cancelled, its client answered before the producer stops its HTTP server (the answer of a
    resumed connection must not be cut off by MHD_stop_daemon), and the producer exits 0
    promptly (MHD must not stop with the connection suspended)."""
    p = env.http
    body = os.path.join(env.tmp, "big.bin")
    if not os.path.exists(body):
        with open(body, "wb") as f:  # one message per line
            for _ in range(n_msgs):
                f.write(b"B" * (size - 1) + b"\n")
    bad_exit, unanswered = [], []
    for r in range(rounds):
        if r > 0:
            env.start_producer()
        env.tool("purge", "--queue", env.dlq)
        env.tool("publish", "--queue", env.dlq, "--raw-file", body)
        res = []
        t = threading.Thread(
            target=lambda: res.append(request(p, "POST", "/dlq/retry", timeout=60)), daemon=True)
        t.start()
        time.sleep(0.2 + 0.05 * (r % 4))
        t0 = time.monotonic()
        rc = env.stop_producer()
        dt = time.monotonic() - t0
        t.join(30)
        st = res[0][0] if res else None
        ck.info("round %d: SIGTERM during POST /dlq/retry: exit %s after %.2f s; the client got "
                "%s %r" % (r + 1, rc, dt, st, res[0][2][:100] if res else b""))
        if rc != 0 or dt >= 10:
            bad_exit.append("round %d: exit %s after %.1f s" % (r + 1, rc, dt))
        if st not in (200, 503):
            unanswered.append("round %d: %s" % (r + 1, st))
        env.tool("purge", "--queue", env.dlq)
        env.tool("purge", "--queue", env.queue)
    ck.check("item 12: SIGTERM during POST /dlq/retry: exit 0 within 10 s (%d rounds)" % rounds,
             not bad_exit, "; ".join(bad_exit))
    ck.check("item 12: ... and the waiting client got an answer (200, or 503 stopping) in "
             "every round", not unanswered, "; ".join(unanswered))


BUDGET_MS = 2000  # PUBLISH_TIMEOUT_MS of the producer of item12_budget: each DLQ job's budget
BUDGET_SLACK_S = 1.5
MAX_OFFSET = 100000  # RQ_DLQ_MAX_OFFSET (producer/api/dlq.h)


def item12_budget(env, ck, n_msgs):
    """Review of item 12: one expensive DLQ job must not hold the DLQ worker past its budget
    (PUBLISH_TIMEOUT_MS), a concurrent GET /dlq?limit=1 is not starved, offset is capped, and
    a job whose client went away is given up. The DLQ holds n_msgs tiny messages: reading
    to a deep offset costs one basic.get round trip per message."""
    p = env.http
    budget = BUDGET_MS / 1000.0
    env.tool("purge", "--queue", env.dlq)
    env.tool("purge", "--queue", env.queue)
    env.tool("publish", "--queue", env.dlq, "--count", str(n_msgs), "--body", "x")
    ck.check("item 12 budget: %d tiny messages in the DLQ" % n_msgs,
             env.depth(env.dlq) == n_msgs)

    deep, small = [], []
    off = n_msgs - 1000
    t_deep = threading.Thread(target=lambda: deep.append(request(
        p, "GET", "/dlq?limit=1000&offset=%d" % off, timeout=120)), daemon=True)
    t_small = threading.Thread(target=lambda: small.append(request(
        p, "GET", "/dlq?limit=1", timeout=120)), daemon=True)
    t_deep.start()
    time.sleep(0.2)  # the deep one runs first, the small one waits behind it
    t_small.start()
    t_deep.join(130)
    t_small.join(130)
    st, _, data, dt = deep[0] if deep else (None, {}, b"", 999.0)
    j = jbody(data) or {}
    ck.info("GET /dlq?limit=1000&offset=%d of %d: %s in %.2f s: %r" % (
        off, n_msgs, st, dt, {k: v for k, v in j.items() if k != "messages"} or data[:200]))
    partial = (st == 200 and j.get("timed_out") is True and j.get("truncated") is True
               and isinstance(j.get("next_offset"), int) and j["next_offset"] > off
               and j["next_offset"] == off + len(j.get("messages", [])))
    complete = st == 200 and len(j.get("messages", [])) == 1000 and j.get("timed_out") is False
    unreachable = st == 503 and b"smaller offset" in data
    ck.check("item 12 budget: a deep GET /dlq answers within the budget + %.1f s (a timed-out "
             "page with next_offset, or 503 'smaller offset')" % BUDGET_SLACK_S,
             dt < budget + BUDGET_SLACK_S and (partial or complete or unreachable),
             "%s in %.2f s" % (st, dt))
    st, _, data, dt = small[0] if small else (None, {}, b"", 999.0)
    ck.info("concurrent GET /dlq?limit=1: %s in %.2f s" % (st, dt))
    ck.check("item 12 budget: a concurrent GET /dlq?limit=1 is not starved past the budget",
             st == 200 and len((jbody(data) or {}).get("messages", [])) == 1
             and dt < budget + BUDGET_SLACK_S, "%s in %.2f s" % (st, dt))

    kinds = []
    for o in (2000, 2500, 3000):  # around what the budget reaches: either kind of answer
        st, _, data, dt = request(p, "GET", "/dlq?limit=1000&offset=%d" % o, timeout=120)
        j = jbody(data) or {}
        n = len(j.get("messages", []))
        kind = ("full" if st == 200 and n == 1000 and j.get("timed_out") is False else
                "timed-out page" if st == 200 and j.get("timed_out") is True and n >= 1
                and j.get("next_offset") == o + n else
                "unreachable" if st == 503 and b"smaller offset" in data else "bad")
        kinds.append("offset %d: %s %s (%d messages) in %.2f s" % (o, st, kind, n, dt))
        ck.check("item 12 budget: GET /dlq?limit=1000&offset=%d within the budget + %.1f s: a "
                 "full page, a timed-out one (>= 1 message, next_offset) or 503" % (
                     o, BUDGET_SLACK_S), kind != "bad" and dt < budget + BUDGET_SLACK_S,
                 kinds[-1])
    ck.info("; ".join(kinds))

    st, _, data, dt = request(p, "GET", "/dlq?offset=%d" % (MAX_OFFSET + 1), timeout=120)
    ck.check("item 12 budget: GET /dlq?offset=%d -> 400" % (MAX_OFFSET + 1), st == 400,
             "%s in %.2f s" % (st, dt))
    st, _, data, dt = request(p, "GET", "/dlq?offset=%d" % MAX_OFFSET, timeout=120)
    j = jbody(data) or {}
    ck.check("item 12 budget: GET /dlq?offset=%d (past the end) -> empty last page at once"
             % MAX_OFFSET, st == 200 and j.get("messages") == [] and j.get("next_offset") is None
             and dt < 1.0, "%s in %.2f s" % (st, dt))

    # A client that gives up: its job must not hold the worker for the whole budget.
    c = http.client.HTTPConnection(HOST, p, timeout=10)
    c.request("GET", "/dlq?limit=1000&offset=%d" % off)
    time.sleep(0.3)
    c.close()
    time.sleep(0.05)
    st, _, data, dt = request(p, "GET", "/dlq?limit=1", timeout=120)
    ck.info("GET /dlq?limit=1 after a deep GET /dlq whose client left: %s in %.2f s" % (st, dt))
    ck.check("item 12 budget: the job of a client that went away is given up (next GET "
             "/dlq?limit=1 < 1 s, budget %.1f s)" % budget, st == 200 and dt < 1.0,
             "%s in %.2f s" % (st, dt))

    st, _, data, dt = request(p, "POST", "/dlq/retry", timeout=300)
    j = jbody(data) or {}
    time.sleep(1)
    left, moved_q = env.depth(env.dlq), env.depth(env.queue)
    ck.info("POST /dlq/retry of %d: %s in %.2f s: %r; depth after: DLQ %d, request queue %d"
            % (n_msgs, st, dt, data[:200], left, moved_q))
    ck.check("item 12 budget: POST /dlq/retry answers within the budget + %.1f s with moved "
             "so far and remaining" % BUDGET_SLACK_S,
             st == 200 and dt < budget + BUDGET_SLACK_S and isinstance(j.get("moved"), int)
             and j.get("moved", 0) > 0 and j["moved"] == moved_q
             and (j.get("partial") is True) == (j.get("remaining", 0) > 0),
             "%s in %.2f s, %d in the request queue" % (st, dt, moved_q))
    env.tool("purge", "--queue", env.dlq)
    env.tool("purge", "--queue", env.queue)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--only", default="12,13,14,15")
    ap.add_argument("--dlq-messages", type=int, default=400)
    ap.add_argument("--dlq-size", type=int, default=256 << 10)
    ap.add_argument("--budget-messages", type=int, default=40000)
    ap.add_argument("--shutdown-rounds", type=int, default=5)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    build = os.path.abspath(os.path.join(ROOT, args.build_dir))
    only = set(args.only.split(","))
    ck = ts.Checker()
    env = Env(build, args.keep)
    try:
        env.broker("start")
        env.mgmt_ready()
        env.start_producer()
        if "14" in only:
            item14(env, ck)
        if "15" in only:
            item15(env, ck)
        if "13" in only:
            env.tool("purge", "--queue", env.queue)
            item13(env, ck)
        if "12" in only:
            item12(env, ck, args.dlq_messages, args.dlq_size)
        rc = env.stop_producer()
        ck.check("the producer exits 0 on SIGTERM", rc == 0, rc)
        if "12" in only or "12s" in only:
            env.start_producer()
            item12_shutdown(env, ck, args.dlq_messages, args.dlq_size, args.shutdown_rounds)
        if "12" in only or "12b" in only:
            env.start_producer(PUBLISH_TIMEOUT_MS=BUDGET_MS)
            item12_budget(env, ck, args.budget_messages)
            rc = env.stop_producer()
            ck.check("the producer exits 0 on SIGTERM after the budget checks", rc == 0, rc)
    except Exception as e:  # noqa: BLE001 - one FAIL line, then the cleanup
        ck.check("the scenario ran to its end", False, "%s: %s" % (type(e).__name__, e))
    finally:
        env.close()
    return ck.summary()


if __name__ == "__main__":
    sys.exit(main())
