#!/usr/bin/python3
"""Pull consumption with leases (issue 16): GET /queues/{id}/messages and ack/nack/lease.

Against a real broker (a private one with the management plugin unless --amqp-port is
given): queues are declared and filled over AMQP with rq_amqp_tool (H3's POST /queues and
H4's POST /queues/{id}/messages are not needed). Checks the message fields, invisibility of
leased messages, ack, nack requeue (attempt 2, quorum and classic), nack to the DLQ with the
reason (read back through the management API), nack with delay_ms, lease expiry (redelivered,
metric counted, the old lease 409), lease extension, long-poll wake-up latency and the empty
answer after wait_s, a client that leaves a long-poll, 400/404/409 bodies, and a kill -9 of
the producer returning its leased messages; the batch ack (POST /queues/{id}/messages/ack:
all good, a mix of expired/mismatched/unknown leases acked item by item, 400 naming the bad
item), a queue's own max_retries (POST /queues {"max_retries": 1}) honoured over MAX_RETRIES,
and LEASE_MAX_OUTSTANDING (503 when full); messages from a foreign AMQP client (python3-pika)
with a message_id that is not UTF-8, headers of every AMQP field type, JSON bodies with
escapes and whitespace, a content type that is not UTF-8. Standard library and python3-pika;
bounded in time.
"""

import base64
import datetime
import decimal
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import qharness

HOST = "127.0.0.1"


