#!/usr/bin/python3
"""System test of a running relayq producer (and its consumer).

Checks health, single and batch produces, concurrent load (prints msgs/s), metrics,
request/reply with `wait`, message status lookups and bad requests, against the HTTP API
of issue 2. Standard library only; run with /usr/bin/python3.

Prints one line per check and a final `N passed, N failed` line; exits 1 on any failure.
With --record FILE it writes, one per line, the output-file line expected for every message
the producer accepted (201, or 200 with a reply), so a caller can check the consumer's
OUTPUT_FILE. The HTTP helpers here are also used by tests/integration/test_api.py.
"""

import argparse
import http.client
import json
import re
import select
import socket
import sys
import threading
import time
import urllib.parse
import uuid

ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$")
REPLY_PREFIX = "Consumer processed: "


# ---------------------------------------------------------------------------------------------
# HTTP helpers


class Response:
    """An HTTP response: status, headers (lower-case names), raw body, parsed JSON or None."""

    def __init__(self, status, headers, body, elapsed=0.0):
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed = elapsed
        try:
            self.json = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            self.json = None

    def header(self, name, default=None):
        """Returns the value of header `name` (case-insensitive) or default."""
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "%s %r" % (self.status, self.body[:300])


class Client:
    """A keep-alive HTTP/1.1 client bound to one base URL (one connection, not thread-safe)."""

    def __init__(self, url, timeout=30.0):
        u = urllib.parse.urlsplit(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.timeout = timeout
        self.conn = None
        self.used = 0
        self.opened = 0  # connections opened so far (keep-alive shows as few)

    def close(self):
        """Closes the connection (the next request opens a new one)."""
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.used = 0

    def request(self, method, path, body=None, headers=None, timeout=None):
        """Sends one request and returns a Response.

        A dict/list body is sent as JSON with Content-Type application/json unless headers
        say otherwise; str is UTF-8 encoded; bytes go as they are. A request on a reused
        connection that the server had already closed is retried once on a new connection
        (only when no byte of a response was read, so nothing is sent twice knowingly)."""
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
            if not any(k.lower() == "content-type" for k in hdrs):
                hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode("utf-8")
        tmo = timeout if timeout is not None else self.timeout
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=tmo)
                self.opened += 1
            elif self.conn.sock is not None:
                self.conn.sock.settimeout(tmo)
            reused = self.used > 0
            t0 = time.monotonic()
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                r = self.conn.getresponse()
                data = r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 0 and reused:
                    continue
                raise
            except Exception:
                self.close()
                raise
            self.used += 1
            resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data,
                            time.monotonic() - t0)
            if r.will_close:
                self.close()
            return resp
        raise RuntimeError("unreachable")

    def get(self, path, **kw):
        """GET path."""
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        """POST path with body (see request())."""
        return self.request("POST", path, body=body, **kw)


