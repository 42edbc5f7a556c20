#!/usr/bin/python3
"""Integration tests of the producer's HTTP API edge cases (issue 2).

1. A table of bad requests (malformed or truncated JSON, wrong types, invalid UTF-8,
   oversized bodies and batches, wrong methods and content types, path tricks) sent to a
   producer whose request queue has no consumer (--badreq-url, --queue): each must get its
   status code with a JSON {"error"} body, nothing may be published (the queue depth, read
   with rq_amqp_tool, stays the same), and stalled clients must not block other requests.
   A valid request afterwards must raise the depth by exactly one (the check can fail).
2. Boundaries and content-type variants on the main producer (--url).
3. Many concurrent waiting callers on the main producer (consumer running): each gets the
   reply to its own message.

Standard library only. Prints one line per check and `N passed, N failed`; exit 1 on failure.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import test_system as ts  # noqa: E402  (shared HTTP helpers)

MiB = 1024 * 1024


def J(obj):
    """Compact JSON bytes of obj."""
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


class Case:
    """One bad request: raw pieces, the accepted status codes and an optional extra check."""

    def __init__(self, name, method, path, body=b"", ctype="application/json", headers=None,
                 codes=(400,), allow=None, index=None, raw=None):
        self.name = name
        self.method = method
        self.path = path
        self.body = body
        self.ctype = ctype
        self.headers = headers or {}
        self.codes = codes if isinstance(codes, tuple) else (codes,)
        self.allow = allow    # a method the Allow header must list (405)
        self.index = index    # a batch index the error text must name
        self.raw = raw        # full raw request bytes (overrides the rest)

    def request_bytes(self):
        """The raw request."""
        if self.raw is not None:
            return self.raw
        return ts.build_request(self.method, self.path, self.body, self.headers, self.ctype)


def chunked(body, size=65536):
    """body in HTTP/1.1 chunked transfer coding."""
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


def bad_cases(max_batch):
    """The table of bad requests (all must be rejected without publishing)."""
    P, B = "/produce", "/batch-produce"
    c = []
    add = c.append
    # -- malformed JSON --
    for name, body in [
        ("empty body", b""),
        ("whitespace body", b"  \r\n\t "),
        ("truncated '{'", b"{"),
        ("truncated object", b'{"payload": 1'),
        ("truncated string", b'{"payload": "abc'),
        ("truncated key", b'{"pay'),
        ("trailing brace", b'{"payload": 1}}'),
        ("two documents", b'{"payload": 1} {"payload": 2}'),
        ("trailing comma", b'{"payload": 1,}'),
        ("single quotes", b"{'payload': 1}"),
        ("bare key", b"{payload: 1}"),
        ("bad literal", b'{"payload": tru}'),
        ("NaN", b'{"payload": NaN}'),
        ("Infinity", b'{"payload": Infinity}'),
        ("leading zero", b'{"payload": 01}'),
        ("raw control char in string", b'{"payload": "a\x01b"}'),
        ("raw newline in string", b'{"payload": "a\nb"}'),
        ("bad escape", b'{"payload": "\\q"}'),
        ("lone surrogate escape", b'{"payload": "\\ud800"}'),
        ("comment", b'{"payload": 1 /* c */}'),
        ("not JSON at all", b"payload=1"),
        ("NUL byte after document", b'{"payload": 1}\x00'),
    ]:
        add(Case("produce: " + name, "POST", P, body))
    # -- invalid UTF-8 --
    for name, s in [
        ("0xFF byte", b"\xff"),
        ("overlong '/'", b"\xc0\xaf"),
        ("UTF-8 encoded surrogate", b"\xed\xa0\x80"),
        ("code point above U+10FFFF", b"\xf4\x90\x80\x80"),
        ("truncated multibyte", b"abc\xe2\x82"),
        ("lone continuation byte", b"\x80"),
    ]:
        add(Case("produce: invalid UTF-8 in string (%s)" % name, "POST", P,
                 b'{"payload": "' + s + b'"}'))
    add(Case("produce: invalid UTF-8 in a key", "POST", P, b'{"payload": 1, "\xff": 2}'))
    add(Case("produce: invalid UTF-8 in id", "POST", P, b'{"id": "a\xfe", "payload": 1}'))
    # -- not an object / missing payload --
    for name, body in [("null", b"null"), ("array", b"[]"), ("string", b'"x"'),
                       ("number", b"42"), ("true", b"true"), ("{}", b"{}"),
                       ("only id", b'{"id": "a"}'), ("payload misspelled", b'{"paylaod": 1}')]:
        add(Case("produce: body %s (no payload)" % name, "POST", P, body))
    # -- wrong types --
    for name, obj in [
        ("id number", {"id": 5, "payload": 1}),
        ("id null", {"id": None, "payload": 1}),
        ("id array", {"id": ["a"], "payload": 1}),
        ("id object", {"id": {"a": 1}, "payload": 1}),
        ("id true", {"id": True, "payload": 1}),
        ("processing_time -1", {"payload": 1, "processing_time": -1}),
        ("processing_time -0.001", {"payload": 1, "processing_time": -0.001}),
        ("processing_time string", {"payload": 1, "processing_time": "1"}),
        ("processing_time true", {"payload": 1, "processing_time": True}),
        ("processing_time null", {"payload": 1, "processing_time": None}),
        ("processing_time array", {"payload": 1, "processing_time": [1]}),
        ("processing_time object", {"payload": 1, "processing_time": {}}),
        ("processing_time over the maximum (3601)", {"payload": 1, "processing_time": 3601}),
        ("processing_time 61 (over the default MAX_PROCESSING_TIME 60)", {"payload": 1, "processing_time": 61}),
        ("processing_time 1e9", {"payload": 1, "processing_time": 1e9}),
        ("wait string", {"payload": 1, "wait": "yes"}),
        ("wait number", {"payload": 1, "wait": 1}),
    ]:
        add(Case("produce: " + name, "POST", P, J(obj)))
    add(Case("produce: processing_time 1e400 (overflow)", "POST", P,
             b'{"payload": 1, "processing_time": 1e400}'))
    add(Case("produce: nesting 5000 deep", "POST", P,
             b'{"payload": ' + b"[" * 5000 + b"]" * 5000 + b"}"))
    # -- sizes --
    big = b'{"payload": "' + b"a" * MiB + b'"}'
    add(Case("produce: body 1 MiB + 14 bytes", "POST", P, big, codes=413))
    add(Case("produce: body 8 MiB", "POST", P, b'{"payload": "' + b"a" * (8 * MiB) + b'"}', codes=413))
    add(Case("produce: Content-Length 10^12 without the body", "POST", P, b"",
             headers={"Content-Length": str(10 ** 12)}, codes=413))
    add(Case("produce: chunked body 1.5 MiB", "POST", P, chunked(b'{"payload": "' + b"b" * (MiB + MiB // 2) + b'"}'),
             headers={"Transfer-Encoding": "chunked"}, codes=413))
    add(Case("batch: body over 1 MiB", "POST", B,
             J({"messages": [{"payload": "c" * 1000} for _ in range(1100)]}), codes=413))
    add(Case("batch: %d items (over MAX_BATCH_SIZE %d)" % (max_batch + 1, max_batch), "POST", B,
             J({"messages": [{"payload": i} for i in range(max_batch + 1)]}), codes=413))
    # -- batches --
    for name, body in [("{}", b"{}"), ("messages null", b'{"messages": null}'),
                       ("messages string", b'{"messages": "x"}'), ("messages object", b'{"messages": {}}'),
                       ("messages number", b'{"messages": 5}'), ("empty messages", b'{"messages": []}'),
                       ("truncated", b'{"messages": [{"payload": 1}'), ("array body", b'[{"payload": 1}]'),
                       ("invalid UTF-8 in item", b'{"messages": [{"payload": 1}, {"payload": "\xff"}]}')]:
        add(Case("batch: " + name, "POST", B, body))
    ok = {"payload": 1}
    for idx, bad in [(0, 5), (3, {"id": "x"}), (1, {"id": 5, "payload": 1}),
                     (7, {"payload": 1, "processing_time": -1}), (2, None), (4, [])]:
        items = [ok] * 9
        items[idx] = bad
        add(Case("batch: bad item at index %d (%s)" % (idx, json.dumps(bad)), "POST", B,
                 J({"messages": items}), index=idx))
    add(Case("batch: wait string", "POST", B, J({"messages": [ok], "wait": "yes"})))
    # -- methods --
    for m, path, allow in [("GET", P, "POST"), ("PUT", P, "POST"), ("DELETE", P, "POST"),
                           ("PATCH", P, "POST"), ("GET", B, "POST"), ("PUT", B, "POST"),
                           ("POST", "/health", "GET"), ("DELETE", "/health/ready", "GET"),
                           ("POST", "/health/live", "GET"), ("POST", "/metrics", "GET"),
                           ("PUT", "/messages/abc", "GET"), ("POST", "/messages/abc", "GET")]:
        body = J(ok) if m in ("POST", "PUT", "PATCH") else b""
        add(Case("%s %s" % (m, path), m, path, body, codes=405, allow=allow))
    # -- content types (valid JSON bodies): another concrete type is a raw body, published as it
    # is (issue 16, test_queues_produce.py); these are no type to publish with --
    for ct in [None, "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
               "*/*", "text/*", "plain", "/json", "text/", ""]:
        add(Case("produce: Content-Type %r" % ct, "POST", P, J(ok), ctype=ct, codes=415))
    add(Case("batch: Content-Type text/plain", "POST", B, J({"messages": [ok]}), ctype="text/plain", codes=415))
    # -- paths --
    for m, path, body, codes in [
        ("GET", "/nonexistent", b"", 404), ("POST", "/nonexistent", J(ok), 404),
        ("GET", "/", b"", 404), ("POST", "/", J(ok), 404),
        ("POST", "/produce/../metrics", J(ok), 404), ("GET", "/produce/../metrics", b"", 404),
        ("POST", "/metrics/../produce", J(ok), 404),
        ("POST", "//produce", J(ok), 404), ("POST", "/produce/", J(ok), 404),
        ("POST", "/PRODUCE", J(ok), 404), ("POST", "/produce/x", J(ok), 404),
        ("POST", "/producex", J(ok), 404), ("POST", "/./produce", J(ok), 404),
        ("POST", "/produce%00", J(ok), (404, 400)), ("POST", "/batch-produce/", J({"messages": [ok]}), 404),
        ("POST", "/produce;x", J(ok), 404),
        ("GET", "/health/", b"", 404), ("GET", "/metrics/", b"", 404),
        ("GET", "/health/../metrics", b"", 404),
        ("GET", "/messages/", b"", 404), ("GET", "/messages", b"", 404),
        ("GET", "/messages/" + "x" * 2000, b"", 404),
        ("GET", "/messages/" + str(uuid.uuid4()), b"", 404),
        ("GET", "/messages/a/b", b"", 404),
    ]:
        add(Case("%s %s" % (m, path if len(path) < 40 else path[:30] + "..."), m, path, body, codes=codes))
    # the query is not part of the route: these reach /produce and fail validation
    add(Case("POST /produce?x (missing payload)", "POST", "/produce?x", b'{"id": "a"}'))
    add(Case("POST /produce?wait=true (invalid JSON)", "POST", "/produce?wait=true", b"{"))
    add(Case("POST /batch-produce?wait=true (empty messages)", "POST", "/batch-produce?wait=true",
             b'{"messages": []}'))
    return c


class ApiTest:
    """Runs the table, the stall test, the depth checks and the concurrent callers."""

    def __init__(self, args):
        self.args = args
        self.ck = ts.Checker()
        self.rec = ts.Recorder()
        self.run = uuid.uuid4().hex[:8]
        u = urllib.parse.urlsplit(args.badreq_url)
        self.bhost, self.bport = u.hostname, u.port

    def depth(self):
        """Messages ready in the bad-request queue, read with rq_amqp_tool (int), or raises."""
        cmd = [self.args.tool, "depth", "--port", str(self.args.amqp_port), "--queue", self.args.queue]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        m = re.search(r"-?\d+", p.stdout)
        if p.returncode != 0 or not m:
            raise RuntimeError("%s -> rc %d, out %r, err %r" % (" ".join(cmd), p.returncode,
                                                              p.stdout, p.stderr.strip()[:300]))
        return int(m.group(0))

    def produced(self, url):
        """messages_produced_total of a producer."""
        r = ts.Client(url, timeout=10).get("/metrics")
        return ts.metric_sum(r.body.decode("utf-8", "replace"), "messages_produced_total")

    def table(self):
        """Every bad case: its code and a JSON error body, answered within 10 s."""
        cases = bad_cases(self.args.max_batch)
        self.ck.info("%d bad-request cases against %s" % (len(cases), self.args.badreq_url))
        for cs in cases:
            t0 = time.monotonic()
            try:
                r = ts.raw_exchange(self.bhost, self.bport, cs.request_bytes(), timeout=10)
            except OSError as e:
                self.ck.check(cs.name, False, "%s: %s" % (type(e).__name__, e))
                continue
            dt = time.monotonic() - t0
            want = "/".join(str(x) for x in cs.codes)
            if r is None:
                self.ck.check("%s -> %s" % (cs.name, want), False, "no response within 10 s")
                continue
            problems = []
            if r.status not in cs.codes:
                problems.append("status %d" % r.status)
            if not ts.is_error_body(r):
                problems.append("not a JSON {\"error\"} body (Content-Type %r)" % r.header("content-type"))
            if cs.allow and cs.allow not in (r.header("allow") or ""):
                problems.append("Allow %r lacks %s" % (r.header("allow"), cs.allow))
            if cs.index is not None:
                err = str((r.json or {}).get("error", "")) if isinstance(r.json, dict) else ""
                if not re.search(r"(?<![0-9])%d(?![0-9])" % cs.index, err):
                    problems.append("error does not name index %d" % cs.index)
            self.ck.check("%s -> %s%s" % (cs.name, want, " (Allow: %s)" % cs.allow if cs.allow else ""),
                          not problems, "; ".join(problems) + " | %r (%.2f s)" % (r, dt))

    def stalled(self):
        """Clients that stop mid-headers or mid-body must not delay anyone else."""
        socks = []
        try:
            for i in range(6):  # more than HTTP_THREADS
                s = socket.create_connection((self.bhost, self.bport), timeout=5)
                s.sendall(b"POST /produce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"id\": \"st")
                socks.append(s)
            for i in range(4):
                s = socket.create_connection((self.bhost, self.bport), timeout=5)
                s.sendall(b"POST /produce HTTP/1.1\r\nHost: x\r\nContent-Ty")
                socks.append(s)
            time.sleep(0.3)
            cli = ts.Client(self.args.badreq_url, timeout=5)
            slow = []
            for i in range(20):
                t0 = time.monotonic()
                r = cli.get("/health") if i % 2 == 0 else cli.post("/produce", {"id": 1, "payload": 1})
                dt = time.monotonic() - t0
                if r.status not in (200, 400) or dt > 2.0:
                    slow.append("%s in %.2f s" % (r, dt))
            self.ck.check("10 stalled clients (half a body / half the headers) do not block 20 other "
                          "requests (each answered within 2 s)", not slow, slow[:3])
            # the rest of a stalled body arrives late: it is still handled (missing payload -> 400)
            s = socks[0]
            rest = b'x"}'
            rest += b" " * (100 - len(b"{\"id\": \"st") - len(rest))
            s.sendall(rest)
            s.settimeout(5)
            data = b""
            r = None
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    part = s.recv(65536)
                except OSError:
                    break
                if not part:
                    break
                data += part
                r = ts._parse_raw_response(data)
                if r is not None:
                    break
            if r is None and data:
                r = ts._parse_raw_response(data, True)
            self.ck.check("stalled client finishing its body late -> 400 JSON error",
                          r is not None and r.status == 400 and ts.is_error_body(r),
                          r if r is not None else data[:200])
        finally:
            for s in socks:
                s.close()

    def control(self):
        """A valid message and a timed-out wait raise the depth by exactly two (the check can
        fail), and the wait answers 504 JSON after REPLY_TIMEOUT_MS."""
        cli = ts.Client(self.args.badreq_url, timeout=30)
        d0 = self.depth()
        r = cli.post("/produce", {"payload": "control %s" % self.run})
        self.ck.check("control: valid POST /produce on the bad-request producer -> 201", r.status == 201, r)
        t0 = time.monotonic()
        r = cli.post("/produce", {"payload": "control wait %s" % self.run, "wait": True})
        dt = time.monotonic() - t0
        lim = self.args.reply_timeout_ms / 1000.0
        self.ck.check("control: wait with no consumer -> 504 JSON error after ~REPLY_TIMEOUT_MS (%.1f s)" % lim,
                      r.status == 504 and ts.is_error_body(r) and lim * 0.9 <= dt <= lim + 3.0,
                      "%r after %.2f s" % (r, dt))
        d1 = d0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            d1 = self.depth()
            if d1 >= d0 + 2:
                break
            time.sleep(0.2)
        self.ck.check("control: queue depth rose by exactly 2", d1 == d0 + 2, "before %d after %d" % (d0, d1))

    def boundaries(self):
        """On the main producer: the exact body limit passes, one byte more is 413; media
        type parameters and case do not matter."""
        cli = ts.Client(self.args.url, timeout=30)
        u = urllib.parse.urlsplit(self.args.url)
        head = b'{"payload":"'
        tail = b'"}'
        n = self.args.max_body - len(head) - len(tail)
        payload = ("edge %s " % self.run) + "e" * (n - len("edge %s " % self.run))
        body = head + payload.encode() + tail
        r = ts.raw_exchange(u.hostname, u.port, ts.build_request("POST", "/produce", body), timeout=30)
        self.ck.check("POST /produce body of exactly MAX_BODY_BYTES (%d) -> 201" % len(body),
                      r is not None and r.status == 201, r)
        if r is not None and r.status == 201:
            self.rec.add(payload)
        r = ts.raw_exchange(u.hostname, u.port, ts.build_request("POST", "/produce", body[:-2] + b'e"}'),
                            timeout=30)
        self.ck.check("POST /produce body of MAX_BODY_BYTES + 1 -> 413 JSON error",
                      r is not None and r.status == 413 and ts.is_error_body(r), r)
        for ct in ("application/json; charset=utf-8", "Application/JSON", "application/json;charset=UTF-8"):
            p = "ctype %s %s" % (ct, self.run)
            r = cli.post("/produce", {"payload": p}, headers={"Content-Type": ct})
            self.ck.check("POST /produce Content-Type %r -> 201" % ct, r.status == 201, r)
            if r.status == 201:
                self.rec.add(p)
        items = [{"payload": "maxbatch %s %d" % (self.run, i)} for i in range(self.args.max_batch)]
        r = cli.post("/batch-produce", {"messages": items})
        self.ck.check("POST /batch-produce of exactly MAX_BATCH_SIZE (%d) items -> 201" % self.args.max_batch,
                      r.status == 201 and isinstance(r.json, dict)
                      and r.json.get("messages_produced") == self.args.max_batch, r)
        if r.status == 201:
            for it in items:
                self.rec.add(it["payload"])

    def callers(self):
        """N concurrent waiting callers, each must get the reply to its own payload."""
        n = self.args.callers
        results = [None] * n
        barrier = threading.Barrier(n + 1, timeout=60)
        wt = max(60.0, self.args.reply_timeout_ms / 1000.0 + 30)

        def one(i):
            payload = {"caller": i, "run": self.run, "pad": "x" * (i % 7)}
            mid = "api-%s-caller-%d" % (self.run, i)
            cli = ts.Client(self.args.url, timeout=wt)
            try:
                barrier.wait()
                r = cli.post("/produce", {"id": mid, "payload": payload, "wait": True,
                                          "processing_time": (i % 4) * 0.002})
                ok = (r.status == 200 and isinstance(r.json, dict) and r.json.get("message_id") == mid
                      and r.json.get("reply") == ts.expected_reply(payload))
                results[i] = (ok, r.status, r.json if isinstance(r.json, dict) else r.body[:200], r.elapsed)
                if r.status == 200:
                    self.rec.add(payload)
            except Exception as e:  # noqa: BLE001
                results[i] = (False, None, "%s: %s" % (type(e).__name__, e), 0)
            finally:
                cli.close()

        threading.stack_size(256 * 1024)
        ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for th in ths:
            th.start()
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        t0 = time.monotonic()
        for th in ths:
            th.join(timeout=max(1.0, wt + 10 - (time.monotonic() - t0)))
        dt = time.monotonic() - t0
        bad = [(i, r) for i, r in enumerate(results) if r is None or not r[0]]
        self.ck.info("%d concurrent waiting callers finished in %.2f s" % (n, dt))
        self.ck.check("%d concurrent waiting callers each got 200 with their own reply" % n, not bad,
                      "%d wrong, e.g. %s" % (len(bad), bad[:3]))

    def execute(self):
        """Runs all parts; returns the exit code."""
        print("relayq API edge-case test (run %s)" % self.run, flush=True)
        try:
            d0 = self.depth()
            p0 = self.produced(self.args.badreq_url)
        except Exception as e:  # noqa: BLE001
            self.ck.check("read the bad-request queue depth with rq_amqp_tool", False, e)
            d0 = p0 = None
        for name, fn in [("bad-request table", self.table), ("stalled clients", self.stalled)]:
            print("== %s" % name, flush=True)
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                self.ck.check("%s: no exception" % name, False, "%s: %s" % (type(e).__name__, e))
        print("== nothing published for rejected requests", flush=True)
        if d0 is not None:
            try:
                time.sleep(0.5)
                d1 = self.depth()
                self.ck.check("queue %s depth unchanged after all bad requests" % self.args.queue,
                              d1 == d0, "before %d after %d" % (d0, d1))
                p1 = self.produced(self.args.badreq_url)
                self.ck.check("messages_produced_total unchanged after all bad requests", p1 == p0,
                              "before %s after %s" % (p0, p1))
            except Exception as e:  # noqa: BLE001
                self.ck.check("depth after bad requests", False, e)
        r = ts.Client(self.args.badreq_url, timeout=5).get("/health")
        self.ck.check("bad-request producer still healthy", r.status == 200, r)
        for name, fn in [("control", self.control), ("boundaries (main producer)", self.boundaries),
                         ("concurrent waiting callers", self.callers)]:
            print("== %s" % name, flush=True)
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                self.ck.check("%s: no exception" % name, False, "%s: %s" % (type(e).__name__, e))
        if self.args.record:
            self.rec.save(self.args.record, append=True)
            self.ck.info("appended %d expected output lines to %s" % (len(self.rec.lines), self.args.record))
        return self.ck.summary()


def main(argv=None):
    """Parses arguments and runs the test."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:5000", help="main producer (consumer running)")
    ap.add_argument("--badreq-url", required=True, help="producer whose queue has no consumer")
    ap.add_argument("--queue", default="relayq_badreq_test", help="that producer's REQUEST_QUEUE")
    ap.add_argument("--amqp-port", type=int, required=True, help="broker port")
    ap.add_argument("--tool", default="build/bin/rq_amqp_tool", help="path of rq_amqp_tool")
    ap.add_argument("--max-batch", type=int, default=1000, help="MAX_BATCH_SIZE of the producers")
    ap.add_argument("--max-body", type=int, default=MiB, help="MAX_BODY_BYTES of the producers")
    ap.add_argument("--reply-timeout-ms", type=int, default=30000, help="REPLY_TIMEOUT_MS of the bad-request producer")
    ap.add_argument("--callers", type=int, default=500, help="concurrent waiting callers")
    ap.add_argument("--record", default="", help="append the expected OUTPUT_FILE lines here")
    return ApiTest(ap.parse_args(argv)).execute()


if __name__ == "__main__":
    sys.exit(main())
