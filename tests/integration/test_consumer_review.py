#!/usr/bin/python3
"""Consumer checks of issue 11 against a real RabbitMQ that this script starts and stops.

Checks (each on its own queue and consumer process):
  poison-reply   a message whose "id" (300 bytes) cannot be a reply's message_id, sent with a
                 reply_to between two good ones: the good ones are written and replied to, the
                 poison one is dead-lettered with its reason, nothing is left unacked, and the
                 connection is never dropped (consumer_reconnects_total stays 0).
  oversized-copy a failed message whose headers fill a frame: its retry copy cannot be
                 encoded; it is dead-lettered without the original headers (the connection
                 stays up, the rest of the batch is written).
  dedup          two payloads with the same body "id" and different message_id properties are
                 both written; the same message_id twice is written once; a message without a
                 message_id property is deduplicated on its body id.
  tail-headers   tailed lines with impossible ranges (x-offset INT64_MAX, negative, x-end before
                 x-offset, a chunk whose range is not its body, a range wider than the line) go
                 to the DLQ with a reason, never to the output; a valid one is written.
  rotate-hup     OUTPUT_FILE and the consumer's log are renamed while it runs, then SIGHUP: the
                 consumer stays up, later lines go to the new OUTPUT_FILE and log records to the
                 new log; nothing is lost or written twice across the rotation.
  rotate-restart after a rename and after a copytruncate with the consumer stopped, a restart
                 neither writes NUL bytes nor forgets what was written (no duplicates).
  reconnect      a connection that drops 0.5 s after every successful connect (a proxy cuts
                 it) keeps its backoff: no tight reconnect loop.

Usage: test_consumer_review.py --build-dir build [CHECK...]
Prints one PASS/FAIL line per check and `N passed, M failed`; exit 1 on any failure. Every wait
is bounded; only processes this script started are signalled (by PID); traffic stays on
127.0.0.1. Standard library only (/usr/bin/python3).
"""
import argparse
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_reliability import (  # noqa: E402
    ROOT, Checks, Stack, finish, metrics, read_output, wait_until)


