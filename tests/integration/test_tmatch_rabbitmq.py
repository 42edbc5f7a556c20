#!/usr/bin/env python3
"""test_tmatch_rabbitmq.py - the topic-pattern table of tests/unit/producer/rt/test_tmatch.c
checked against a real RabbitMQ topic exchange, so that rq_tmatch() (producer/rt/tmatch.c,
which passes that table) matches exactly as the broker routes.

Starts its own broker (scripts/broker.sh, 127.0.0.1, free ports, management plugin), declares
one topic exchange, one queue per distinct pattern bound with it, publishes each key through
the management API (`POST /api/exchanges/%2F/<x>/publish`, whose answer says whether the
message was routed) and compares the broker's answer with the table's. Stops the broker.

    python3 tests/integration/test_tmatch_rabbitmq.py [--mgmt-port M]

With --mgmt-port, the running broker whose management API listens on M (guest/guest) is used
instead (its exchange and queues are named with a random suffix and deleted at the end).

Prints one PASS/FAIL line per case that disagrees and a summary; exit 0 when all agree.
Bounded: broker start <= 120 s, each HTTP call 10 s.
"""
import base64
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE = os.path.join(ROOT, "tests/unit/producer/rt/test_tmatch.c")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import rq_ports  # noqa: E402  (below the ephemeral range)


def cases():
    text = open(TABLE, encoding="utf-8").read()
    body = text[text.index("static const tcase_t cases[]"):]
    body = body[:body.index("};")]
    out = re.findall(r'\{"((?:[^"\\]|\\.)*)", "((?:[^"\\]|\\.)*)", ([01])\}', body)
    return [(p, k, int(m)) for p, k, m in out]


class Mgmt:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d/api" % port
        self.auth = "Basic " + base64.b64encode(b"guest:guest").decode()

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return json.loads(raw) if raw else None


def main():
    given = int(sys.argv[sys.argv.index("--mgmt-port") + 1]) if "--mgmt-port" in sys.argv else 0
    table = cases()
    if len(table) < 50:
        print("FAIL: read only %d cases from %s" % (len(table), TABLE))
        return 1
    amqp, mgmt_port = tuple(rq_ports.free_ports(2)) if not given else (0, given)
    bdir = tempfile.mkdtemp(prefix="rq-tmatch-broker-") if not given else None
    broker = os.path.join(ROOT, "scripts/broker.sh")
    failures = 0
    try:
        if bdir:
            subprocess.run(["bash", broker, "start", bdir, str(amqp), str(mgmt_port)],
                           check=True, timeout=120, stdout=subprocess.DEVNULL)
        m = Mgmt(mgmt_port)
        deadline = time.time() + 60
        while True:
            try:
                m.call("GET", "/overview")
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        tag = "%08x" % random.getrandbits(32)
        x = "tmatch.x." + tag
        m.call("PUT", "/exchanges/%2F/" + x, {"type": "topic", "durable": False,
                                              "auto_delete": False})
        patterns = sorted({p for p, _, _ in table})
        qname = {}
        for i, p in enumerate(patterns):
            q = "tmatch.%s.q%d" % (tag, i)
            qname[p] = q
            m.call("PUT", "/queues/%2F/" + q, {"durable": False, "auto_delete": False})
        for p, k, want in table:
            # a fresh binding set per case: only pattern p bound, so routed == matched
            q = qname[p]
            m.call("POST", "/bindings/%%2F/e/%s/q/%s" % (x, q), {"routing_key": p})
            r = m.call("POST", "/exchanges/%%2F/%s/publish" % x,
                       {"properties": {}, "routing_key": k, "payload": "x",
                        "payload_encoding": "string"})
            got = 1 if r.get("routed") else 0
            props = urllib.parse.quote(
                [b for b in m.call("GET", "/bindings/%%2F/e/%s/q/%s" % (x, q))
                 if b["routing_key"] == p][0]["properties_key"], safe="")
            m.call("DELETE", "/bindings/%%2F/e/%s/q/%s/%s" % (x, q, props))
            if got != want:
                failures += 1
                print("FAIL: pattern %r key %r: broker %d, table %d" % (p, k, got, want))
        for q in qname.values():
            m.call("DELETE", "/queues/%2F/" + q)
        m.call("DELETE", "/exchanges/%2F/" + x)
        print("%s: %d cases, %d disagree with RabbitMQ" % ("PASS" if failures == 0 else "FAIL",
                                                           len(table), failures))
    finally:
        if bdir:
            subprocess.run(["bash", broker, "stop", bdir], timeout=120,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
