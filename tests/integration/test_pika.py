#!/usr/bin/python3
"""Foreign AMQP clients (issue 14), with Debian's python3-pika against a real broker.

  rpc-client  the RabbitMQ RPC tutorial's client (pika BlockingConnection, an exclusive
              server-named callback queue, reply_to and a uuid4 correlation_id, body "30",
              no content type) calls our consumer: it gets "Consumer processed: 30" with its
              correlation id. Also plain text with a newline (text/plain) and JSON without
              relayq's envelope; nothing goes to the DLQ, every message is one output line.
  rpc-worker  a plain pika worker (the tutorial's server: consume the request queue, reply to
              reply_to with the correlation_id, ack) serves POST /produce?wait=true from our
              producer: the HTTP caller gets the worker's reply body.

Usage: test_pika.py --build-dir build [--amqp-port P] [--keep] [CHECK...]
Without --amqp-port it starts (and stops) a broker of its own on a free port
(scripts/broker.sh, 127.0.0.1). Prints one PASS/FAIL line per check and `N passed, M failed`;
exit 1 on any failure (exit 2 when pika is missing: scripts/install-deps.sh installs
python3-pika). Every wait is bounded; only processes this script started are signalled, by
PID.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_payloads import post  # noqa: E402
from test_reliability import Checks, Stack, get_json, log  # noqa: E402

try:
    import pika
except ImportError:
    print("test_pika.py: python3-pika is missing (scripts/install-deps.sh installs it)",
          file=sys.stderr)
    sys.exit(2)

QUEUE = "pika_rpc_queue"


def connect(st):
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=st.amqp, connection_attempts=3, retry_delay=1,
        socket_timeout=10, blocked_connection_timeout=10))


class RpcClient:
    """The RabbitMQ tutorial's RPC client (tutorial six, Python), with a bounded wait."""

    def __init__(self, st):
        self.connection = connect(st)
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(queue=self.callback_queue, on_message_callback=self.on_response,
                                   auto_ack=True)
        self.response = None
        self.props = None
        self.corr_id = None

    def on_response(self, ch, method, props, body):
        if self.corr_id == props.correlation_id:
            self.response = body
            self.props = props

    def call(self, body, content_type=None, timeout=15.0, headers=None):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.channel.basic_publish(exchange="", routing_key=QUEUE,
                                   properties=pika.BasicProperties(reply_to=self.callback_queue,
                                                                   correlation_id=self.corr_id,
                                                                   content_type=content_type,
                                                                   headers=headers),
                                   body=body)
        deadline = time.monotonic() + timeout
        while self.response is None and time.monotonic() < deadline:
            self.connection.process_data_events(time_limit=0.2)
        return self.response

    def close(self):
        try:
            self.connection.close()
        except Exception:  # noqa: BLE001 - closing
            pass


