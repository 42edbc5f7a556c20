#!/usr/bin/python3
"""Security tests of the producer (issue 6): API keys, scopes, SIGHUP reload, rate limits,
limits against hostile clients, slowloris, and that a rejected request publishes nothing.

Starts its own producers (on free ports of 127.0.0.1, against the broker given with
--amqp-port, each on a queue of its own that no consumer reads):
  A  API keys from a file (three keys: all scopes, produce only, hashed dlq+messages) and
     small limits (MAX_JSON_DEPTH, MAX_BODY_BYTES, MAX_BATCH_SIZE, MAX_HEADER_BYTES,
     HTTP_MAX_CONNECTIONS_PER_IP, HTTP_CONNECTION_TIMEOUT_S, REPLY_TIMEOUT_MS)
  B  two API keys and RATE_LIMIT_RPS (a bucket per key)
  C  no keys and RATE_LIMIT_RPS (a bucket per client address: 127.0.0.1 vs 127.0.0.2)
The queue depth (rq_amqp_tool) must grow by exactly the requests answered 201/504, and the
logs and /metrics must never contain a secret. Every service must exit 0 on SIGTERM.

Standard library only. Prints one line per check and `N passed, N failed`; exit 1 on failure.
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import test_system as ts  # noqa: E402  (Checker, metric_sum)
from rq_ports import free_port  # noqa: E402  (below the ephemeral range)

HOST = "127.0.0.1"
OTHER = "127.0.0.2"  # a second client address on loopback


class Resp:
    def __init__(self, status, headers, body, dt):
        self.status, self.headers, self.body, self.dt = status, headers, body, dt

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        return "%s %r" % (self.status, self.body[:200])


def request(port, method, path, body=None, headers=None, source=HOST, timeout=15.0):
    """One request on a new connection (optionally from another loopback address)."""
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    c = http.client.HTTPConnection(HOST, port, timeout=timeout, source_address=(source, 0))
    t0 = time.monotonic()
    try:
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data,
                    time.monotonic() - t0)
    finally:
        c.close()


def raw(port, data, timeout=5.0, source=HOST):
    """Sends raw bytes, returns what comes back until the server closes (or the timeout)."""
    s = socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0))
    out = b""
    try:
        s.sendall(data)
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (socket.timeout, ConnectionResetError):
        pass
    finally:
        s.close()
    return out


def still_open(s):
    """True if the server has not closed the connected socket s (nothing to read, no EOF)."""
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


def bearer(secret):
    return {"Authorization": "Bearer " + secret}


class Producer:
    """A producer process with its own queue, log file and settings."""

    def __init__(self, args, name, env):
        self.args, self.name = args, name
        self.port = free_port()
        self.queue = "relayq_sec_%s_%s" % (name, secrets.token_hex(3))
        self.log = os.path.join(args.work, "producer-%s.log" % name)
        e = dict(os.environ)
        e.update({"RABBITMQ_HOST": HOST, "RABBITMQ_PORT": str(args.amqp_port),
                  "PRODUCER_BIND": HOST, "PRODUCER_PORT": str(self.port),
                  "REQUEST_QUEUE": self.queue, "LOG_LEVEL": "info"})
        e.update(env)
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen([os.path.join(args.bin, "producer")], env=e,
                                     stdout=self.logf, stderr=subprocess.STDOUT)

    def ready(self, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if request(self.port, "GET", "/health/ready", timeout=2).status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def depth(self):
        cmd = [os.path.join(self.args.bin, "rq_amqp_tool"), "depth", "--port",
               str(self.args.amqp_port), "--queue", self.queue]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        m = re.search(r"-?\d+", p.stdout)
        if p.returncode != 0 or not m:
            raise RuntimeError("rq_amqp_tool depth: rc %d %r" % (p.returncode, p.stderr[:200]))
        return int(m.group(0))

    def metrics(self):
        return request(self.port, "GET", "/metrics").body.decode("utf-8", "replace")

    def log_text(self):
        if not self.logf.closed:
            self.logf.flush()
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """SIGTERM; returns the exit status (None when it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.logf.close()
                return None
        self.logf.close()
        return self.proc.returncode


def metric(text, name, **labels):
    """The value of one sample (labels matched exactly), or 0 when absent."""
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^%s(\{([^}]*)\})?\s+(\S+)" % re.escape(name), line)
        if m and ",".join(sorted((m.group(2) or "").split(","))) == want:
            return float(m.group(3))
    return 0.0


