#!/usr/bin/python3
"""The consumer's lifecycle events on the status stream and its idempotency key (issue 17).

On a broker of this script's own (scripts/broker.sh, 127.0.0.1), a consumer (HANDLER echo,
OUTPUT_FILE, STATUS_STREAM set to a stream of this run, STATUS_REPLY_MAX 64, RETRY_BASE_MS
100) and messages published with python3-pika; the stream is read back with pika (basic.qos,
x-stream-offset "first", manual acks). Scenarios:
  good        x-relayq-uid and reply_to: delivered (attempt 1, the uid) and replied (the
              reply, as the caller got it), id = message_id, queue = the request queue,
              src = consumer:<host>:<pid>
  retry       fail_times 1: delivered(1), retried(1, the simulated failure), delivered(2),
              replied, in that order
  undecodable invalid JSON: dead_lettered (attempt 1, "undecodable: invalid JSON..."), no
              delivered
  truncated   a reply over STATUS_REPLY_MAX: the first 64 bytes, truncated, reply_len the
              whole length
  idem        two messages with one x-relayq-idem and two uids: one line in OUTPUT_FILE, both
              acked (the queue empty) and both replied to (two replied events)
  off         STATUS_STREAM="" (the stream deleted first): the consumer processes a message
              and declares no stream at all
Usage: test_consumer_events.py --build-dir build [--keep] [SCENARIO ...] (default: all).
Prints PASS/FAIL lines and `N passed, M failed`; exit 1 on any failure, 2 without pika.
Bounded: every wait has a deadline (about 60 s in all); only processes this script started
are signalled, by PID.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_reliability import Checks, Stack, finish, log, metrics, wait_until  # noqa: E402

try:
    import pika
except ImportError:
    print("python3-pika is missing (apt-get install python3-pika)")
    sys.exit(2)

REPLY_MAX = 64


class Amqp:
    """One pika connection: publishing, the reply queue, reading the status stream."""

    def __init__(self, port, queue, stream):
        self.conn = pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=port, heartbeat=30, blocked_connection_timeout=30))
        self.ch = self.conn.channel()
        self.queue, self.stream = queue, stream
        self.replies = {}
        r = self.ch.queue_declare(queue="", exclusive=True)
        self.reply_q = r.method.queue
        self.ch.basic_consume(self.reply_q, self._on_reply, auto_ack=True)
        self.events = []
        self.sch = None

    def _on_reply(self, ch, method, props, body):
        self.replies[props.correlation_id] = body

    def publish(self, body, message_id, headers=None, reply=True, content_type="application/json"):
        props = pika.BasicProperties(content_type=content_type, message_id=message_id,
                                     delivery_mode=2, headers=headers or {},
                                     reply_to=self.reply_q if reply else None,
                                     correlation_id=message_id if reply else None)
        self.ch.basic_publish("", self.queue, body if isinstance(body, bytes) else body.encode(),
                              props)

    def exists(self, name):
        ch = self.conn.channel()
        try:
            ch.queue_declare(queue=name, passive=True)
            ch.close()
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False

    def depth(self, name):
        ch = self.conn.channel()
        n = ch.queue_declare(queue=name, passive=True).method.message_count
        ch.close()
        return n

    def read_stream(self):
        """Starts reading the stream from its first event (call once it exists)."""
        self.sch = self.conn.channel()
        self.sch.basic_qos(prefetch_count=200)
        self.sch.basic_consume(self.stream, self._on_event, auto_ack=False,
                               arguments={"x-stream-offset": "first"})

    def _on_event(self, ch, method, props, body):
        # one stream message holds one event per line (the consumer packs a commit's events)
        for line in body.split(b"\n"):
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"bad": line[:200]})
        ch.basic_ack(method.delivery_tag)

    def pump(self, seconds=0.1):
        self.conn.process_data_events(time_limit=seconds)

    def wait(self, cond, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            self.pump(0.1)
        return cond()

    def of(self, mid):
        return [e for e in self.events if e.get("id") == mid]

    def close(self):
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - best effort
            pass


def kinds(evs):
    return [e.get("ev") for e in evs]


def good(c, st, a, tag):
    mid = f"good-{tag}"
    a.publish(json.dumps({"id": mid, "payload": "hello"}), mid, {"x-relayq-uid": "uid-good"})
    ok = a.wait(lambda: "replied" in kinds(a.of(mid)) and mid in a.replies, 15)
    evs = a.of(mid)
    c.check(f"good: delivered then replied ({kinds(evs)})",
            ok and kinds(evs) == ["delivered", "replied"])
    if len(evs) < 2:
        return
    d, r = evs[0], evs[1]
    c.check("good: delivered attempt 1, the uid, the request queue",
            d.get("attempt") == 1 and d.get("uid") == "uid-good" and d.get("queue") == st.queue,
            json.dumps(d))
    src = f":{st.procs['consumer'].pid}"
    c.check(f"good: src consumer:<host>:<pid> ({d.get('src')})",
            str(d.get("src", "")).startswith("consumer:") and str(d.get("src")).endswith(src))
    c.check("good: ts is the wall clock (ms)", abs(d.get("ts", 0) / 1000 - time.time()) < 60)
    c.check("good: replied carries the reply the caller got",
            r.get("reply", "").encode() == a.replies.get(mid) == b"Consumer processed: hello"
            and not r.get("truncated") and r.get("uid") == "uid-good", json.dumps(r))


def retry(c, st, a, tag):
    mid = f"retry-{tag}"
    a.publish(json.dumps({"id": mid, "payload": "again", "fail_times": 1}), mid,
              {"x-relayq-uid": "uid-retry"})
    ok = a.wait(lambda: "replied" in kinds(a.of(mid)), 20)
    evs = a.of(mid)
    c.check(f"retry: delivered, retried, delivered, replied ({kinds(evs)})",
            ok and kinds(evs) == ["delivered", "retried", "delivered", "replied"])
    if len(evs) == 4:
        c.check("retry: attempts 1, 1, 2",
                [evs[0].get("attempt"), evs[1].get("attempt"), evs[2].get("attempt")] == [1, 1, 2],
                json.dumps(evs[:3]))
        c.check("retry: retried says why", "simulated failure" in evs[1].get("error", ""),
                json.dumps(evs[1]))
        c.check("retry: every event keeps the uid",
                all(e.get("uid") == "uid-retry" for e in evs), json.dumps(evs))


def undecodable(c, st, a, tag):
    mid = f"bad-{tag}"
    a.publish("{not json", mid, {"x-relayq-uid": "uid-bad"}, reply=False)
    ok = a.wait(lambda: "dead_lettered" in kinds(a.of(mid)), 15)
    evs = a.of(mid)
    c.check(f"undecodable: dead_lettered only ({kinds(evs)})",
            ok and kinds(evs) == ["dead_lettered"])
    if evs:
        e = evs[0]
        c.check("undecodable: the reason, attempt 1, the uid",
                e.get("error", "").startswith("undecodable: invalid JSON") and
                e.get("attempt") == 1 and e.get("uid") == "uid-bad", json.dumps(e))


def truncated(c, st, a, tag):
    mid = f"long-{tag}"
    payload = "z" * 200
    a.publish(json.dumps({"id": mid, "payload": payload}), mid)
    ok = a.wait(lambda: "replied" in kinds(a.of(mid)) and mid in a.replies, 15)
    r = [e for e in a.of(mid) if e.get("ev") == "replied"]
    full = a.replies.get(mid, b"")
    c.check("truncated: the caller got the whole reply", ok and len(full) == 220, len(full))
    if r:
        e = r[0]
        c.check(f"truncated: the event holds the first {REPLY_MAX} bytes, truncated, "
                f"reply_len {len(full)}",
                e.get("reply", "").encode() == full[:REPLY_MAX] and e.get("truncated") is True
                and e.get("reply_len") == len(full), json.dumps(e))
    else:
        c.check("truncated: a replied event", False)


def idem(c, st, a, tag):
    m1, m2 = f"idem1-{tag}", f"idem2-{tag}"
    key = f"order-{tag}"
    a.publish(json.dumps({"id": m1, "payload": f"idem-first-{tag}"}), m1,
              {"x-relayq-uid": "uid-i1", "x-relayq-idem": key})
    ok1 = a.wait(lambda: m1 in a.replies, 15)
    a.publish(json.dumps({"id": m2, "payload": f"idem-second-{tag}"}), m2,
              {"x-relayq-uid": "uid-i2", "x-relayq-idem": key})
    ok2 = a.wait(lambda: m2 in a.replies, 15)
    c.check("idem: both replied to", ok1 and ok2, str(sorted(a.replies)))
    a.wait(lambda: "replied" in kinds(a.of(m2)), 10)
    c.check("idem: a replied event for each",
            "replied" in kinds(a.of(m1)) and "replied" in kinds(a.of(m2)))
    with open(st.output, "rb") as f:
        lines = [ln for ln in f.read().split(b"\n") if tag.encode() in ln and b"idem-" in ln]
    c.check(f"idem: one line in OUTPUT_FILE ({lines})",
            lines == [f"idem-first-{tag}".encode()])
    c.check("idem: both acked (the queue is empty)",
            wait_until(lambda: a.depth(st.queue) == 0, 10), a.depth(st.queue))


def off(c, st, a, tag):
    st.term("consumer")
    a.close()
    a2 = Amqp(st.amqp, st.queue, st.stream)
    try:
        a2.ch.queue_delete(st.stream)
        st.start("consumer", STATUS_STREAM="")
        mid = f"off-{tag}"
        a2.publish(json.dumps({"id": mid, "payload": f"off-line-{tag}"}), mid)
        ok = a2.wait(lambda: mid in a2.replies, 15)
        c.check("off: processed and replied to with STATUS_STREAM=\"\"", ok)
        time.sleep(1)
        streams = [ln for ln in st.ctl("list_queues", "name", "type", "--quiet").splitlines()
                   if ln.split()[-1:] == ["stream"]]
        c.check(f"off: no stream declared ({streams})", streams == [] and
                not a2.exists(st.stream) and not a2.exists("relayq.status"))
        m = metrics(st.url("consumer"))
        c.check("off: no status metrics series",
                not any(k.startswith("status_events_appended_total{") for k in m), "")
    finally:
        a2.close()


SCENARIOS = {"good": good, "retry": retry, "undecodable": undecodable, "truncated": truncated,
             "idem": idem}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("scenarios", nargs="*", help=" ".join(list(SCENARIOS) + ["off"]))
    args = ap.parse_args()
    names = args.scenarios or list(SCENARIOS) + ["off"]
    unknown = [n for n in names if n not in SCENARIOS and n != "off"]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}")
    c = Checks()
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="relayq-cev.")
    os.chmod(tmp, 0o755)
    tag = str(os.getpid())
    st = Stack(os.path.abspath(args.build_dir), tmp, f"cev_{tag}",
               extra_env={"RETRY_BASE_MS": "100", "STATUS_REPLY_MAX": str(REPLY_MAX)})
    st.stream = f"cev.status.{tag}"
    a = None
    try:
        st.broker("start")
        st.start("consumer", STATUS_STREAM=st.stream)
        a = Amqp(st.amqp, st.queue, st.stream)
        c.check("the consumer declares the status stream",
                wait_until(lambda: a.exists(st.stream), 15))
        a.read_stream()
        for name in names:
            if name == "off":
                continue
            log(f"scenario {name}")
            try:
                SCENARIOS[name](c, st, a, tag)
            except Exception as e:  # noqa: BLE001 - a failure; the cleanup goes on
                c.check(f"{name} ran to the end", False, f"{type(e).__name__}: {e}")
        m = metrics(st.url("consumer"))
        n = sum(v for k, v in m.items() if k.startswith("status_events_appended_total"))
        c.check(f"status_events_appended_total counts the events ({n:.0f})", n >= len(a.events) > 0)
        if "off" in names:
            log("scenario off")
            try:
                off(c, st, a, tag)
            except Exception as e:  # noqa: BLE001
                c.check("off ran to the end", False, f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001
        c.check("the stack started", False, f"{type(e).__name__}: {e}")
    finally:
        if a is not None:
            a.close()
        rc, _ = st.term("consumer")
        c.check(f"the consumer exits 0 on SIGTERM ({rc})", rc == 0)
        st.close()
        with open(os.path.join(tmp, "consumer.log"), errors="replace") as f:
            bad = [ln for ln in f if "Sanitizer" in ln or "runtime error:" in ln]
        c.check("no sanitizer report in the consumer's log", not bad, "".join(bad[:3]))
    sys.exit(finish(c, tmp, t0, args.keep, ("consumer",), "consumer events"))


if __name__ == "__main__":
    main()