def read_lines(path, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data.count(b"\n") >= n:
            break
        time.sleep(0.1)
    return data


def dlq_depth(st):
    """Messages in the DLQ, read with a passive declare (pika)."""
    conn = connect(st)
    try:
        ch = conn.channel()
        return ch.queue_declare(queue=QUEUE + ".dlq", passive=True).method.message_count
    finally:
        conn.close()


def rpc_client(c, st):
    st.start("consumer")
    client = RpcClient(st)
    calls = [
        ("the tutorial's \"30\", no content type", b"30", None, b"30"),
        ("text/plain with a newline (quoted: one line)", b"fib(30)\nplease", "text/plain",
         b'"fib(30)\\nplease"'),
        ("application/json without the envelope", b'{"n": 0.1, "big": 123456789012345678901}',
         "application/json", b'{"n": 0.1, "big": 123456789012345678901}'),
    ]
    try:
        for name, body, ct, line in calls:
            reply = client.call(body, ct)
            c.check(f"rpc-client [{name}]: reply {b'Consumer processed: ' + line!r} with the "
                    f"correlation id", reply == b"Consumer processed: " + line and
                    client.props is not None and client.props.correlation_id == client.corr_id,
                    f"reply {reply!r}")
    finally:
        client.close()
    data = read_lines(st.output, len(calls))
    want = b"".join(line + b"\n" for _, _, _, line in calls)
    c.check("rpc-client: one output line per message, the payloads as sent", data == want,
            f"{data[:400]!r}")
    c.check("rpc-client: nothing dead-lettered", dlq_depth(st) == 0, f"{dlq_depth(st)}")
    st.term("consumer")


def rpc_worker(c, st):
    st.start("producer")
    pu = st.url("producer")
    got = []
    ready = threading.Event()
    stop = threading.Event()
    errors = []

    def worker():
        try:
            conn = connect(st)
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1)

            def on_request(ch, method, props, body):
                got.append((props, body))
                ch.basic_publish(exchange="", routing_key=props.reply_to,
                                 properties=pika.BasicProperties(
                                     correlation_id=props.correlation_id),
                                 body=b"pika says: " + body)
                ch.basic_ack(delivery_tag=method.delivery_tag)

            # the producer declared the queue (quorum, dead-lettering): consume it as it is
            ch.basic_consume(queue=QUEUE, on_message_callback=on_request)
            ready.set()
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.2)
            conn.close()
        except Exception as e:  # noqa: BLE001 - reported by the checks
            errors.append(repr(e))
            ready.set()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    ready.wait(20)
    c.check("rpc-worker: the pika worker consumes the producer's request queue", not errors,
            "; ".join(errors))
    body = b'{"payload": {"n": 30, "price": 19.99}, "id": "pika-1"}'
    s, ans = post(pu + "/produce?wait=true", body, timeout=30)
    try:
        reply = json.loads(ans).get("reply") if s == 200 else None
    except ValueError:
        reply = None
    sent = got[0][1] if got else b""
    c.check("rpc-worker: POST /produce?wait=true answers 200 with the pika worker's reply",
            s == 200 and reply is not None and reply == "pika says: " + sent.decode(),
            f"status {s}, answer {ans[:300]!r}, the worker got {sent[:200]!r}")
    c.check("rpc-worker: the worker received the payload as sent",
            b'"payload":{"n": 30, "price": 19.99}' in sent, f"{sent[:300]!r}")
    props = got[0][0] if got else None
    c.check("rpc-worker: the request carried reply_to, correlation_id and message_id",
            props is not None and props.reply_to and props.correlation_id and
            props.message_id == "pika-1", f"{props}")
    s, body = get_json(pu + "/health/ready")
    c.check("rpc-worker: the producer stays ready", s == 200, f"{s} {body}")
    stop.set()
    t.join(10)


TP_RE = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
CALLER_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def post_headers(url, body, headers, timeout=20):
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", u.path + ("?" + u.query if u.query else ""), body=body,
                     headers=dict({"Content-Type": "application/json"}, **headers))
        r = conn.getresponse()
        return r.status, r.read()
    except OSError as e:
        return 0, str(e).encode()
    finally:
        conn.close()


def trace(c, st):
    """W3C trace context through the producer (issue 14): a pika consumer of the request queue
    sees, for a request with traceparent + tracestate, a traceparent in the caller's trace
    with a new parent id (the producer's span) and the caller's tracestate; without one, or
    with a malformed one, a valid traceparent of a new trace and no tracestate."""
    import re
    st.start("producer")
    pu = st.url("producer")
    cases = [("with", {"traceparent": CALLER_TP, "tracestate": "congo=t61rcWkgMzE"}),
             ("without", {}),
             ("malformed", {"traceparent": "00-xyz-01", "tracestate": "congo=t61rcWkgMzE"})]
    for name, hdrs in cases:
        s, ans = post_headers(pu + "/produce", b'{"payload": "t", "id": "trace-%s"}' %
                              name.encode(), hdrs)
        c.check(f"trace: POST /produce {name} a traceparent -> 201", s == 201, f"{s} {ans!r}")
    conn = connect(st)
    ch = conn.channel()
    seen = {}
    deadline = time.monotonic() + 15
    while len(seen) < len(cases) and time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue=QUEUE, auto_ack=True)
        if method is None:
            time.sleep(0.1)
            continue
        seen[props.message_id] = props.headers or {}
    conn.close()

    def hdr(h, k):
        v = h.get(k)
        return v.decode() if isinstance(v, bytes) else v

    h = seen.get("trace-with", {})
    tp = hdr(h, "traceparent") or ""
    c.check("trace: the message is in the caller's trace, on a span of the producer's",
            re.match(TP_RE, tp) is not None and tp[:36] == CALLER_TP[:36] and
            tp[36:52] != CALLER_TP[36:52] and tp[52:] == CALLER_TP[52:], f"{tp!r}")
    c.check("trace: the caller's tracestate is carried", hdr(h, "tracestate") ==
            "congo=t61rcWkgMzE", f"{h}")
    for name in ("without", "malformed"):
        h = seen.get("trace-" + name, {})
        tp = hdr(h, "traceparent") or ""
        c.check(f"trace: {name} a traceparent, the message starts a new trace",
                re.match(TP_RE, tp) is not None and tp[3:35] != CALLER_TP[3:35] and
                "tracestate" not in h, f"{h}")