def log(msg):
    print(f"[consumer-review {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# A minimal AMQP 0-9-1 client: publish with any properties and headers (confirmed), basic.get
# with the headers decoded, queue depth. Enough for foreign-publisher tests.

def _ss(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("B", len(b)) + b


def _ls(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def _table(d):
    out = b""
    for k, v in (d or {}).items():
        out += _ss(k)
        if isinstance(v, bool):
            out += b"t" + struct.pack("B", 1 if v else 0)
        elif isinstance(v, int):
            out += b"l" + struct.pack(">q", v)
        else:
            out += b"S" + _ls(v)
    return struct.pack(">I", len(out)) + out


class _Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, n):
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def u(self, fmt):
        n = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(n))[0]

    def ss(self):
        return self.take(self.u("B"))

    def ls(self):
        return self.take(self.u(">I"))

    def value(self):
        t = self.take(1)
        fixed = {b"t": ">B", b"b": ">b", b"B": ">B", b"s": ">h", b"u": ">H", b"I": ">i",
                 b"i": ">I", b"l": ">q", b"L": ">Q", b"f": ">f", b"d": ">d", b"T": ">Q"}
        if t in fixed:
            return self.u(fixed[t])
        if t in (b"S", b"x"):
            return self.ls()
        if t == b"D":
            self.take(5)
            return None
        if t == b"F":
            return self.table()
        if t == b"A":
            sub = _Reader(self.ls())
            vals = []
            while sub.p < len(sub.d):
                vals.append(sub.value())
            return vals
        return None

    def table(self):
        sub = _Reader(self.ls())
        out = {}
        while sub.p < len(sub.d):
            k = sub.ss().decode()
            out[k] = sub.value()
        return out


PROP_BITS = [("content_type", "ss"), ("content_encoding", "ss"), ("headers", "table"),
             ("delivery_mode", ">B"), ("priority", ">B"), ("correlation_id", "ss"),
             ("reply_to", "ss"), ("expiration", "ss"), ("message_id", "ss"), ("timestamp", ">Q"),
             ("type", "ss"), ("user_id", "ss"), ("app_id", "ss"), ("cluster_id", "ss")]


class Amqp:
    def __init__(self, port, timeout=10.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.sendall(b"AMQP\x00\x00\x09\x01")
        self.tag = 0
        self._expect(0, 10, 10)  # connection.start
        self._method(0, 10, 11, _table({"product": "consumer-review"}) + _ss("PLAIN") +
                     _ls(b"\0guest\0guest") + _ss("en_US"))
        tune = self._expect(0, 10, 30)
        self.frame_max = struct.unpack(">I", tune[2:6])[0]
        self._method(0, 10, 31, struct.pack(">HIH", 16, self.frame_max, 0))
        self._method(0, 10, 40, _ss("/") + _ss("") + b"\x00")
        self._expect(0, 10, 41)
        self._method(1, 20, 10, _ss(""))
        self._expect(1, 20, 11)
        self._method(1, 85, 10, b"\x00")  # confirm.select
        self._expect(1, 85, 11)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            b = self.s.recv(n - len(buf))
            if not b:
                raise ConnectionError("broker closed the connection")
            buf += b
        return buf

    def _frame(self):
        t, ch, size = struct.unpack(">BHI", self._recv(7))
        payload = self._recv(size)
        if self._recv(1) != b"\xce":
            raise ConnectionError("bad frame end")
        return t, ch, payload

    def _send(self, t, ch, payload):
        self.s.sendall(struct.pack(">BHI", t, ch, len(payload)) + payload + b"\xce")

    def _method(self, ch, cls, mid, args):
        self._send(1, ch, struct.pack(">HH", cls, mid) + args)

    def _expect(self, ch, cls, mid):
        while True:
            t, c, p = self._frame()
            if t != 1:
                continue
            k, m = struct.unpack(">HH", p[:4])
            if (k, m) == (cls, mid):
                return p[4:]
            if (k, m) in ((10, 50), (20, 40)):
                r = _Reader(p[4:])
                code = r.u(">H")
                raise ConnectionError(f"closed by the broker: {code} {r.ss().decode()}")

    def publish(self, queue, body, **props):
        """Publishes one message (mandatory) and waits for its confirm; props as in PROP_BITS
        (headers: a dict of str/int values)."""
        self._method(1, 60, 40, struct.pack(">H", 0) + _ss("") + _ss(queue) + b"\x01")
        flags, plist = 0, b""
        for i, (name, kind) in enumerate(PROP_BITS):
            if name not in props:
                continue
            flags |= 1 << (15 - i)
            v = props[name]
            plist += _ss(v) if kind == "ss" else _table(v) if kind == "table" else \
                struct.pack(kind, v)
        body = body.encode() if isinstance(body, str) else body
        self._send(2, 1, struct.pack(">HHQH", 60, 0, len(body), flags) + plist)
        for i in range(0, len(body), self.frame_max - 8):
            self._send(3, 1, body[i:i + self.frame_max - 8])
        self.tag += 1
        while True:
            t, c, p = self._frame()
            if t != 1:
                continue
            k, m = struct.unpack(">HH", p[:4])
            if (k, m) == (60, 50):
                raise RuntimeError(f"message to {queue} returned unroutable")
            if (k, m) == (60, 120):
                raise RuntimeError(f"message to {queue} nacked")
            if (k, m) == (60, 80):
                return
            if (k, m) in ((10, 50), (20, 40)):
                raise ConnectionError("closed by the broker")

    def get(self, queue):
        """basic.get with auto-ack: (props dict, body bytes) or None when empty."""
        self._method(1, 60, 70, struct.pack(">H", 0) + _ss(queue) + b"\x01")
        while True:
            t, c, p = self._frame()
            if t != 1:
                continue
            k, m = struct.unpack(">HH", p[:4])
            if (k, m) == (60, 72):
                return None
            if (k, m) == (60, 71):
                break
        t, c, p = self._frame()
        r = _Reader(p)
        r.u(">H"), r.u(">H")
        size, flags = r.u(">Q"), r.u(">H")
        props = {}
        for i, (name, kind) in enumerate(PROP_BITS):
            if flags & (1 << (15 - i)):
                props[name] = r.ss() if kind == "ss" else r.table() if kind == "table" \
                    else r.u(kind)
        body = b""
        while len(body) < size:
            t, c, p = self._frame()
            body += p
        return props, body

    def depth(self, queue):
        """(ready messages, consumers) of an existing queue (passive declare)."""
        self._method(1, 50, 10, struct.pack(">H", 0) + _ss(queue) + b"\x01" + _table({}))
        p = self._expect(1, 50, 11)
        r = _Reader(p)
        r.ss()
        return r.u(">I"), r.u(">I")

    def declare(self, queue):
        self._method(1, 50, 10, struct.pack(">H", 0) + _ss(queue) + b"\x02" + _table({}))
        self._expect(1, 50, 11)


# ---------------------------------------------------------------------------------------------
# helpers

def start_consumer(st, queue, output, logpath=None, port=None, **env):
    """Starts a consumer on `queue` writing `output`, stderr to `logpath`. Waits until ready."""
    import subprocess
    e = dict(st.env)
    e.update(REQUEST_QUEUE=queue, OUTPUT_FILE=output, CONSUMER_BIND="127.0.0.1",
             CONSUMER_PORT=str(st.ports["consumer"]), RABBITMQ_PORT=str(port or st.amqp))
    e.update({k: str(v) for k, v in env.items()})
    logf = open(logpath or os.path.join(st.tmp, f"consumer-{queue}.log"), "a")
    st.procs["consumer"] = subprocess.Popen([os.path.join(st.build, "bin", "consumer")], env=e,
                                            stdout=logf, stderr=logf)
    logf.close()
    st.wait_ready("consumer")


def lines_of(path):
    return read_output(path)[0]


def drain(amqp, queue, limit=100):
    out = []
    for _ in range(limit):
        m = amqp.get(queue)
        if m is None:
            break
        out.append(m)
    return out


def reconnects(st):
    return metrics(st.url("consumer")).get("consumer_reconnects_total", -1)


# ---------------------------------------------------------------------------------------------
# checks

def check_poison_reply(c, st):
    q = "review_poison"
    out = os.path.join(st.tmp, "poison.out")
    start_consumer(st, q, out, BATCH_WAIT_MS=200)
    a = Amqp(st.amqp)
    a.declare("review_poison_replies")
    poison = "p" * 300
    for i, mid in enumerate(["good-1", poison, "good-2"]):
        body = '{"id":"%s","payload":"line %d"}' % (mid, i)
        a.publish(q, body, content_type="application/json", message_id=f"u-{i}",
                  reply_to="review_poison_replies", correlation_id=f"c-{i}", delivery_mode=2)
    got = wait_until(lambda: {b"line 0", b"line 2"}.issubset(lines_of(out)), 10)
    c.check("poison-reply: the good messages of the batch are written", got, f"{lines_of(out)}")
    time.sleep(1.5)
    dlq = drain(a, q + ".dlq")
    reasons = [m[0].get("headers", {}).get("x-relayq-reason", b"") for m in dlq]
    c.check("poison-reply: the poison message is dead-lettered with its reason",
            len(dlq) == 1 and b"255" in reasons[0], f"{len(dlq)} in DLQ, reasons {reasons}")
    c.check("poison-reply: its line is not in the output", b"line 1" not in lines_of(out),
            f"{lines_of(out)}")
    replies = drain(a, "review_poison_replies")
    c.check("poison-reply: the good messages are replied to",
            sorted(m[0].get("correlation_id") for m in replies) == [b"c-0", b"c-2"],
            f"{[m[0].get('correlation_id') for m in replies]}")
    c.check("poison-reply: the connection was never dropped", reconnects(st) == 0,
            f"consumer_reconnects_total {reconnects(st)}")
    st.term("consumer")
    ready, _ = a.depth(q)
    c.check("poison-reply: nothing left in the request queue (all acked)", ready == 0,
            f"{ready} ready after the consumer stopped")
    a.close()


def check_dedup(c, st):
    q = "review_dedup"
    out = os.path.join(st.tmp, "dedup.out")
    start_consumer(st, q, out)
    a = Amqp(st.amqp)
    pub = [("same", "u-1", "payload one"), ("same", "u-2", "payload two"),
           ("other", "u-3", "payload three"), ("other", "u-3", "payload three again")]
    for bid, mid, payload in pub:
        a.publish(q, '{"id":"%s","payload":"%s"}' % (bid, payload),
                  content_type="application/json", message_id=mid, delivery_mode=2)
    # a foreign publisher without a message_id property: deduplicated on the body id
    for payload in ("foreign first", "foreign again"):
        a.publish(q, '{"id":"foreign-1","payload":"%s"}' % payload, delivery_mode=2)
    a.publish(q, '{"id":"end","payload":"the end"}', message_id="u-end")
    wait_until(lambda: b"the end" in lines_of(out), 10)
    time.sleep(0.5)
    lines = lines_of(out)
    c.check("dedup: same body id, different message_id: both written",
            lines.count(b"payload one") == 1 and lines.count(b"payload two") == 1, f"{lines}")
    c.check("dedup: the same message_id twice is written once",
            lines.count(b"payload three") == 1 and b"payload three again" not in lines,
            f"{lines}")
    c.check("dedup: without message_id the body id deduplicates",
            lines.count(b"foreign first") == 1 and b"foreign again" not in lines, f"{lines}")
    st.term("consumer")
    a.close()


def check_tail_headers(c, st):
    q = "review_tail"
    out = os.path.join(st.tmp, "tail.out")
    start_consumer(st, q, out)
    a = Amqp(st.amqp)
    imax = (1 << 63) - 1
    bad = [("INT64_MAX offset", "evil-max", {"x-file": "fid1", "x-offset": imax}),
           ("INT64_MAX offset, chunk", "evil-max-chunk\n",
            {"x-file": "fid1", "x-offset": imax - 3, "x-format": "lines"}),
           ("negative offset", "evil-neg", {"x-file": "fid1", "x-offset": -5}),
           ("end before start", "evil-end", {"x-file": "fid1", "x-offset": 100, "x-end": 50}),
           ("chunk end not its body", "evil-chunk\n",
            {"x-file": "fid1", "x-offset": 0, "x-end": 1 << 40, "x-format": "lines"}),
           ("range wider than the line", "evil-wide",
            {"x-file": "fid1", "x-offset": 0, "x-end": 1 << 40}),
           ("INT64_MAX end", "evil-end-max", {"x-file": "fid1", "x-offset": 0, "x-end": imax})]
    for i, (_, body, hdr) in enumerate(bad):
        a.publish(q, body, content_type="application/octet-stream", message_id=f"fid1:{i}",
                  headers=hdr, delivery_mode=2)
    a.publish(q, "good line", content_type="application/octet-stream", message_id="fid1:0",
              headers={"x-file": "fid1", "x-offset": 0, "x-end": 10}, delivery_mode=2)
    wait_until(lambda: b"good line" in lines_of(out), 10)
    time.sleep(1.0)
    lines = lines_of(out)
    c.check("tail-headers: no forged line reached the output",
            not [x for x in lines if x.startswith(b"evil")], f"{lines}")
    c.check("tail-headers: the valid tailed line is written", b"good line" in lines, f"{lines}")
    dlq = drain(a, q + ".dlq")
    reasons = {m[1]: m[0].get("headers", {}).get("x-relayq-reason", b"") for m in dlq}
    c.check(f"tail-headers: every impossible range is dead-lettered ({len(dlq)}/{len(bad)})",
            len(dlq) == len(bad) and all(r.startswith(b"undecodable") for r in reasons.values()),
            f"{reasons}")
    c.check("tail-headers: the connection was never dropped", reconnects(st) == 0)
    st.term("consumer")
    a.close()


def check_rotate_hup(c, st):
    q = "review_rotate"
    out = os.path.join(st.tmp, "rotate.out")
    clog = os.path.join(st.tmp, "rotate-consumer.log")
    start_consumer(st, q, out, logpath=clog)
    a = Amqp(st.amqp)
    first = [f"before {i}".encode() for i in range(20)]
    second = [f"after {i}".encode() for i in range(20)]
    for i, line in enumerate(first):
        a.publish(q, '{"id":"b%d","payload":"%s"}' % (i, line.decode()), message_id=f"ub-{i}")
    wait_until(lambda: set(first).issubset(lines_of(out)), 10)
    os.rename(out, out + ".1")
    os.rename(clog, clog + ".1")
    p = st.procs["consumer"]
    p.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    c.check("rotate-hup: the consumer survives SIGHUP", p.poll() is None,
            f"exit status {p.returncode}")
    if p.poll() is not None:
        return
    for i, line in enumerate(second):
        a.publish(q, '{"id":"a%d","payload":"%s"}' % (i, line.decode()), message_id=f"ua-{i}")
    wait_until(lambda: set(second).issubset(lines_of(out)), 10)
    old, new = lines_of(out + ".1"), lines_of(out)
    c.check("rotate-hup: lines after SIGHUP are in the new OUTPUT_FILE", new == second,
            f"new file {new[:5]}... ({len(new)} lines)")
    c.check("rotate-hup: the rotated file kept exactly the earlier lines", old == first,
            f"rotated file {len(old)} lines")
    c.check("rotate-hup: SIGHUP reopened the log (records in the new log file)",
            wait_until(lambda: os.path.exists(clog) and os.path.getsize(clog) > 0, 5),
            "no new log file")
    st.term("consumer")
    a.close()


def check_rotate_restart(c, st):
    q = "review_restart"
    out = os.path.join(st.tmp, "restart.out")
    a = Amqp(st.amqp)
    start_consumer(st, q, out)
    first = [f"one {i}".encode() for i in range(10)]
    for i, line in enumerate(first):
        a.publish(q, '{"id":"x%d","payload":"%s"}' % (i, line.decode()), message_id=f"x-{i}")
    wait_until(lambda: set(first).issubset(lines_of(out)), 10)
    st.term("consumer")
    os.rename(out, out + ".1")  # logrotate's default: rename, then a new file
    start_consumer(st, q, out)
    # a redelivery of the first ids must still be recognised, new ones written
    a.publish(q, '{"id":"x0","payload":"one 0"}', message_id="x-0")
    a.publish(q, '{"id":"y0","payload":"two 0"}', message_id="y-0")
    wait_until(lambda: b"two 0" in lines_of(out), 10)
    time.sleep(0.5)
    with open(out, "rb") as f:
        data = f.read()
    c.check("rotate-restart (rename): no NUL bytes, only the new line", data == b"two 0\n",
            f"{data[:80]!r} ({len(data)} bytes)")
    st.term("consumer")
    # copytruncate: the same inode, emptied
    with open(out, "rb") as f, open(out + ".2", "wb") as g:
        g.write(f.read())
    os.truncate(out, 0)
    start_consumer(st, q, out)
    a.publish(q, '{"id":"y0","payload":"two 0"}', message_id="y-0")
    a.publish(q, '{"id":"z0","payload":"three 0"}', message_id="z-0")
    wait_until(lambda: b"three 0" in lines_of(out), 10)
    time.sleep(0.5)
    with open(out, "rb") as f:
        data = f.read()
    c.check("rotate-restart (copytruncate): no NUL bytes, only the new line",
            data == b"three 0\n", f"{data[:80]!r} ({len(data)} bytes)")
    st.term("consumer")
    a.close()


class CuttingProxy:
    """Forwards 127.0.0.1:port to the broker and cuts every connection `cut_s` after accept."""

    def __init__(self, target, cut_s):
        self.target, self.cut_s = target, cut_s
        self.accepts = []
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))  # listens
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _pipe(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass

    def _accept(self):
        self.ls.settimeout(0.2)
        while not self.stop:
            try:
                cl, _ = self.ls.accept()
            except OSError:
                continue
            self.accepts.append(time.monotonic())
            up = socket.create_connection(("127.0.0.1", self.target))
            for x, y in ((cl, up), (up, cl)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

            def cut(s1=cl, s2=up):
                for s in (s1, s2):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                        s.close()
                    except OSError:
                        pass
            threading.Timer(self.cut_s, cut).start()

    def close(self):
        self.stop = True
        self.ls.close()


def check_reconnect(c, st):
    # Twice: the data connection alone (STATUS_STREAM ""), then with the status stream's
    # connection beside it (issue 17), each with its own backoff: about 6 connections in 8 s
    # each; a connection that reset its backoff on every connect would make about 11.
    for stream, most in (("", 10), ("relayq.status.review", 14)):
        q = "review_reconnect"
        out = os.path.join(st.tmp, "reconnect.out")
        proxy = CuttingProxy(st.amqp, 0.5)
        what = "with the status stream" if stream else "the data connection"
        try:
            start_consumer(st, q, out, port=proxy.port, STATUS_STREAM=stream)
            t0 = time.monotonic()
            time.sleep(8.0)
            n = len([t for t in proxy.accepts if t >= t0 - 1])
            c.check(f"reconnect ({what}): a connection cut 0.5 s after each connect keeps its "
                    f"backoff ({n} connections in 8 s, at most {most})", n <= most,
                    f"{n} connections")
            c.check(f"reconnect ({what}): the consumer keeps running",
                    st.procs["consumer"].poll() is None)
        finally:
            st.term("consumer")
            proxy.close()


def check_oversized_copy(c, st):
    q = "review_bigcopy"
    out = os.path.join(st.tmp, "bigcopy.out")
    start_consumer(st, q, out, MAX_RETRIES=3)
    a = Amqp(st.amqp)
    # headers that fill the content header frame: a retry copy (more headers) cannot fit
    big = "h" * (a.frame_max - 150)
    a.publish(q, '{"id":"big-1","payload":"big","fail_times":1}', message_id="u-big",
              headers={"x-big": big}, delivery_mode=2)
    a.publish(q, '{"id":"small-1","payload":"small"}', message_id="u-small", delivery_mode=2)
    wait_until(lambda: b"small" in lines_of(out), 10)
    dlq = wait_until(lambda: drain(a, q + ".dlq"), 10, step=0.5) or []
    hdrs = dlq[0][0].get("headers", {}) if dlq else {}
    c.check("oversized-copy: a failed message whose retry copy cannot be encoded is "
            "dead-lettered, its headers dropped",
            len(dlq) == 1 and b"cannot be encoded" in hdrs.get("x-relayq-reason", b"") and
            hdrs.get("x-relayq-headers-dropped") == 1,
            f"{len(dlq)} in DLQ, headers {[k for k in hdrs]} "
            f"reason {hdrs.get('x-relayq-reason', b'')[:120]}")
    c.check("oversized-copy: the other message is written", b"small" in lines_of(out))
    c.check("oversized-copy: the connection was never dropped", reconnects(st) == 0,
            f"consumer_reconnects_total {reconnects(st)}")
    st.term("consumer")
    a.close()


CHECKS = {"poison-reply": check_poison_reply, "oversized-copy": check_oversized_copy, "dedup": check_dedup,
          "tail-headers": check_tail_headers, "rotate-hup": check_rotate_hup,
          "rotate-restart": check_rotate_restart, "reconnect": check_reconnect}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("checks", nargs="*", default=list(CHECKS))
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    tmp = tempfile.mkdtemp(prefix="rq-consumer-review.")
    os.chmod(tmp, 0o755)  # the broker runs as the rabbitmq user
    c = Checks()
    st = Stack(build, tmp, "review_unused")
    t0 = time.monotonic()
    try:
        st.broker("start")
        for name in args.checks:
            log(f"{name}")
            try:
                CHECKS[name](c, st)
            except Exception as e:  # noqa: BLE001 - any error is a failed check, reported
                c.check(f"{name} ran to the end", False, f"{type(e).__name__}: {e}")
            finally:
                st.term("consumer")
    except Exception as e:  # noqa: BLE001
        c.check("broker started", False, f"{type(e).__name__}: {e}")
    finally:
        st.close()
    return finish(c, tmp, t0, args.keep)


if __name__ == "__main__":
    sys.exit(main())