def _parse_raw_response(data, eof=False):
    """Parses raw HTTP/1.x response bytes into a Response; None while incomplete. At EOF a
    response without Content-Length or chunking ends with the connection."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end].decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", head[0])
    if not m:
        raise ValueError("bad status line %r" % head[0])
    status = int(m.group(1))
    headers = {}
    for line in head[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    rest = data[end + 4:]
    if "content-length" in headers:
        n = int(headers["content-length"])
        return Response(status, headers, rest[:n]) if len(rest) >= n else None
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, pos = b"", 0
        while True:
            nl = rest.find(b"\r\n", pos)
            if nl < 0:
                return None
            size = int(rest[pos:nl].split(b";")[0], 16)
            if size == 0:
                return Response(status, headers, body)
            if len(rest) < nl + 2 + size + 2:
                return None
            body += rest[nl + 2:nl + 2 + size]
            pos = nl + 2 + size + 2
    return Response(status, headers, rest) if eof else None


def raw_exchange(host, port, data, timeout=10.0, chunk=65536):
    """Sends raw request bytes and returns the Response, or None if none came in time.

    Sending stops early when the server answers before the whole request was sent (e.g. a
    413 on an oversized body) or fails; the answer is then read. Never blocks longer than
    `timeout` in total."""
    deadline = time.monotonic() + timeout
    s = socket.create_connection((host, port), timeout=timeout)
    got, eof = b"", False
    try:
        s.setblocking(False)
        sent = 0
        while sent < len(data) and time.monotonic() < deadline:
            r, w, _ = select.select([s], [s], [], max(0.0, deadline - time.monotonic()))
            if r:
                break  # the server has answered (or closed): stop sending, read it
            if w:
                try:
                    sent += s.send(data[sent:sent + chunk])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    break
        while time.monotonic() < deadline:
            resp = _parse_raw_response(got) if got else None
            if resp is not None:
                return resp
            r, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            try:
                part = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                eof = True
                break
            if not part:
                eof = True
                break
            got += part
        return _parse_raw_response(got, eof) if got else None
    finally:
        s.close()


def build_request(method, path, body=b"", headers=None, content_type="application/json",
                  host="127.0.0.1"):
    """Builds raw HTTP/1.1 request bytes (Connection: close, Content-Length of body unless
    headers carry Content-Length or Transfer-Encoding; content_type None omits the header)."""
    hdrs = [("Host", host), ("Connection", "close")]
    if content_type is not None:
        hdrs.append(("Content-Type", content_type))
    extra = list((headers or {}).items())
    names = {k.lower() for k, _ in extra}
    if "content-length" not in names and "transfer-encoding" not in names:
        if body or method in ("POST", "PUT", "PATCH"):
            hdrs.append(("Content-Length", str(len(body))))
    hdrs += extra
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs) + "\r\n"
    return head.encode("latin-1") + body


# ---------------------------------------------------------------------------------------------
# results


class Checker:
    """Counts and prints checks (thread-safe)."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.lock = threading.Lock()

    def check(self, name, ok, detail=""):
        """Records one check; prints PASS/FAIL with the detail on failure. Returns ok."""
        with self.lock:
            if ok:
                self.passed += 1
                print("PASS  %s" % name, flush=True)
            else:
                self.failed += 1
                print("FAIL  %s%s" % (name, (": " + str(detail)) if detail != "" else ""),
                      flush=True)
        return bool(ok)

    def info(self, text):
        """Prints an informational line (not a check)."""
        print("INFO  %s" % text, flush=True)

    def summary(self):
        """Prints the final line and returns the process exit code."""
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 1 if self.failed else 0


class Recorder:
    """Collects the OUTPUT_FILE line expected for each accepted message (thread-safe)."""

    def __init__(self):
        self.lines = []
        self.lock = threading.Lock()

    def add(self, payload):
        """Records the line the consumer writes for `payload` (a string payload verbatim,
        anything else compact JSON). Payloads with a newline cannot be checked line-wise."""
        line = expected_text(payload)
        if "\n" in line or "\r" in line:
            return
        with self.lock:
            self.lines.append(line)

    def save(self, path, append=False):
        """Writes the lines to path (one per line, UTF-8)."""
        with open(path, "a" if append else "w", encoding="utf-8") as f:
            for line in self.lines:
                f.write(line + "\n")


def expected_text(payload):
    """The consumer's rendering of a payload sent by Client (json.dumps with its defaults, so
    the payload's text as sent is json.dumps(payload)): a string without control characters
    verbatim, any other payload as sent, byte for byte (issue 14: no re-serialization)."""
    if isinstance(payload, str) and not any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in payload):
        return payload
    return json.dumps(payload)


def expected_reply(payload):
    """The reply the consumer sends for a payload."""
    return REPLY_PREFIX + expected_text(payload)


def is_uuid(s):
    """True when s is a canonical (lower- or upper-case) UUID string."""
    try:
        return isinstance(s, str) and str(uuid.UUID(s)) == s.lower() and len(s) == 36
    except ValueError:
        return False


def is_iso(s):
    """True when s is an ISO-8601 UTC timestamp."""
    return isinstance(s, str) and bool(ISO_RE.match(s))


def is_error_body(r):
    """True when the response is JSON {"error": non-empty string, ...}."""
    ct = (r.header("content-type") or "").lower()
    return (ct.startswith("application/json") and isinstance(r.json, dict)
            and isinstance(r.json.get("error"), str) and r.json["error"] != "")