class PullTest:
    def __init__(self, st):
        self.st, self.ck, self.args = st, st.ck, st.args
        self.tool = os.path.join(self.args.bin, "rq_amqp_tool")

    # ---- broker helpers ----
    def amqp(self, *argv, timeout=30):
        r = subprocess.run([self.tool, argv[0], "--port", str(self.args.amqp_port), "--quiet"]
                           + list(argv[1:]), capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("rq_amqp_tool %s: %s" % (" ".join(argv), r.stderr[-300:]))
        return r.stdout

    def declare(self, q, qtype="quorum"):
        self.amqp("declare", "--queue", q, "--topology", "--queue-type", qtype)

    def publish(self, q, count=1, prefix="m", body=None, ctype=None):
        argv = ["publish", "--queue", q, "--count", str(count), "--id-prefix", prefix]
        if body is not None:
            argv += ["--body", body]
        if ctype is not None:
            argv += ["--content-type", ctype]
        self.amqp(*argv)

    def depth(self, q):
        return int(self.amqp("depth", "--queue", q).split()[0])

    def mgmt_get(self, q, count=1):
        """Messages of q through the management API (requeued), or None without it."""
        if not self.args.mgmt_port:
            return None
        r = qharness.request(self.args.mgmt_port, "POST", "/api/queues/%2F/" + urllib.parse.quote(q)
                             + "/get", body={"count": count, "ackmode": "ack_requeue_true",
                                             "encoding": "auto"},
                             headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})
        try:
            return json.loads(r.body) if r.status == 200 else None
        except ValueError:  # a 200 whose body is not JSON: as no answer
            return None

    # ---- API helpers ----
    def pull(self, p, q, timeout=40, **params):
        path = "/queues/%s/messages" % q
        if params:
            path += "?" + urllib.parse.urlencode(params)
        r = self.st.request(p, "GET", path, timeout=timeout)
        try:
            r.json = json.loads(r.body)
        except ValueError:
            r.json = None
        return r

    def act(self, p, q, m, action, body):
        r = self.st.request(p, "POST", "/queues/%s/messages/%s/%s" % (q, urllib.parse.quote(m), action),
                            body)
        try:
            r.json = json.loads(r.body)
        except ValueError:
            r.json = None
        return r

    @staticmethod
    def msgs(r):
        return (r.json or {}).get("messages", []) if r.status == 200 else []

    # ---- scenarios ----
    def foreign(self, p):
        """Messages from pika: each is pulled once (none rejected back forever), fields as
        documented, the body and headers what the client sent (pika cannot send float
        headers: rq_lease_json's unit test covers them)."""
        import pika  # python3-pika: a foreign client
        ck, q = self.ck, self.st.qname("foreign")
        self.declare(q)
        conn = pika.BlockingConnection(pika.ConnectionParameters(host=HOST, port=self.args.amqp_port))
        ch = conn.channel()
        ch.confirm_delivery()
        when = datetime.datetime(2026, 12, 2, 12, 0, 0)
        headers = {"s": "text \u00e9 \"q\" \\ \n", "b": b"bytes", "bin": b"\xff\x00\xfe", "i": 7,
                   "neg": -2 ** 40, "t": True, "none": None, "nested": {"k": [1, "two", {"x": False}]},
                   "list": [1, "s"], "dec": decimal.Decimal("1.5"), "ts": when}
        sent = [
            ("bad-id", pika.BasicProperties(message_id=b"\xffbad\xfe", content_type="text/plain"), b"plain"),
            ("headers", pika.BasicProperties(message_id="f-headers", content_type="application/json",
                                             headers=headers, priority=3), b'{"a": 1}'),
            ("escapes", pika.BasicProperties(message_id="f-escapes", content_type="application/json; charset=utf-8"),
             ' \n{ "s" : "tab\\t quote\\" \\u00e9 \\ud83d\\ude00 nul\\u0001", "n": [1.50, -0, 1E3, 12345678901234567],'
             ' "e": {}, "z": [] } \r\n'.encode()),
            ("bigint", pika.BasicProperties(message_id="f-bigint", content_type="application/json"),
             b'{"n": 99999999999999999999}'),
            ("dup", pika.BasicProperties(message_id="f-dup", content_type="application/json"), b'{"a":1,"a":2}'),
            ("binary", pika.BasicProperties(message_id="f-binary", content_type=b"x/\xff"), b"\x00\xff\x01"),
            ("none", pika.BasicProperties(message_id="f-none"), "caf\u00e9".encode()),
            ("huge", pika.BasicProperties(message_id="f-huge", headers={
                "x-relayq-attempts": 2 ** 63 - 1, "x-delivery-count": 2 ** 63 - 1}), b"h"),
            ("negative", pika.BasicProperties(message_id="f-negative", headers={
                "x-relayq-attempts": -2 ** 63, "x-delivery-count": -2 ** 63}), b"n"),
        ]
        for _, props, body in sent:
            ch.basic_publish("", q, body, props)
        conn.close()
        got, t0 = {}, time.monotonic()
        while len(got) < len(sent) and time.monotonic() - t0 < 10:
            r = self.pull(p, q, max=10, lease_s=30)
            for m in self.msgs(r):
                got[m.get("message_id")] = m
            if r.status != 200:
                break
        bad = [m for k, m in got.items() if k is not None and k.startswith("gen-")]
        ck.check("foreign: every message pulled (%d of %d)" % (len(got), len(sent)),
                 len(got) == len(sent) and len(bad) == 1, sorted(got))
        ck.check("foreign: a message_id that is not UTF-8 gets a gen-<uuid> id",
                 len(bad) == 1 and base64.b64decode(bad[0].get("body_base64", "")) == b"plain", bad)
        h = got.get("f-headers", {})
        want = {"s": headers["s"], "b": "bytes", "bin": {"base64": base64.b64encode(b"\xff\x00\xfe").decode()},
                "i": 7, "neg": -2 ** 40, "t": True, "none": None,
                "nested": {"k": [1, "two", {"x": False}]}, "list": [1, "s"], "dec": None,
                "ts": int(when.replace(tzinfo=datetime.timezone.utc).timestamp())}
        hh = h.get("headers") or {}
        ck.check("foreign: every AMQP header type as JSON", hh == want,
                 {k: (hh.get(k), want[k]) for k in want if hh.get(k) != want[k]})
        ck.check("foreign: priority and JSON body", h.get("priority") == 3 and h.get("body") == {"a": 1}, h)
        e = got.get("f-escapes", {})
        ck.check("foreign: a JSON body with escapes and whitespace is the same value",
                 "body" in e and e["body"] == json.loads(sent[2][2]), e)
        ck.check("foreign: a JSON body jansson cannot hold (too big an integer) comes as base64",
                 base64.b64decode(got.get("f-bigint", {}).get("body_base64", "")) == sent[3][2], got.get("f-bigint"))
        ck.check("foreign: a JSON body with a duplicate key comes as base64",
                 base64.b64decode(got.get("f-dup", {}).get("body_base64", "")) == sent[4][2], got.get("f-dup"))
        b = got.get("f-binary", {})
        ck.check("foreign: binary body and a content type that is not UTF-8 as base64",
                 base64.b64decode(b.get("body_base64", "")) == sent[5][2]
                 and b.get("content_type") == {"base64": base64.b64encode(b"x/\xff").decode()}, b)
        n = got.get("f-none", {})
        ck.check("foreign: no content type: null, body as base64, headers {}",
                 n.get("content_type") is None and n.get("headers") == {}
                 and base64.b64decode(n.get("body_base64", "")) == "caf\u00e9".encode(), n)
        ck.check("foreign: attempt headers at the int64 limits: attempt 1000000 and 1 (no overflow)",
                 got.get("f-huge", {}).get("attempt") == 1000000
                 and got.get("f-negative", {}).get("attempt") == 1,
                 (got.get("f-huge", {}).get("attempt"), got.get("f-negative", {}).get("attempt")))
        acks = [{"message_id": k, "lease_id": m["lease_id"]} for k, m in got.items()]
        r = self.st.request(p, "POST", "/queues/%s/messages/ack" % q, {"acks": acks})
        ck.check("foreign: all acked", r.status == 200 and json.loads(r.body).get("acked") == len(acks), r.body)
        time.sleep(0.3)
        ck.check("foreign: the queue is empty after the acks", self.depth(q) == 0, self.depth(q))

    def fields_and_visibility(self, p):
        ck, q = self.ck, self.st.qname("pull")
        self.declare(q)
        self.publish(q, 3, "m")
        t0 = time.time()
        r = self.pull(p, q, max=2, lease_s=20)
        ms = self.msgs(r)
        ck.check("pull: 200 with 2 messages", r.status == 200 and len(ms) == 2, (r.status, r.body[:300]))
        if len(ms) != 2:
            return
        m = ms[0]
        ck.check("pull: message_id from the AMQP property", m.get("message_id") == "m-0", m)
        ck.check("pull: JSON body as JSON", isinstance(m.get("body"), dict) and m["body"].get("id") == "m-0", m)
        ck.check("pull: content_type, headers object, attempt 1",
                 m.get("content_type") == "application/json" and isinstance(m.get("headers"), dict)
                 and m.get("attempt") == 1, m)
        lid = m.get("lease_id", "")
        ck.check("pull: lease_id is <8 hex>-<32 hex>", len(lid) == 41 and lid[8] == "-"
                 and all(c in "0123456789abcdef" for c in lid.replace("-", "")), lid)
        ck.check("pull: lease ids differ", ms[0]["lease_id"] != ms[1]["lease_id"])
        exp = m.get("lease_expires_ms", 0) / 1000.0
        ck.check("pull: lease_expires_ms about now + lease_s", abs(exp - (t0 + 20)) < 3, exp - t0)
        ck.check("pull: lease_expires_at ISO 8601",
                 str(m.get("lease_expires_at", "")).endswith("Z") and "T" in m.get("lease_expires_at", ""), m)
        ck.check("pull: Relayq-Replica header names the lease's replica",
                 r.headers.get("relayq-replica") == lid[:8], r.headers)
        r2 = self.pull(p, q, max=10)
        ids = [x["message_id"] for x in self.msgs(r2)]
        ck.check("leased messages are invisible to a second pull", ids == ["m-2"], ids)
        # ack removes
        a = self.act(p, q, "m-0", "ack", {"lease_id": ms[0]["lease_id"]})
        ck.check("ack: 200", a.status == 200 and a.json.get("acked") is True, (a.status, a.body))
        a2 = self.act(p, q, "m-0", "ack", {"lease_id": ms[0]["lease_id"]})
        ck.check("ack twice: 409 with a reason", a2.status == 409 and "lease" in a2.json.get("error", ""),
                 (a2.status, a2.body))
        a3 = self.act(p, q, "m-9", "ack", {"lease_id": ms[1]["lease_id"]})
        ck.check("ack naming another message: 409", a3.status == 409, (a3.status, a3.body))
        a4 = self.act(p, q, "m-1", "ack", {"lease_id": "0" * 8 + "-" + "0" * 32})
        ck.check("ack of a forged lease id: 409", a4.status == 409, (a4.status, a4.body))
        q_arg = self.st.request(p, "POST", "/queues/%s/messages/m-1/ack?lease_id=%s" % (q, ms[1]["lease_id"]),
                                b"", headers={"Content-Type": "application/json"})
        ck.check("ack with ?lease_id=: 200", q_arg.status == 200, (q_arg.status, q_arg.body))
        m2 = self.msgs(r2)[0]
        a5 = self.act(p, q, "m-2", "ack", {"lease_id": m2["lease_id"]})
        ck.check("ack the third: 200", a5.status == 200, a5.body)
        time.sleep(0.3)
        ck.check("after the acks the queue is empty (ready 0)", self.depth(q) == 0)
        mg = self.mgmt_get(q)
        ck.check("after the acks nothing unacked either (management API)", mg == [] or mg is None, mg)

    def nacks(self, p, qtype):
        ck, q = self.ck, self.st.qname("nack")
        self.declare(q, qtype)
        self.publish(q, 2, "n", body="not json \xff", ctype="text/plain")
        ms = self.msgs(self.pull(p, q, max=2))
        ck.check("%s: raw body as body_base64" % qtype, len(ms) == 2 and "body_base64" in ms[0]
                 and base64.b64decode(ms[0]["body_base64"]).startswith(b"not json"), ms[:1])
        if len(ms) != 2:
            return
        r = self.act(p, q, "n-0", "nack", {"lease_id": ms[0]["lease_id"], "requeue": True})
        ck.check("%s: nack requeue: 200 requeued" % qtype,
                 r.status == 200 and r.json.get("outcome") == "requeued", (r.status, r.body))
        again = self.msgs(self.pull(p, q, max=5))
        ck.check("%s: the requeued message comes back with attempt 2" % qtype,
                 [(x["message_id"], x["attempt"]) for x in again] == [("n-0", 2)], again)
        r = self.act(p, q, "n-1", "nack", {"lease_id": ms[1]["lease_id"], "requeue": False,
                                            "reason": "bad input"})
        ck.check("%s: nack requeue=false: dead_lettered" % qtype,
                 r.status == 200 and r.json.get("outcome") == "dead_lettered", (r.status, r.body))
        time.sleep(0.3)
        ck.check("%s: the message is in <q>.dlq" % qtype, self.depth(q + ".dlq") == 1)
        mg = self.mgmt_get(q + ".dlq")
        if mg is not None:
            hdrs = mg[0].get("properties", {}).get("headers", {}) if mg else {}
            ck.check("%s: the DLQ copy has x-relayq-reason" % qtype,
                     hdrs.get("x-relayq-reason") == "bad input", mg)
        if again:
            self.act(p, q, "n-0", "ack", {"lease_id": again[0]["lease_id"]})

    def max_retries(self, p):
        ck, q = self.ck, self.st.qname("retries")
        self.declare(q)
        self.publish(q, 1, "r")
        outcome, attempts = None, []
        for _ in range(8):
            ms = self.msgs(self.pull(p, q, max=1))
            if not ms:
                break
            attempts.append(ms[0]["attempt"])
            r = self.act(p, q, "r-0", "nack", {"lease_id": ms[0]["lease_id"]})
            outcome = r.json.get("outcome")
            if outcome == "dead_lettered":
                break
        ck.check("after MAX_RETRIES (2) requeues a nack dead-letters", outcome == "dead_lettered"
                 and attempts == [1, 2, 3], (outcome, attempts))
        time.sleep(0.3)
        ck.check("max retries: the message is in <q>.dlq", self.depth(q + ".dlq") == 1)

    def delay(self, p):
        ck, q = self.ck, self.st.qname("delay")
        self.declare(q)
        self.publish(q, 1, "d")
        ms = self.msgs(self.pull(p, q))
        if not ck.check("delay: pulled", len(ms) == 1):
            return
        t0 = time.monotonic()
        r = self.act(p, q, "d-0", "nack", {"lease_id": ms[0]["lease_id"], "delay_ms": 1500})
        ck.check("nack delay_ms: 200 delayed via <q>.delay.1500",
                 r.status == 200 and r.json.get("outcome") == "delayed"
                 and r.json.get("queue") == q + ".delay.1500", (r.status, r.body))
        ck.check("nack delay_ms: not back at once", self.msgs(self.pull(p, q)) == [])
        back = self.msgs(self.pull(p, q, wait_s=10))
        el = time.monotonic() - t0
        ck.check("nack delay_ms: back after 1.5 s (within +1 s)", len(back) == 1 and 1.4 <= el <= 2.6, el)
        ck.info("delay_ms 1500 came back after %.2f s" % el)
        if back:
            ck.check("nack delay_ms: attempt 2", back[0]["attempt"] == 2, back[0])
            self.act(p, q, "d-0", "ack", {"lease_id": back[0]["lease_id"]})

    def expiry_and_extend(self, p):
        ck, q = self.ck, self.st.qname("exp")
        self.declare(q)
        self.publish(q, 2, "e")
        before = qharness.metric(p.metrics(), "producer_lease_expired_total")
        ms = self.msgs(self.pull(p, q, max=2, lease_s=2))
        if not ck.check("expiry: pulled 2", len(ms) == 2):
            return
        # e-1 gets extended to 8 s; e-0 expires after 2 s
        r = self.act(p, q, "e-1", "lease", {"lease_id": ms[1]["lease_id"], "lease_s": 8})
        ck.check("extend: 200 with the new expiry", r.status == 200
                 and r.json.get("lease_expires_ms", 0) / 1000.0 > time.time() + 6, (r.status, r.body))
        time.sleep(3.0)
        again = self.msgs(self.pull(p, q, max=5))
        ck.check("expired lease: the message is delivered again (attempt 2)",
                 [(x["message_id"], x["attempt"]) for x in again] == [("e-0", 2)], again)
        ck.check("extended lease: still invisible past the first expiry",
                 "e-1" not in [x["message_id"] for x in again])
        after = qharness.metric(p.metrics(), "producer_lease_expired_total")
        ck.check("producer_lease_expired_total counted the expiry", after - before >= 1, (before, after))
        r = self.act(p, q, "e-0", "ack", {"lease_id": ms[0]["lease_id"]})
        ck.check("ack of an expired lease: 409", r.status == 409, (r.status, r.body))
        r = self.act(p, q, "e-0", "lease", {"lease_id": ms[0]["lease_id"], "lease_s": 5})
        ck.check("extend of an expired lease: 409", r.status == 409, (r.status, r.body))
        r = self.act(p, q, "e-1", "ack", {"lease_id": ms[1]["lease_id"]})
        ck.check("ack of the extended lease after 3 s: 200", r.status == 200, (r.status, r.body))
        for x in again:
            self.act(p, q, x["message_id"], "ack", {"lease_id": x["lease_id"]})

    def long_poll(self, p):
        ck, q = self.ck, self.st.qname("lp")
        self.declare(q)
        t0 = time.monotonic()
        r = self.pull(p, q, wait_s=1)
        el = time.monotonic() - t0
        ck.check("long-poll: 200 with an empty list after wait_s",
                 r.status == 200 and self.msgs(r) == [] and 0.9 <= el <= 2.0, (r.status, el))
        res = {}

        def waiter():
            s = time.monotonic()
            res["r"] = self.pull(p, q, wait_s=10)
            res["t"] = time.monotonic()
            res["s"] = s

        th = threading.Thread(target=waiter)
        th.start()
        time.sleep(1.0)
        tp = time.monotonic()
        self.publish(q, 1, "w")
        tpub = time.monotonic()
        th.join(15)
        ms = self.msgs(res.get("r")) if res.get("r") else []
        lat = res.get("t", 99) - tp
        # from the publish's end (its confirm): rq_amqp_tool's start-up is not the wake-up
        ck.check("long-poll: wakes when a message arrives (within 500 ms of the publish)",
                 len(ms) == 1 and res.get("t", 99) - tpub < 0.5, (len(ms), lat, tpub - tp))
        ck.info("long-poll wake-up: answered %.1f ms after the publish started (the publish, "
                "rq_amqp_tool start-up included, took %.1f ms)" % (lat * 1000, (tpub - tp) * 1000))
        if ms:
            self.act(p, q, "w-0", "ack", {"lease_id": ms[0]["lease_id"]})
        # a client that leaves its long-poll gets nothing leased
        s = socket.create_connection((HOST, p.port), timeout=5)
        s.sendall(("GET /queues/%s/messages?wait_s=20 HTTP/1.1\r\nHost: x\r\n\r\n" % q).encode())
        time.sleep(0.5)
        s.close()
        time.sleep(0.3)
        self.publish(q, 1, "gone")
        time.sleep(0.5)
        r = self.pull(p, q, max=5)
        ck.check("a client that left its long-poll got nothing leased",
                 [x["message_id"] for x in self.msgs(r)] == ["gone-0"], r.body[:300])
        for x in self.msgs(r):
            self.act(p, q, x["message_id"], "ack", {"lease_id": x["lease_id"]})

    def errors(self, p):
        ck = self.ck
        r = self.pull(p, "no-such-queue-" + self.st.qname())
        ck.check("unknown queue: 404 with a reason", r.status == 404 and "no such queue" in r.json.get("error", ""),
                 (r.status, r.body))
        q = self.st.qname("err")
        self.declare(q)
        r = self.pull(p, q, max=0, lease_s=9999, wait_s=31)
        err = (r.json or {}).get("error", "")
        ck.check("bad parameters: 400 naming each", r.status == 400 and "max" in err
                 and "lease_s" in err and "wait_s" in err, (r.status, r.body))
        r = self.pull(p, q, max="abc")
        ck.check("max=abc: 400", r.status == 400, r.status)
        r = self.pull(p, "bad.dlq")
        ck.check("a derived queue name: 400", r.status == 400, (r.status, r.body))
        r = self.act(p, q, "m", "ack", {})
        ck.check("ack without lease_id: 400 naming it", r.status == 400 and "lease_id" in r.body.decode(),
                 (r.status, r.body))
        r = self.act(p, q, "m", "nack", {"lease_id": "x", "requeue": "yes"})
        ck.check("nack with a bad requeue: 400", r.status == 400, (r.status, r.body))
        r = self.act(p, q, "m", "nack", {"lease_id": "x", "delay_ms": 0})
        ck.check("nack with delay_ms 0: 400", r.status == 400, (r.status, r.body))
        r = self.act(p, q, "m", "lease", {"lease_id": "x", "lease_s": 4000})
        ck.check("extend with lease_s 4000: 400", r.status == 400, (r.status, r.body))
        r = self.act(p, q, "m", "ack", {"lease_id": "nope"})
        ck.check("ack of an unknown lease: 409 with a JSON error", r.status == 409 and "error" in r.json,
                 (r.status, r.body))
        r = self.st.request(p, "DELETE", "/queues/%s/messages" % q)
        ck.check("DELETE on messages: 405", r.status == 405, r.status)

    def acks(self, p, q, items):
        r = self.st.request(p, "POST", "/queues/%s/messages/ack" % q,
                            items if not isinstance(items, list) else {"acks": items})
        try:
            r.json = json.loads(r.body)
        except ValueError:
            r.json = None
        return r

    def leases_gauge(self, p):
        return qharness.metric(p.metrics(), "producer_leases")

    def ack_merge(self, p):
        """Acks merged into multiple frames (producer/queues/ackwin.c) never reach a lease
        still held: three clients lease 100 each, acks come in another order than the
        deliveries (the newest batch first, half of the middle one), one requeue nack, the
        oldest batch expires: exactly the messages not acked come back, each once."""
        ck, q = self.ck, self.st.qname("ackmerge")
        self.declare(q)
        self.publish(q, 300, "am")
        def lease(n, lease_s):  # a fresh consumer's first pulls may bring fewer
            got = []
            for _ in range(50):
                got += self.msgs(self.pull(p, q, max=n - len(got), lease_s=lease_s))
                if len(got) >= n:
                    break
            return got

        t_a = time.monotonic()
        a, b, c = lease(100, 8), lease(100, 60), lease(100, 60)
        if not ck.check("ack merge: 3 x 100 leased", [len(a), len(b), len(c)] == [100] * 3,
                        [len(a), len(b), len(c)]):
            return

        def items(ms):
            return [{"message_id": m["message_id"], "lease_id": m["lease_id"]} for m in ms]

        r1 = self.acks(p, q, items(c))
        r2 = self.acks(p, q, items(b[0::2]))
        nacked = b[1]
        r3 = self.act(p, q, nacked["message_id"], "nack",
                      {"lease_id": nacked["lease_id"], "requeue": True})
        ck.check("ack merge: the newest batch, half the middle one, one nack: all 200",
                 r1.status == 200 and r1.json.get("acked") == 100 and r2.status == 200
                 and r2.json.get("acked") == 50 and r3.status == 200, (r1.body[:80], r2.body[:80],
                                                                       r3.status, r3.body[:80]))
        time.sleep(max(0.0, t_a + 8.5 - time.monotonic()))  # a's leases expire: back they go
        back = []
        for _ in range(20):
            got = self.msgs(self.pull(p, q, max=100, lease_s=60))
            if not got:
                break
            back += got
        want = {m["message_id"] for m in a} | {nacked["message_id"]}
        ids = [m["message_id"] for m in back]
        ck.check("ack merge: exactly the expired batch and the nacked message come back, once "
                 "each (none acked by a merged frame, none lost)", sorted(ids) == sorted(want),
                 "%d back, %d wanted, %d unexpected, %d missing" %
                 (len(ids), len(want), len(set(ids) - want), len(want - set(ids))))
        r4 = self.acks(p, q, items(back) + items(b[3::2]))
        ck.check("ack merge: the rest acked (the middle batch's held half too)",
                 r4.status == 200 and r4.json.get("acked") == len(back) + 49
                 and r4.json.get("failed") == [], r4.body[:200])
        ck.check("ack merge: queue empty, nothing leased", self.depth(q) == 0
                 and self.leases_gauge(p) == 0, (self.depth(q), self.leases_gauge(p)))

    def sweep(self):
        """A queue whose consumer runs with a buffer survives the sweep of idle queue states
        (more than 64 known names): before, its state was freed with the buffer in it, and
        the next pull re-made the consumer under the tag still live, so the broker closed the
        connection (every lease lost), and the buffered deliveries stayed out."""
        ck = self.ck
        p = self.st.producer("sweep", {"LEASE_IDLE_MS": "60000"})
        q = self.st.qname("sweep")
        self.declare(q)
        self.publish(q, 500, "sw")
        ms = []
        for _ in range(50):  # a fresh consumer: its first deliveries may take a while
            ms = ms or self.msgs(self.pull(p, q, max=1, lease_s=60))
        if not ck.check("sweep: pulled 1 of 500", len(ms) == 1, len(ms)):
            return
        r = self.acks(p, q, [{"message_id": ms[0]["message_id"], "lease_id": ms[0]["lease_id"]}])
        missing = [self.pull(p, "%s-none-%d" % (q, i), max=1).status for i in range(70)]
        ck.check("sweep: 70 unknown queue names are 404", set(missing) == {404}, set(missing))
        time.sleep(11)  # the sweep runs every 10 s
        # the consumer kept its buffer (499): the first pull has its 100 at once (with the
        # state freed, it got none: the connection dropped under it)
        got = self.msgs(self.pull(p, q, max=100, lease_s=60))
        ck.check("sweep: after the sweep the queue still pulls (100 of 499)", len(got) == 100,
                 len(got))
        r = self.acks(p, q, [{"message_id": m["message_id"], "lease_id": m["lease_id"]} for m in got])
        p.stop()  # its buffer goes back with the connection
        t0 = time.monotonic()
        while self.depth(q) != 399 and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        ck.check("sweep: acked; once the producer stopped, 399 back in the queue",
                 r.status == 200 and (r.json or {}).get("acked") == 100 and self.depth(q) == 399,
                 (r.status, r.body[:120], self.depth(q)))

    def batch_ack(self, p):
        ck, q = self.ck, self.st.qname("bat")
        self.declare(q)
        self.publish(q, 5, "a")
        ms = self.msgs(self.pull(p, q, max=5, lease_s=30))
        if not ck.check("batch ack: pulled 5", len(ms) == 5, len(ms)):
            return
        g0 = self.leases_gauge(p)
        r = self.acks(p, q, [{"message_id": m["message_id"], "lease_id": m["lease_id"]} for m in ms])
        ck.check("batch ack of 5 good leases: 200 acked 5, failed []", r.status == 200
                 and r.json == {"acked": 5, "failed": []}, (r.status, r.body))
        ck.check("batch ack: Relayq-Replica on the answer",
                 r.headers.get("relayq-replica") == ms[0]["lease_id"][:8], r.headers)
        ck.check("batch ack: the 5 leases are gone (producer_leases -5)",
                 self.leases_gauge(p) == g0 - 5, (g0, self.leases_gauge(p)))
        ck.check("batch ack: queue empty", self.depth(q) == 0)
        r = self.acks(p, q, [{"message_id": ms[0]["message_id"], "lease_id": ms[0]["lease_id"]}])
        ck.check("batch ack again: 200, acked 0, the item failed (not 409)", r.status == 200
                 and r.json.get("acked") == 0 and [f["index"] for f in r.json.get("failed", [])] == [0],
                 (r.status, r.body))
        # a mix: an expired lease, a lease of another message, an unknown lease, two good ones;
        # on a producer of its own, stopped at the end: what it did not ack goes back
        good = {"message_id": "m", "lease_id": "x"}
        self.batch_bad_bodies(p, q, good)
        p = self.st.producer("batmix")
        q2 = self.st.qname("batmix")
        self.declare(q2)
        self.publish(q2, 4, "b")
        short = self.msgs(self.pull(p, q2, max=1, lease_s=1))
        rest = self.msgs(self.pull(p, q2, max=3, lease_s=30))
        if not ck.check("batch mix: pulled 1 + 3", len(short) == 1 and len(rest) == 3,
                        (len(short), len(rest))):
            return
        time.sleep(2.2)
        b0, b1, b2, b3 = short[0], rest[0], rest[1], rest[2]
        items = [{"message_id": b0["message_id"], "lease_id": b0["lease_id"]},   # expired
                 {"message_id": b1["message_id"], "lease_id": b1["lease_id"]},   # good
                 {"message_id": "not-" + b2["message_id"], "lease_id": b2["lease_id"]},  # wrong id
                 {"message_id": b3["message_id"], "lease_id": b3["lease_id"]},   # good
                 {"message_id": "x", "lease_id": "0" * 8 + "-" + "0" * 32}]      # unknown
        g0 = self.leases_gauge(p)
        r = self.acks(p, q2, items)
        failed = (r.json or {}).get("failed", [])
        ck.check("batch mix: 200, acked 2, failed are items 0, 2 and 4", r.status == 200
                 and r.json.get("acked") == 2 and [f.get("index") for f in failed] == [0, 2, 4],
                 (r.status, r.body))
        ck.check("batch mix: each failure names its message and a reason",
                 len(failed) == 3 and failed[0].get("message_id") == b0["message_id"]
                 and "expired" in failed[0].get("error", "") and "not for message" in
                 failed[1].get("error", "") and all(f.get("error") for f in failed), failed)
        ck.check("batch mix: two leases ended (producer_leases -2)", self.leases_gauge(p) == g0 - 2,
                 (g0, self.leases_gauge(p)))
        r = self.act(p, q2, b2["message_id"], "ack", {"lease_id": b2["lease_id"]})
        ck.check("batch mix: the lease named with a wrong message id still holds (ack 200)",
                 r.status == 200, (r.status, r.body))
        again = self.msgs(self.pull(p, q2, max=5))
        ck.check("batch mix: only the expired message comes again",
                 [x["message_id"] for x in again] == [b0["message_id"]], again)
        rc = p.stop()
        self.st.procs.remove(p)
        ck.check("batch mix: after the producer stops, only the unacked (expired) message is in "
                 "the queue (depth 1)", rc == 0 and self.depth(q2) == 1, (rc, self.depth(q2)))

    def batch_bad_bodies(self, p, q, good):
        ck = self.ck
        for body, want, label in [({}, "acks", "no acks"), ({"acks": []}, "acks", "empty acks"),
                                  ({"acks": "x"}, "acks", "acks not an array"),
                                  ({"acks": [good] * 1001}, "acks", "1001 items"),
                                  ({"acks": [good, 5]}, "acks[1]", "an item not an object"),
                                  ({"acks": [good, {"message_id": 5, "lease_id": "x"}]},
                                   "acks[1].message_id", "a numeric message_id"),
                                  ({"acks": [good, good, {"message_id": "m"}]}, "acks[2].lease_id",
                                   "a missing lease_id"),
                                  ({"acks": [{"message_id": "m" * 256, "lease_id": "x"}]},
                                   "acks[0].message_id", "a 256-byte message_id")]:
            r = self.acks(p, q, body)
            ck.check("batch ack, %s: 400 naming %s" % (label, want), r.status == 400
                     and want in (r.json or {}).get("error", ""), (r.status, r.body[:200]))
        r = self.st.request(p, "POST", "/queues/%s/messages/ack" % q, b"not json",
                            {"Content-Type": "application/json"})
        ck.check("batch ack, not JSON: 400", r.status == 400, (r.status, r.body[:200]))
        r = self.st.request(p, "GET", "/queues/%s/messages/ack" % q)
        ck.check("batch ack: GET is 405", r.status == 405, r.status)
        r = self.acks(p, "no-such-" + q, [good])
        ck.check("batch ack on another queue: 200 with the item failed", r.status == 200
                 and r.json.get("acked") == 0 and len(r.json.get("failed", [])) == 1, (r.status, r.body))
        ok = 1000 * [{"message_id": "m", "lease_id": "0" * 8 + "-" + "0" * 32}]
        r = self.acks(p, q, ok)
        ck.check("batch ack of 1000 items: 200, 1000 failed", r.status == 200
                 and len(r.json.get("failed", [])) == 1000, (r.status, r.body[:200]))

    def queue_max_retries(self, p):
        """A queue created with max_retries 1 (POST /queues): the second requeue dead-letters,
        although the producer's MAX_RETRIES is 2."""
        ck, q = self.ck, self.st.qname("qretry")
        r = self.st.request(p, "POST", "/queues", {"name": q, "max_retries": 1})
        if not ck.check("per-queue max_retries: POST /queues 201", r.status == 201, (r.status, r.body)):
            return
        self.publish(q, 1, "r")
        outcome, attempts = None, []
        for _ in range(6):
            ms = self.msgs(self.pull(p, q, max=1))
            if not ms:
                break
            attempts.append(ms[0]["attempt"])
            r = self.act(p, q, "r-0", "nack", {"lease_id": ms[0]["lease_id"]})
            outcome = (r.json or {}).get("outcome")
            if outcome == "dead_lettered":
                break
        ck.check("per-queue max_retries 1: the second nack dead-letters (MAX_RETRIES is 2)",
                 outcome == "dead_lettered" and attempts == [1, 2], (outcome, attempts, r.body))
        ck.check("per-queue max_retries: the reason names max retries (1)",
                 "max retries (1)" in (r.json or {}).get("reason", ""), r.body)

    def lease_limit(self):
        ck, q = self.ck, self.st.qname("limit")
        self.declare(q)
        self.publish(q, 5, "l")
        p4 = self.st.producer("limit", {"LEASE_MAX_OUTSTANDING": "3"})
        ms = self.msgs(self.pull(p4, q, max=5, lease_s=60))
        ck.check("LEASE_MAX_OUTSTANDING 3: a pull of 5 leases 3", len(ms) == 3, len(ms))
        r = self.pull(p4, q, max=1)
        ck.check("LEASE_MAX_OUTSTANDING 3: full, the next pull is 503 with Retry-After",
                 r.status == 503 and r.headers.get("retry-after") == "1", (r.status, r.body))
        if ms:
            self.acks(p4, q, [{"message_id": ms[0]["message_id"], "lease_id": ms[0]["lease_id"]}])
        r = self.pull(p4, q, max=5)
        ck.check("LEASE_MAX_OUTSTANDING 3: after one ack, one more lease", len(self.msgs(r)) == 1,
                 (r.status, r.body[:200]))
        p4.stop()
        self.st.procs.remove(p4)

    def kill9(self):
        ck, q = self.ck, self.st.qname("kill")
        self.declare(q)
        self.publish(q, 5, "k")
        p2 = self.st.producer("kill9")
        ms = self.msgs(self.pull(p2, q, max=5, lease_s=600))
        ck.check("kill -9: 5 leased, ready 0", len(ms) == 5 and self.depth(q) == 0, len(ms))
        p2.proc.send_signal(signal.SIGKILL)
        p2.proc.wait(10)
        self.st.procs.remove(p2)
        deadline, d = time.monotonic() + 20, -1
        while time.monotonic() < deadline:
            d = self.depth(q)
            if d == 5:
                break
            time.sleep(0.2)
        ck.check("kill -9 of the producer: every leased message is back in the queue", d == 5, d)

    def sigterm_drain(self):
        """SIGTERM while a long-poll waits: it gets its answer, and the leases go back."""
        ck, q = self.ck, self.st.qname("term")
        self.declare(q)
        self.publish(q, 1, "t")
        p3 = self.st.producer("term")
        ms = self.msgs(self.pull(p3, q, lease_s=600))
        res = {}
        th = threading.Thread(target=lambda: res.setdefault("r", self.pull(p3, q, wait_s=20)))
        th.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        rc = p3.stop()
        th.join(10)
        self.st.procs.remove(p3)
        r = res.get("r")
        ck.check("SIGTERM: the long-poll is answered, exit 0", r is not None and r.status in (200, 503)
                 and rc == 0 and time.monotonic() - t0 < 8, (r and r.status, rc))
        ck.check("SIGTERM: the leased message is back in the queue", len(ms) == 1 and self.depth(q) == 1)