def trace_consumer(c, st):
    """W3C trace context through the consumer (issue 14): a reply carries the request's
    traceparent and tracestate back, and the consumer's log lines about a message carry its
    trace id (a message dead-lettered as undecodable logs one such line)."""
    st.start("consumer")
    client = RpcClient(st)
    tp = CALLER_TP
    try:
        reply = client.call(b"30", headers={"traceparent": tp, "tracestate": "congo=t61"})
        h = (client.props.headers or {}) if client.props is not None else {}
        got = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h.items()}
        c.check("trace-consumer: the reply carries the request's traceparent and tracestate",
                reply == b"Consumer processed: 30" and got.get("traceparent") == tp and
                got.get("tracestate") == "congo=t61", f"reply {reply!r}, headers {got}")
        other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        client.channel.basic_publish(
            exchange="", routing_key=QUEUE, body=b"{broken",
            properties=pika.BasicProperties(content_type="application/json", message_id="tr-bad",
                                            headers={"traceparent": other}))
        deadline = time.monotonic() + 15
        found = False
        while not found and time.monotonic() < deadline:
            with open(os.path.join(st.tmp, "consumer.log"), encoding="utf-8",
                      errors="replace") as f:
                for ln in f:
                    if "tr-bad" in ln:
                        try:
                            found = json.loads(ln).get("trace_id") == other[3:35]
                        except ValueError:
                            pass
            time.sleep(0.2)
        c.check("trace-consumer: the consumer's log line about a message carries its trace_id",
                found, "no line about tr-bad with trace_id %s in consumer.log" % other[3:35])
    finally:
        client.close()
    st.term("consumer")


CHECKS = {"rpc-client": rpc_client, "rpc-worker": rpc_worker, "trace": trace,
          "trace-consumer": trace_consumer}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checks", nargs="*", choices=[[]] + sorted(CHECKS), default=[])
    ap.add_argument("--build-dir", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--amqp-port", type=int, help="use this broker (else start one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    tmp = tempfile.mkdtemp(prefix="rq-pika-")
    os.chmod(tmp, 0o755)  # the broker (user rabbitmq) must reach its folder inside
    c = Checks()
    st = Stack(build, tmp, QUEUE, args.amqp_port, {"REPLY_TIMEOUT_MS": "15000"})
    t0 = time.monotonic()
    try:
        if st.own_broker:
            log(f"starting a broker on 127.0.0.1:{st.amqp}")
            st.broker("start")
        for name in args.checks or sorted(CHECKS):
            try:
                CHECKS[name](c, st)
            except Exception as e:  # noqa: BLE001 - reported as a failure
                c.check(f"{name} ran to the end", False, repr(e))
            for p in list(st.procs):
                st.term(p)
    finally:
        st.close()
    log(f"{time.monotonic() - t0:.1f} s; scratch {tmp}")
    if not args.keep and c.failed == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{c.passed} passed, {c.failed} failed", flush=True)
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