def metric_sum(text, name):
    """Sums every sample of metric `name` (any labels) in Prometheus text; None if absent."""
    total = None
    pat = re.compile(r"^%s(\{[^}]*\})?\s+(\S+)" % re.escape(name))
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            total = (total or 0.0) + float(m.group(2))
    return total


# ---------------------------------------------------------------------------------------------
# the checks


class SystemTest:
    """The checks against one producer (and optionally the consumer's HTTP port)."""

    def __init__(self, args):
        self.args = args
        self.ck = Checker()
        self.rec = Recorder()
        self.c = Client(args.url, timeout=args.timeout)
        self.run = uuid.uuid4().hex[:8]
        self.accepted = 0  # messages answered 201/200 by the producer
        self.processed_ids = []

    def section(self, name, fn):
        """Runs one group of checks; an exception fails the group instead of the script."""
        print("== %s" % name, flush=True)
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report and go on with the other groups
            self.ck.check("%s: no exception" % name, False, "%s: %s" % (type(e).__name__, e))
            self.c.close()

    # -- health --
    def health(self):
        for base, label, cli in self._targets():
            r = cli.get("/health")
            self.ck.check("%s GET /health -> 200 healthy" % label,
                          r.status == 200 and isinstance(r.json, dict)
                          and r.json.get("status") == "healthy" and is_iso(r.json.get("timestamp")),
                          r)
            r = cli.get("/health/live")
            self.ck.check("%s GET /health/live -> 200" % label,
                          r.status == 200 and isinstance(r.json, dict), r)
            r = cli.get("/health/ready")
            self.ck.check("%s GET /health/ready -> 200" % label,
                          r.status == 200 and isinstance(r.json, dict)
                          and r.json.get("status") == "ready", r)

    def _targets(self):
        out = [(self.args.url, "producer", self.c)]
        if self.args.consumer_url:
            out.append((self.args.consumer_url, "consumer",
                        Client(self.args.consumer_url, timeout=self.args.timeout)))
        return out

    def metrics_value(self, name, url=None):
        """Returns (sum of metric samples, response) from /metrics."""
        cli = self.c if url is None else Client(url, timeout=self.args.timeout)
        r = cli.get("/metrics")
        return metric_sum(r.body.decode("utf-8", "replace"), name), r

    # -- single produce --
    def singles(self):
        ids = []
        for i in range(10):
            if i % 2 == 0:
                mid = "sys-%s-single-%d" % (self.run, i)
                payload = "single %s %d" % (self.run, i)
                body = {"id": mid, "payload": payload}
            else:
                mid = None
                payload = {"run": self.run, "n": i, "nested": {"z": [1, 2, {"a": None}], "b": True}}
                body = {"payload": payload, "processing_time": 0}
            r = self.c.post("/produce", body)
            j = r.json if isinstance(r.json, dict) else {}
            ok = (r.status == 201 and j.get("status") == "success" and is_iso(j.get("timestamp"))
                  and (j.get("message_id") == mid if mid else is_uuid(j.get("message_id")))
                  and (r.header("content-type") or "").startswith("application/json"))
            what = "given id echoed" if mid else "missing id becomes a UUID"
            self.ck.check("POST /produce #%d -> 201 success, %s, ISO timestamp" % (i + 1, what), ok, r)
            if r.status == 201:
                self.accepted += 1
                self.rec.add(payload)
                ids.append(j.get("message_id"))
        self.ck.check("10 single produces got 10 distinct message ids",
                      len(set(ids)) == 10, ids)
        self.single_ids = ids
        # Every accepted JSON value kind is a valid payload.
        for payload in (None, True, 0, -17, 9007199254740993, 1.5, "", "héllo ✓ \"q\" \\ /",
                        [], [1, "a", None], {}, {"z": 1, "a": {"y": [2, 3]}}):
            r = self.c.post("/produce", {"payload": payload})
            self.ck.check("POST /produce payload %s -> 201" % json.dumps(payload, ensure_ascii=False),
                          r.status == 201 and isinstance(r.json, dict)
                          and is_uuid(r.json.get("message_id")), r)
            if r.status == 201:
                self.accepted += 1
                self.rec.add(payload)
        r = self.c.post("/produce", {"payload": "explicit no wait %s" % self.run, "wait": False})
        self.ck.check("POST /produce wait=false -> 201", r.status == 201, r)
        if r.status == 201:
            self.accepted += 1
            self.rec.add("explicit no wait %s" % self.run)
        r = self.c.post("/produce", {"payload": "charset %s" % self.run},
                        headers={"Content-Type": "application/json; charset=utf-8"})
        self.ck.check("POST /produce Content-Type application/json; charset=utf-8 -> 201",
                      r.status == 201, r)
        if r.status == 201:
            self.accepted += 1
            self.rec.add("charset %s" % self.run)

    # -- batch --
    def batch(self):
        items, payloads, given = [], [], []
        for i in range(10):
            p = "batch %s %d" % (self.run, i) if i % 3 else {"batch": self.run, "i": i}
            it = {"payload": p}
            if i % 2 == 0:
                it["id"] = "sys-%s-batch-%d" % (self.run, i)
            items.append(it)
            payloads.append(p)
            given.append(it.get("id"))
        r = self.c.post("/batch-produce", {"messages": items})
        j = r.json if isinstance(r.json, dict) else {}
        ids = j.get("message_ids")
        ok = (r.status == 201 and j.get("status") == "success" and j.get("messages_produced") == 10
              and isinstance(ids, list) and len(ids) == 10)
        self.ck.check("POST /batch-produce 10 -> 201, messages_produced 10, 10 message_ids", ok, r)
        if ok:
            self.ck.check("batch ids: given ids echoed in order, missing ones UUIDs, distinct",
                          all((ids[k] == g) if g else is_uuid(ids[k]) for k, g in enumerate(given))
                          and len(set(ids)) == 10, ids)
        if r.status == 201:
            self.accepted += 10
            for p in payloads:
                self.rec.add(p)

    # -- load --
    def load(self):
        threads_n, per = self.args.threads, self.args.requests
        codes = {}
        conns = [0]
        lat = []
        errors = []
        lock = threading.Lock()
        start = threading.Barrier(threads_n + 1, timeout=30)

        def worker(t):
            cli = Client(self.args.url, timeout=self.args.timeout)
            mine, my_lat, mine_ok = {}, [], []
            try:
                start.wait()
                for i in range(per):
                    p = "load %s %d %d" % (self.run, t, i)
                    try:
                        r = cli.post("/produce", {"payload": p})
                    except Exception as e:  # noqa: BLE001
                        with lock:
                            errors.append("%s: %s" % (type(e).__name__, e))
                        continue
                    mine[r.status] = mine.get(r.status, 0) + 1
                    my_lat.append(r.elapsed)
                    if r.status == 201:
                        mine_ok.append(p)
            finally:
                cli.close()
                with lock:
                    conns[0] += cli.opened
                    for k, v in mine.items():
                        codes[k] = codes.get(k, 0) + v
                    lat.extend(my_lat)
                    for p in mine_ok:
                        self.rec.add(p)

        ths = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
        for th in ths:
            th.start()
        start.wait()
        t0 = time.monotonic()
        for th in ths:
            th.join(timeout=max(60.0, self.args.timeout * 2))
        dt = time.monotonic() - t0
        total = threads_n * per
        ok = codes.get(201, 0)
        self.accepted += ok
        lat.sort()

        def pct(q):
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0.0

        self.ck.info("load: %d threads x %d requests: %d x 201 in %.2f s = %.0f msgs/s "
                     "(p50 %.1f ms, p99 %.1f ms, max %.1f ms)"
                     % (threads_n, per, ok, dt, ok / dt if dt > 0 else 0, pct(0.5), pct(0.99),
                        lat[-1] * 1000 if lat else 0))
        self.load_rate = ok / dt if dt > 0 else 0
        self.ck.check("load: keep-alive held (%d connections for %d requests)" % (conns[0], total),
                      conns[0] <= 2 * threads_n, conns[0])
        self.ck.check("load: all %d concurrent produces -> 201" % total,
                      ok == total and not errors and not any(th.is_alive() for th in ths),
                      "codes %s, %d errors %s" % (codes, len(errors), errors[:3]))

    # -- metrics --
    def metrics(self):
        v, r = self.metrics_value("messages_produced_total")
        self.ck.check("GET /metrics -> 200 text/plain",
                      r.status == 200 and (r.header("content-type") or "").startswith("text/plain"), r)
        self.ck.check("metrics: messages_produced_total present", v is not None, r.body[:200])
        if v is not None and self.m0 is not None:
            self.ck.check("metrics: messages_produced_total grew by >= %d (the accepted messages)"
                          % self.accepted, v - self.m0 >= self.accepted,
                          "before %s after %s" % (self.m0, v))
        text = r.body.decode("utf-8", "replace")
        for name in ("http_request_duration_seconds_bucket", "producer_queue_publish_latency_seconds_bucket",
                     "producer_publish_errors_total", "producer_replies_received_total"):
            self.ck.check("metrics: %s present" % name, metric_sum(text, name) is not None)
        self.ck.check("metrics: '# TYPE messages_produced_total counter'",
                      "# TYPE messages_produced_total counter" in text)
        if self.args.consumer_url:
            cv, cr = self.metrics_value("messages_consumed_total", self.args.consumer_url)
            self.ck.check("consumer metrics: messages_consumed_total present", cv is not None, cr)
            ctext = cr.body.decode("utf-8", "replace")
            for name in ("message_processing_duration_seconds_bucket", "message_processing_errors_total",
                         "consumer_queue_consume_latency_seconds_bucket"):
                self.ck.check("consumer metrics: %s present" % name, metric_sum(ctext, name) is not None)

    # -- request/reply --
    def wait(self):
        wt = max(self.args.timeout, 40.0)
        s = "wait string %s ✓" % self.run
        r = self.c.post("/produce", {"payload": s, "wait": True}, timeout=wt)
        j = r.json if isinstance(r.json, dict) else {}
        ok = (r.status == 200 and j.get("status") == "success" and j.get("reply") == expected_reply(s)
              and is_uuid(j.get("message_id")) and is_iso(j.get("timestamp")))
        self.ck.check("POST /produce wait:true string payload -> 200 reply verbatim", ok, r)
        self._accept(r, s)
        if ok:
            self.processed_ids.append((j["message_id"], expected_reply(s)))
        obj = {"z": "last key first", "a": [1, 2, {"k": None}], "run": self.run, "t": True}
        r = self.c.post("/produce", {"id": "sys-%s-waitobj" % self.run, "payload": obj, "wait": True},
                        timeout=wt)
        j = r.json if isinstance(r.json, dict) else {}
        ok = r.status == 200 and j.get("reply") == expected_reply(obj) \
            and j.get("message_id") == "sys-%s-waitobj" % self.run
        self.ck.check("POST /produce wait:true object payload -> 200 compact JSON, key order kept", ok, r)
        self._accept(r, obj)
        if ok:
            self.processed_ids.append((j["message_id"], expected_reply(obj)))
        for payload in (None, 42, [1, "two"], "", "with \"quotes\" and \\ backslash"):
            r = self.c.post("/produce", {"payload": payload, "wait": True}, timeout=wt)
            self.ck.check("wait:true payload %s -> reply %r" % (json.dumps(payload), expected_reply(payload)),
                          r.status == 200 and isinstance(r.json, dict)
                          and r.json.get("reply") == expected_reply(payload), r)
            self._accept(r, payload)
        q = "query wait %s" % self.run
        r = self.c.post("/produce?wait=true", {"payload": q}, timeout=wt)
        self.ck.check("POST /produce?wait=true -> 200 with reply",
                      r.status == 200 and isinstance(r.json, dict) and r.json.get("reply") == expected_reply(q), r)
        self._accept(r, q)
        p = "slow %s" % self.run
        t0 = time.monotonic()
        r = self.c.post("/produce", {"payload": p, "processing_time": 0.3, "wait": True}, timeout=wt)
        dt = time.monotonic() - t0
        self.ck.check("wait with processing_time 0.3 -> 200 after >= 0.3 s",
                      r.status == 200 and isinstance(r.json, dict)
                      and r.json.get("reply") == expected_reply(p) and dt >= 0.29,
                      "%s after %.3f s" % (r, dt))
        self._accept(r, p)
        # batch with wait: replies in item order, even when later items finish first
        items = [{"payload": "bw %s %d" % (self.run, i), "processing_time": round(0.2 - 0.05 * i, 2)}
                 for i in range(5)]
        items.append({"payload": {"bw": self.run, "last": True}})
        r = self.c.post("/batch-produce", {"messages": items, "wait": True}, timeout=wt)
        j = r.json if isinstance(r.json, dict) else {}
        want = [expected_reply(it["payload"]) for it in items]
        self.ck.check("POST /batch-produce wait:true -> 200, replies in item order",
                      r.status == 200 and j.get("status") == "success" and j.get("replies") == want, r)
        if r.status in (200, 201):
            self.accepted += len(items)
            for it in items:
                self.rec.add(it["payload"])
        items = [{"payload": "bq %s %d" % (self.run, i)} for i in range(3)]
        r = self.c.post("/batch-produce?wait=true", {"messages": items}, timeout=wt)
        j = r.json if isinstance(r.json, dict) else {}
        self.ck.check("POST /batch-produce?wait=true -> 200, replies in item order",
                      r.status == 200 and j.get("replies") == [expected_reply(it["payload"]) for it in items], r)
        if r.status in (200, 201):
            self.accepted += len(items)
            for it in items:
                self.rec.add(it["payload"])

    def _accept(self, r, payload):
        if r.status in (200, 201):
            self.accepted += 1
            self.rec.add(payload)

    # -- message status --
    def status(self):
        for mid, reply in self.processed_ids:
            r = self.c.get("/messages/" + urllib.parse.quote(mid, safe=""))
            self.ck.check("GET /messages/{id} after a wait -> 200 processed with its reply",
                          r.status == 200 and isinstance(r.json, dict)
                          and r.json.get("status") == "processed" and r.json.get("reply") == reply, r)
        # a message produced without wait is queued, and becomes processed with its reply
        p = "status poll %s" % self.run
        r = self.c.post("/produce", {"payload": p})
        self._accept(r, p)
        if self.ck.check("POST /produce for status poll -> 201", r.status == 201, r):
            mid = r.json["message_id"]
            r = self.c.get("/messages/" + mid)
            self.ck.check("GET /messages/{id} right after produce -> queued, processing or processed",
                          r.status == 200 and isinstance(r.json, dict)
                          and r.json.get("status") in ("queued", "processing", "processed"), r)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                r = self.c.get("/messages/" + mid)
                if isinstance(r.json, dict) and r.json.get("status") == "processed":
                    break
                time.sleep(0.1)
            self.ck.check("GET /messages/{id} of a non-wait message -> processed with reply within 15 s",
                          r.status == 200 and r.json.get("status") == "processed"
                          and r.json.get("reply") == expected_reply(p), r)
        r = self.c.get("/messages/" + str(uuid.uuid4()))
        self.ck.check("GET /messages/{unknown} -> 404 JSON error", r.status == 404 and is_error_body(r), r)

    # -- consumer metrics --
    def consumed(self):
        """The consumer's messages_consumed_total grows by every accepted message (15 s)."""
        if self.c0 is None:
            self.ck.check("consumer metrics: messages_consumed_total readable at the start", False)
            return
        deadline = time.monotonic() + 15
        while True:
            v, _ = self.metrics_value("messages_consumed_total", self.args.consumer_url)
            if (v is not None and v - self.c0 >= self.accepted) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.ck.check("consumer metrics: messages_consumed_total grew by >= %d within 15 s" % self.accepted,
                      v is not None and v - self.c0 >= self.accepted, "before %s after %s" % (self.c0, v))

    # -- bad requests --
    def bad(self):
        ck, c = self.ck, self.c

        def expect(name, r, code, extra=True):
            ck.check("%s -> %d JSON error" % (name, code),
                     r is not None and r.status == code and is_error_body(r) and extra, r)

        expect("POST /produce no body", c.post("/produce", b"", headers={"Content-Type": "application/json"}), 400)
        expect("POST /produce invalid JSON", c.post("/produce", b'{"payload": ', headers={"Content-Type": "application/json"}), 400)
        expect("POST /produce missing payload", c.post("/produce", {"id": "x"}), 400)
        expect("POST /produce id not a string", c.post("/produce", {"id": 5, "payload": 1}), 400)
        expect("POST /produce processing_time negative", c.post("/produce", {"payload": 1, "processing_time": -1}), 400)
        expect("POST /produce processing_time a string", c.post("/produce", {"payload": 1, "processing_time": "1"}), 400)
        expect("POST /produce invalid UTF-8", c.post("/produce", b'{"payload":"\xff\xfe"}',
                                                     headers={"Content-Type": "application/json"}), 400)
        big = b'{"payload":"' + b"a" * (1024 * 1024) + b'"}'
        host, port = c.host, c.port
        expect("POST /produce body > 1 MiB", raw_exchange(host, port, build_request("POST", "/produce", big),
                                                          timeout=self.args.timeout), 413)
        expect("POST /produce Content-Type application/x-www-form-urlencoded (curl -d without -H)",
               c.post("/produce", b'{"payload":1}',
                      headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
        expect("GET /nonexistent", c.get("/nonexistent"), 404)
        r = c.get("/produce")
        expect("GET /produce", r, 405, "POST" in (r.header("allow") or ""))
        ck.check("GET /produce 405 has Allow: POST", "POST" in (r.header("allow") or ""), r.headers)
        items = [{"payload": 1}, {"payload": 2}, {"payload": 3, "processing_time": "x"}, {"payload": 4}]
        r = c.post("/batch-produce", {"messages": items})
        expect("POST /batch-produce bad item at index 2", r, 400,
               isinstance(r.json, dict) and re.search(r"\b2\b", str(r.json.get("error", ""))))
        ck.check("batch bad item: error names index 2",
                 isinstance(r.json, dict) and re.search(r"\b2\b", str(r.json.get("error", ""))), r)
        expect("POST /batch-produce empty messages", c.post("/batch-produce", {"messages": []}), 400)


def main(argv=None):
    """Parses arguments, runs every group of checks, prints the summary; returns exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:5000", help="producer base URL")
    ap.add_argument("--consumer-url", default="", help="consumer base URL (health and metrics)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    ap.add_argument("--threads", type=int, default=8, help="load threads")
    ap.add_argument("--requests", type=int, default=250, help="requests per load thread")
    ap.add_argument("--record", default="", help="write the expected OUTPUT_FILE lines here")
    args = ap.parse_args(argv)

    t = SystemTest(args)
    print("relayq system test against %s (run %s)" % (args.url, t.run), flush=True)
    t.section("health", t.health)
    try:
        t.m0, _ = t.metrics_value("messages_produced_total")
    except Exception as e:  # noqa: BLE001
        t.m0 = None
        t.ck.check("GET /metrics before the run", False, e)
    t.c0 = None
    if args.consumer_url:
        try:
            t.c0, _ = t.metrics_value("messages_consumed_total", args.consumer_url)
        except Exception as e:  # noqa: BLE001
            t.ck.check("GET consumer /metrics before the run", False, e)
    t.section("single produce", t.singles)
    t.section("batch produce", t.batch)
    t.section("concurrent load", t.load)
    t.section("metrics", t.metrics)
    t.section("request/reply (wait)", t.wait)
    t.section("message status", t.status)
    if args.consumer_url:
        t.section("consumer caught up", t.consumed)
    t.section("bad requests", t.bad)
    if args.record:
        t.rec.save(args.record)
        t.ck.info("recorded %d expected output lines in %s" % (len(t.rec.lines), args.record))
    return t.ck.summary()


if __name__ == "__main__":
    sys.exit(main())