def main():
    ap = qharness.arg_parser(__doc__)
    ap.add_argument("--only", default="", help="run only the scenario of this name")
    args = ap.parse_args()
    with qharness.Stack(args) as st:
        t = PullTest(st)
        p = st.producer("pull", {"MAX_RETRIES": "2"})
        for name, fn in [("fields", lambda: t.fields_and_visibility(p)),
                         ("foreign", lambda: t.foreign(p)),
                         ("nack quorum", lambda: t.nacks(p, "quorum")),
                         ("nack classic", lambda: t.nacks(p, "classic")),
                         ("max retries", lambda: t.max_retries(p)),
                         ("delay", lambda: t.delay(p)),
                         ("expiry", lambda: t.expiry_and_extend(p)),
                         ("long poll", lambda: t.long_poll(p)),
                         ("errors", lambda: t.errors(p)),
                         ("batch ack", lambda: t.batch_ack(p)),
                         ("ack merge", lambda: t.ack_merge(p)),
                         ("sweep", t.sweep),
                         ("queue max_retries", lambda: t.queue_max_retries(p)),
                         ("lease limit", t.lease_limit),
                         ("kill -9", t.kill9),
                         ("sigterm", t.sigterm_drain)]:
            if args.only and name != args.only:
                continue
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                st.ck.check("%s: no exception" % name, False, repr(e))
    sys.exit(st.ck.summary())


if __name__ == "__main__":
    main()