class SecurityTest:
    def __init__(self, args):
        self.args = args
        self.ck = ts.Checker()
        self.procs = []
        self.secrets = []
        self.published = 0  # requests on A that must each have added one message

    def secret(self):
        s = secrets.token_urlsafe(24)
        self.secrets.append(s)
        return s

    def start(self, name, env):
        p = Producer(self.args, name, env)
        self.procs.append(p)
        ok = p.ready()
        self.ck.check("producer %s ready on %s:%d" % (name, HOST, p.port), ok,
                      p.log_text()[-500:] if not ok else "")
        return p if ok else None

    # ---- A: keys, scopes, reload, limits ----

    def keys_and_limits(self):
        self.s_full, self.s_prod, self.s_ops = self.secret(), self.secret(), self.secret()
        self.keyfile = os.path.join(self.args.work, "keys")
        ops_hash = hashlib.sha256(self.s_ops.encode()).hexdigest()
        with open(self.keyfile, "w") as f:
            f.write("# relayq test keys\n\nfull:%s\nprod:%s:produce\n"
                    "ops:sha256:%s:dlq,messages\n" % (self.s_full, self.s_prod, ops_hash))
        os.chmod(self.keyfile, 0o600)
        a = self.start("A", {
            "API_KEYS_FILE": self.keyfile, "MAX_JSON_DEPTH": "16", "MAX_BODY_BYTES": "262144",
            "MAX_BATCH_SIZE": "5", "MAX_HEADER_BYTES": "8192",
            "HTTP_MAX_CONNECTIONS_PER_IP": "24", "HTTP_CONNECTION_TIMEOUT_S": "3",
            "REPLY_TIMEOUT_MS": "5000", "HTTP_THREADS": "2"})
        if a is None:
            return
        self.a = a
        self.ck.check("start-up log names the key ids and scopes, not the secrets",
                      "keys: full[*], prod[produce], ops[dlq,messages]" in a.log_text(),
                      a.log_text()[-300:])
        try:
            before = a.depth()
        except Exception as e:  # noqa: BLE001
            self.ck.check("read A's queue depth", False, e)
            return
        self.auth_table(a)
        self.reload(a)
        self.limits(a)
        self.connections(a)
        self.slowloris(a)
        self.suspended_not_timed_out(a)
        time.sleep(0.5)
        after = a.depth()
        self.ck.check("A's queue grew by exactly the %d accepted requests (every rejected one "
                      "published nothing)" % self.published, after - before == self.published,
                      "depth %d -> %d" % (before, after))
        m = a.metrics()
        self.ck.check("producer_auth_failures_total counts missing, invalid and scope",
                      all(metric(m, "producer_auth_failures_total", reason=r) > 0
                          for r in ("missing", "invalid", "scope")),
                      [l for l in m.splitlines() if "auth_failures" in l])
        self.ck.check("producer_requests_total is labelled by key id",
                      metric(m, "producer_requests_total", key="full") > 0 and
                      metric(m, "producer_requests_total", key="prod") > 0,
                      [l for l in m.splitlines() if l.startswith("producer_requests_total")])

    def auth_table(self, a):
        P = a.port
        body = {"payload": "auth"}
        cases = [
            # (name, method, path, headers, body, status, publishes)
            ("GET /health without a key", "GET", "/health", {}, None, 200, 0),
            ("GET /health/live without a key", "GET", "/health/live", {}, None, 200, 0),
            ("GET /health/ready without a key", "GET", "/health/ready", {}, None, 200, 0),
            ("GET /metrics without a key", "GET", "/metrics", {}, None, 200, 0),
            ("POST /produce without a key", "POST", "/produce", {}, body, 401, 0),
            ("POST /produce with an unknown key", "POST", "/produce",
             bearer("wrong-" + secrets.token_urlsafe(20)), body, 401, 0),
            ("POST /produce with Basic auth", "POST", "/produce",
             {"Authorization": "Basic ZnVsbDpmdWxs"}, body, 401, 0),
            ("POST /produce with the secret plus a byte", "POST", "/produce",
             bearer(self.s_full + "x"), body, 401, 0),
            ("POST /produce with the secret minus a byte", "POST", "/produce",
             bearer(self.s_full[:-1]), body, 401, 0),
            ("POST /produce with the hash of a hashed key as token", "POST", "/produce",
             bearer(hashlib.sha256(self.s_ops.encode()).hexdigest()), body, 401, 0),
            ("POST /produce with an empty Bearer", "POST", "/produce",
             {"Authorization": "Bearer "}, body, 401, 0),
            ("POST /produce, full key", "POST", "/produce", bearer(self.s_full), body, 201, 1),
            ("POST /produce, lower-case scheme", "POST", "/produce",
             {"Authorization": "bearer " + self.s_full}, body, 201, 1),
            ("POST /produce, produce-only key", "POST", "/produce", bearer(self.s_prod), body,
             201, 1),
            ("POST /batch-produce, produce-only key", "POST", "/batch-produce",
             bearer(self.s_prod), {"messages": [body]}, 403, 0),
            ("POST /batch-produce, full key", "POST", "/batch-produce", bearer(self.s_full),
             {"messages": [body, body]}, 201, 2),
            ("GET /messages/x, produce-only key", "GET", "/messages/x",
             bearer(self.s_prod), None, 403, 0),
            ("GET /messages/x, hashed ops key", "GET", "/messages/x", bearer(self.s_ops),
             None, 404, 0),
            ("POST /produce, hashed ops key", "POST", "/produce", bearer(self.s_ops),
             body, 403, 0),
            ("POST /dlq/retry, produce-only key", "POST", "/dlq/retry",
             bearer(self.s_prod), None, 403, 0),
            ("GET /dlq without a key", "GET", "/dlq", {}, None, 401, 0),
            ("GET /dlq, hashed ops key", "GET", "/dlq?limit=1", bearer(self.s_ops), None, 200, 0),
            ("GET /nope without a key (no endpoint probing)", "GET", "/nope", {}, None,
             401, 0),
            ("GET /nope with a key", "GET", "/nope", bearer(self.s_full), None, 404, 0),
        ]
        for name, method, path, hdrs, b, status, pub in cases:
            try:
                r = request(P, method, path, b, hdrs)
            except Exception as e:  # noqa: BLE001
                self.ck.check(name, False, e)
                continue
            ok = r.status == status
            if status >= 400:
                ok = ok and isinstance(r.json(), dict) and "error" in r.json()
            if status == 401:
                www = r.headers.get("www-authenticate", "")
                ok = ok and www.startswith('Bearer realm="relayq"')
            self.ck.check("%s -> %d" % (name, status), ok, r)
            if r.status in (200, 201) and method == "POST":
                self.published += pub
        r = request(P, "POST", "/produce", None, {"Authorization": "Bearer nope-nope-nope-nope"})
        self.ck.check("401 for a bad token says error=\"invalid_token\"",
                      'error="invalid_token"' in r.headers.get("www-authenticate", ""), r.headers)
        # An unauthenticated upload is refused before its body is read.
        head = ("POST /produce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 200000\r\n\r\n").encode()
        t0 = time.monotonic()
        out = raw(P, head + b"{", timeout=5)
        self.ck.check("an unauthenticated upload gets 401 without the server waiting for its "
                      "body", out.startswith(b"HTTP/1.1 401") and time.monotonic() - t0 < 2.5,
                      out[:80])
        log = a.log_text()
        self.ck.check("the log names the key of a 403 (key prod lacks the scope)",
                      "key prod lacks the scope" in log, log[-400:])

    def reload(self, a):
        new_full = self.secret()
        with open(self.keyfile + ".new", "w") as f:
            f.write("full:%s\nprod:%s:produce,batch\n" % (new_full, self.s_prod))
        os.chmod(self.keyfile + ".new", 0o600)
        os.rename(self.keyfile + ".new", self.keyfile)
        a.proc.send_signal(signal.SIGHUP)
        deadline, swapped = time.monotonic() + 5, False
        while time.monotonic() < deadline and not swapped:
            swapped = request(a.port, "GET", "/messages/x", None, bearer(new_full)).status == 404
            time.sleep(0.1)
        self.ck.check("SIGHUP: the rotated secret of key full works within 5 s", swapped)
        r = request(a.port, "GET", "/messages/x", None, bearer(self.s_full))
        self.ck.check("SIGHUP: the old secret of key full -> 401", r.status == 401, r)
        r = request(a.port, "POST", "/batch-produce", {"messages": [{"payload": 1}]},
                    bearer(self.s_prod))
        self.ck.check("SIGHUP: key prod's new batch scope applies (201)", r.status == 201, r)
        self.published += r.status == 201
        r = request(a.port, "GET", "/messages/x", None, bearer(self.s_ops))
        self.ck.check("SIGHUP: the removed key ops -> 401", r.status == 401, r)
        self.ck.check("SIGHUP: reload logged with key ids",
                      "API keys reloaded: 2 keys: full[*], prod[produce,batch]" in a.log_text(),
                      a.log_text()[-300:])
        # A broken file: the current keys stay, the error is logged.
        with open(self.keyfile, "w") as f:
            f.write("full:%s\nbroken line\n" % new_full)
        a.proc.send_signal(signal.SIGHUP)
        deadline, logged = time.monotonic() + 5, False
        while time.monotonic() < deadline and not logged:
            logged = "API keys not reloaded" in a.log_text()
            time.sleep(0.1)
        self.ck.check("SIGHUP with a broken key file: error logged naming the line",
                      logged and ":2: expected key-id:secret" in a.log_text(), a.log_text()[-300:])
        r = request(a.port, "GET", "/messages/x", None, bearer(new_full))
        self.ck.check("SIGHUP with a broken key file: the current keys stay (full still 404)",
                      r.status == 404, r)
        self.s_full = new_full

    def limits(self, a):
        P, auth = a.port, bearer(self.s_full)

        def nested(levels):
            return b'{"payload":' + b"[" * levels + b"]" * levels + b"}"

        r = request(P, "POST", "/produce", nested(15), dict(auth, **{"Content-Type": "application/json"}))
        self.ck.check("MAX_JSON_DEPTH=16: 16 levels (object + 15 arrays) -> 201", r.status == 201, r)
        self.published += r.status == 201
        r = request(P, "POST", "/produce", nested(16), dict(auth, **{"Content-Type": "application/json"}))
        self.ck.check("MAX_JSON_DEPTH=16: 17 levels -> 400 naming the limit",
                      r.status == 400 and b"deeper than 16" in r.body, r)
        r = request(P, "POST", "/produce", nested(100000), dict(auth, **{"Content-Type": "application/json"}))
        self.ck.check("100000 nested arrays (200 KB) -> 400 in under 1 s",
                      r.status == 400 and r.dt < 1.0, "%r in %.2f s" % (r, r.dt))
        r = request(P, "POST", "/batch-produce",
                    {"messages": [{"payload": {"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}}]}, auth)
        self.ck.check("a batch item nested too deep -> 400", r.status == 400, r)
        r = request(P, "POST", "/produce", {"payload": "x" * 300000}, auth)
        self.ck.check("MAX_BODY_BYTES=262144: a 300 KB body -> 413", r.status == 413, r)
        r = request(P, "POST", "/batch-produce", {"messages": [{"payload": i} for i in range(6)]},
                    auth)
        self.ck.check("MAX_BATCH_SIZE=5: 6 messages -> 413", r.status == 413, r)
        out = raw(P, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n")
        self.ck.check("MAX_HEADER_BYTES=8192: a 9 KB header -> 431", out.startswith(b"HTTP/1.1 431"),
                      out[:60])
        out = raw(P, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.ck.check("MAX_HEADER_BYTES=8192: a 9 KB URL -> 414", out.startswith(b"HTTP/1.1 414"),
                      out[:60])
        out = raw(P, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 5000 + b"\r\n\r\n")
        self.ck.check("a 5 KB header is still fine -> 200", out.startswith(b"HTTP/1.1 200"), out[:60])
        m = a.metrics()
        for lim in ("json_depth", "body_size", "batch_length", "header_size"):
            self.ck.check("producer_limit_rejections_total{limit=\"%s\"} counted" % lim,
                          metric(m, "producer_limit_rejections_total", limit=lim) >= 1,
                          [l for l in m.splitlines() if "limit_rejections" in l])

    def connections(self, a):
        P = a.port
        held = []
        try:
            # The held connections are idle, so HTTP_CONNECTION_TIMEOUT_S=3 closes them: an
            # attempt counts only if all 24 were still open after the 25th was answered (CI, a
            # loaded machine: the 25th got a 200 once, its 24 held connections timed out).
            tries = []
            for _ in range(3):
                for s in held:
                    s.close()
                held = [socket.create_connection((HOST, P), timeout=5) for _ in range(24)]
                time.sleep(0.3)
                extra = raw(P, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2)
                still = sum(1 for s in held if still_open(s))
                tries.append((extra[:12], still))
                if still == 24:
                    break
            self.ck.check("HTTP_MAX_CONNECTIONS_PER_IP=24: the 25th connection from 127.0.0.1 is "
                          "closed without an answer", extra == b"" and tries[-1][1] == 24, tries)
            other = raw(P, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3,
                        source=OTHER)
            self.ck.check("meanwhile a client at 127.0.0.2 is served",
                          other.startswith(b"HTTP/1.1 200"), other[:60])
        finally:
            for s in held:
                s.close()
        time.sleep(0.5)
        out = raw(P, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
        self.ck.check("once they close, 127.0.0.1 is served again", out.startswith(b"HTTP/1.1 200"),
                      out[:60])
        self.ck.check("producer_limit_rejections_total{limit=\"connections\"} counted",
                      metric(a.metrics(), "producer_limit_rejections_total", limit="connections") >= 1)

    def slowloris(self, a):
        """Stalled clients are cut off after HTTP_CONNECTION_TIMEOUT_S=3 while others are served."""
        P = a.port
        before = metric(a.metrics(), "producer_limit_rejections_total", limit="timeout")
        stalled = []
        auth = "Authorization: Bearer %s\r\n" % self.s_full
        partial = [
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ",  # headers never end
            ("POST /produce HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
             "Content-Length: 100\r\n\r\n{\"payload\":" % auth).encode(),  # half a body
            b"",  # connects, sends nothing
        ]
        for i in range(18):
            s = socket.create_connection((HOST, P), timeout=10)
            if partial[i % 3]:
                s.sendall(partial[i % 3])
            stalled.append(s)
        t0 = time.monotonic()
        slow = []
        for i in range(20):
            r = request(P, "GET", "/health/live") if i % 2 else \
                request(P, "GET", "/messages/x", None, bearer(self.s_full))
            if r.status not in (200, 404) or r.dt > 1.0:
                slow.append("%r in %.2f s" % (r, r.dt))
        self.ck.check("18 stalled clients do not delay 20 other requests (each under 1 s)",
                      not slow, slow[:3])
        closed_at = []
        for s in stalled:
            s.settimeout(max(0.1, 8 - (time.monotonic() - t0)))
            try:
                data = s.recv(1024)
                closed_at.append(time.monotonic() - t0 if data == b"" or b"HTTP/1.1" in data
                                 else None)
            except (socket.timeout, ConnectionResetError) as e:
                closed_at.append(None if isinstance(e, socket.timeout) else time.monotonic() - t0)
            finally:
                s.close()
        cut = [t for t in closed_at if t is not None]
        self.ck.check("all 18 stalled connections are closed by the server within 3 s + 3 s",
                      len(cut) == 18 and max(cut) < 6.5,
                      "%d closed, latest at %s s" % (len(cut), max(cut) if cut else None))
        self.ck.check("none of them before the 3 s timeout (>= 2.5 s)", cut and min(cut) >= 2.5,
                      min(cut) if cut else None)
        after = metric(a.metrics(), "producer_limit_rejections_total", limit="timeout")
        self.ck.check("producer_limit_rejections_total{limit=\"timeout\"} counts the stalled "
                      "requests (%d)" % (after - before), after - before >= 12, after - before)

    def suspended_not_timed_out(self, a):
        """A request waiting for the broker (suspended in MHD) outlives the idle timeout."""
        t0 = time.monotonic()
        try:
            r = request(a.port, "POST", "/produce?wait=true", {"payload": "waiting"},
                        bearer(self.s_full), timeout=15)
        except Exception as e:  # noqa: BLE001
            self.ck.check("a wait=true request survives HTTP_CONNECTION_TIMEOUT_S", False, e)
            return
        dt = time.monotonic() - t0
        self.ck.check("a wait=true request (no consumer) outlives the 3 s idle timeout and gets "
                      "504 after REPLY_TIMEOUT_MS=5000 (%.1f s)" % dt,
                      r.status == 504 and 4.5 < dt < 8, r)
        self.published += r.status == 504

    # ---- B and C: rate limits ----

    def burst(self, port, n, headers, source=HOST):
        out = []
        for _ in range(n):
            out.append(request(port, "GET", "/messages/x", None, headers, source=source))
        return out

    def rate_limits(self):
        k1, k2 = self.secret(), self.secret()
        b = self.start("B", {"API_KEYS": "k1:%s,k2:%s:messages" % (k1, k2),
                             "RATE_LIMIT_RPS": "4", "RATE_LIMIT_BURST": "4"})
        if b is not None:
            rs = self.burst(b.port, 12, bearer(k1))
            codes = [r.status for r in rs]
            ok429 = [r for r in rs if r.status == 429]
            self.ck.check("RATE_LIMIT_RPS=4, BURST=4, key k1: 12 quick requests -> 4 pass, 8 x 429",
                          codes.count(404) in (4, 5) and len(ok429) + codes.count(404) == 12, codes)
            self.ck.check("429 carries Retry-After >= 1 and a JSON error",
                          ok429 and all(int(r.headers.get("retry-after", "0")) >= 1 and
                                        "error" in (r.json() or {}) for r in ok429),
                          ok429[:1] and ok429[0].headers)
            r = request(b.port, "GET", "/messages/x", None, bearer(k2))
            self.ck.check("key k2 has its own bucket (404, not 429)", r.status == 404, r)
            hs = [request(b.port, "GET", "/health").status for _ in range(20)]
            self.ck.check("/health is never rate limited (20 x 200)", hs == [200] * 20, hs)
            time.sleep(1.1)
            r = request(b.port, "GET", "/messages/x", None, bearer(k1))
            self.ck.check("after 1.1 s at 4/s, k1 is allowed again", r.status == 404, r)
            m = b.metrics()
            self.ck.check("producer_rate_limited_total{key=\"k1\"} counts the 429s",
                          metric(m, "producer_rate_limited_total", key="k1") == len(ok429),
                          [l for l in m.splitlines() if "rate_limited" in l])
        c = self.start("C", {"RATE_LIMIT_RPS": "4", "RATE_LIMIT_BURST": "4"})
        if c is not None:
            self.ck.check("without keys on 127.0.0.1 the start-up log says the API is local only",
                          "open to local clients only" in c.log_text(), c.log_text()[-300:])
            codes = [r.status for r in self.burst(c.port, 12, {})]
            self.ck.check("no keys, RATE_LIMIT_RPS=4: 12 quick requests from 127.0.0.1 -> 4 pass, "
                          "then 429", codes.count(404) in (4, 5) and codes[-1] == 429, codes)
            r = request(c.port, "GET", "/messages/x", source=OTHER)
            self.ck.check("127.0.0.2 has its own bucket (404)", r.status == 404, r)
            self.ck.check("producer_rate_limited_total{key=\"\"} counted without keys",
                          metric(c.metrics(), "producer_rate_limited_total", key="") >= 7)

    def no_secret_leaks(self):
        leaks = []
        for p in self.procs:
            text = p.log_text()
            try:
                text += p.metrics()
            except OSError:
                pass
            leaks += ["%s: %s..." % (p.name, s[:4]) for s in self.secrets if s in text]
        self.ck.check("no secret appears in any log or /metrics (%d secrets checked)"
                      % len(self.secrets), not leaks, leaks)

    def execute(self):
        try:
            self.keys_and_limits()
            self.rate_limits()
            self.no_secret_leaks()
        finally:
            for p in self.procs:  # every one is stopped, whatever happens to the others
                try:
                    rc = p.stop()
                    self.ck.check("producer %s exits 0 on SIGTERM" % p.name, rc == 0, rc)
                    text = p.log_text()
                    if re.search(r"AddressSanitizer|runtime error:|LeakSanitizer", text):
                        self.ck.check("producer %s: no sanitizer report" % p.name, False)
                except Exception as e:  # noqa: BLE001
                    if p.proc.poll() is None:
                        p.proc.kill()
                        p.proc.wait()
                    self.ck.check("producer %s stopped" % p.name, False, e)
        return self.ck.summary()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin", help="folder of producer and rq_amqp_tool")
    ap.add_argument("--amqp-port", type=int, required=True, help="the broker's AMQP port")
    ap.add_argument("--work", required=True, help="scratch folder (logs, key files)")
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    return SecurityTest(args).execute()


if __name__ == "__main__":
    sys.exit(main())
