#!/usr/bin/python3
"""WebSocket subscriptions (issue 18, RFC 6455) against a real broker and a real producer.

Starts a private broker (management plugin) unless --amqp-port is given, and its own producer
(RT_HEARTBEAT_S=2, RT_SEND_BUFFER_BYTES=65536, WS_MAX_FRAME_BYTES=65536). With the Debian
python3-websockets client (10.4) and raw sockets for what a library will not send:
  - the handshake: 101 with the right Sec-WebSocket-Accept; 400 without a key; 426 with
    Sec-WebSocket-Version: 13 for version 8;
  - topic /ws: published messages arrive as text frames {"event_id": ..., "topic", "payload"};
    ?bind= patterns apply;
  - queue /ws?ack=client: the unacked messages go back to the queue when the socket closes,
    the acked ones do not; /ws (auto): acked once written, nothing goes back;
  - ping/pong both ways (the client's ping answered; the server's pings answered by the
    library keep the socket open past 2 x RT_HEARTBEAT_S); a raw client that never answers
    pings is closed 1008 after 2 x RT_HEARTBEAT_S;
  - an unmasked client frame -> close 1002; an oversized frame -> close 1009 (raw and with
    the library); the metrics producer_rt_ws_protocol_errors_total{code} count them;
  - a slow reader (stops reading; on a second producer with RT_HEARTBEAT_S=30) is closed
    1008 "slow_consumer" while a fast one gets all 1500 4-KB messages, and the producer's
    RSS stays bounded;
  - producer_rt_ws_connections goes back to 0.
Bounded in time; needs python3-websockets (apt-get install -y python3-websockets).
"""

import asyncio
import base64
import hashlib
import json
import os
import secrets
import socket
import struct
import sys
import threading
import time
import urllib.parse

import qharness

try:
    import websockets
except ImportError:  # pragma: no cover
    print("test_rt_ws: python3-websockets is missing (apt-get install -y python3-websockets)")
    sys.exit(1)

HOST = "127.0.0.1"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SA = secrets.token_hex(12)
HEARTBEAT_S = 2
MAX_FRAME = 65536


def q(s):
    return urllib.parse.quote(s, safe="")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return -1


class RawWs:
    """A WebSocket client over a raw socket: the handshake, masked (or not) frames out, server
    frames in."""

    def __init__(self, port, path, headers=None, rcvbuf=0, version="13", key=True, timeout=10):
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect((HOST, port))
        self.key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Version: %s\r\n" % (path, HOST, version))
        if key:
            req += "Sec-WebSocket-Key: %s\r\n" % self.key
        for k, v in (headers or {}).items():
            req += "%s: %s\r\n" % (k, v)
        self.s.sendall((req + "\r\n").encode())
        self.buf, self.eof = b"", False
        while b"\r\n\r\n" not in self.buf and self._fill(timeout):
            pass
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
        self.headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        want = base64.b64encode(hashlib.sha1((self.key + GUID).encode()).digest()).decode()
        self.accept_ok = self.headers.get("sec-websocket-accept") == want

    def _fill(self, timeout):
        self.s.settimeout(timeout)
        try:
            d = self.s.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def send(self, op, payload=b"", mask=True, fin=True, length=None):
        n = len(payload) if length is None else length
        b0 = (0x80 if fin else 0) | op
        mb = 0x80 if mask else 0
        if n <= 125:
            h = bytes([b0, mb | n])
        elif n <= 0xFFFF:
            h = bytes([b0, mb | 126]) + struct.pack(">H", n)
        else:
            h = bytes([b0, mb | 127]) + struct.pack(">Q", n)
        if mask:
            m = os.urandom(4)
            h += m
            payload = bytes(c ^ m[i % 4] for i, c in enumerate(payload))
        self.s.sendall(h + payload)

    def frame(self, timeout=10.0):
        """(opcode, payload) of the next server frame; None at EOF or after the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                b0, b1 = self.buf[0], self.buf[1]
                n, at = b1 & 0x7F, 2
                if n == 126 and len(self.buf) >= 4:
                    n, at = struct.unpack(">H", self.buf[2:4])[0], 4
                elif n == 127 and len(self.buf) >= 10:
                    n, at = struct.unpack(">Q", self.buf[2:10])[0], 10
                if (b1 & 0x7F) < 126 or at > 2:
                    if len(self.buf) >= at + n:
                        pl, self.buf = self.buf[at:at + n], self.buf[at + n:]
                        return b0 & 0x0F, pl
            left = deadline - time.monotonic()
            if left <= 0 or not self._fill(min(left, 5)):
                if time.monotonic() >= deadline or self.eof:
                    return None

    def close_code(self, timeout=10.0):
        """The code of the server's close frame (skipping other frames), or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = self.frame(deadline - time.monotonic())
            if f is None:
                return None
            if f[0] == 8:
                return (struct.unpack(">H", f[1][:2])[0] if len(f[1]) >= 2 else 1005,
                        f[1][2:].decode("utf-8", "replace"))
        return None

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class WsTest:
    def __init__(self, st):
        self.st, self.ck = st, st.ck
        self.adm = qharness.bearer(SA)

    def req(self, p, method, path, body=None, timeout=15.0):
        return self.st.request(p, method, path, body, self.adm, timeout=timeout)

    def url(self, p, path):
        return "ws://%s:%d%s" % (HOST, p.port, path)

    def topic(self, p):
        name = self.st.qname("t")
        deadline = time.monotonic() + 30  # the hub connects on its own after /health/ready
        while True:
            r = self.req(p, "POST", "/topics", {"name": name})
            if r.status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.ck.check("POST /topics: 201", r.status == 201, r)
        return name

    def publish(self, p, t, msgs):
        r = self.req(p, "POST", "/topics/%s/messages" % q(t), {"messages": msgs})
        return r

    async def recv_json(self, ws, timeout=10.0):
        m = await asyncio.wait_for(ws.recv(), timeout)
        return json.loads(m)

    # ---- scenarios ----
    def handshake(self, p, name):
        ck = self.ck
        r = RawWs(p.port, "/topics/%s/ws?access_token=%s" % (name, SA))
        ck.check("handshake: 101 with the right Sec-WebSocket-Accept",
                 r.status == 101 and r.accept_ok and "websocket" in
                 r.headers.get("upgrade", "").lower(), (r.status, r.headers))
        r.send(8, struct.pack(">H", 1000))
        code = r.close_code(5)
        ck.check("client close 1000: echoed 1000", code is not None and code[0] == 1000, code)
        r.close()
        r = RawWs(p.port, "/topics/%s/ws?access_token=%s" % (name, SA), key=False)
        ck.check("handshake without Sec-WebSocket-Key: 400", r.status == 400, r.status)
        r.close()
        r = RawWs(p.port, "/topics/%s/ws?access_token=%s" % (name, SA), version="8")
        ck.check("handshake with version 8: 426 + Sec-WebSocket-Version: 13",
                 r.status == 426 and r.headers.get("sec-websocket-version") == "13",
                 (r.status, r.headers))
        r.close()

    async def topic_frames(self, p, name):
        ck = self.ck
        async with websockets.connect(self.url(p, "/topics/%s/ws?bind=a.*" % name),
                                      extra_headers=self.adm, open_timeout=10) as ws:
            await asyncio.sleep(0.5)  # the group queue is bound once ready (101 after ready)
            r = self.publish(p, name, [{"payload": {"i": i}, "routing_key": rk, "id": "m%d" % i}
                                       for i, rk in enumerate(["a.x", "b.x", "a.y", "a.z.w"])])
            ck.check("publish 4 to the topic: 201", r.status == 201, r)
            got = [await self.recv_json(ws) for _ in range(2)]
            ck.check("topic /ws ?bind=a.*: the 2 matching messages as text frames",
                     [g.get("id") for g in got] == ["m0", "m2"] and
                     all(g.get("topic") == name for g in got), got)
            ck.check("each frame starts with event_id, 1, 2 (the member's counter)",
                     [g.get("event_id") for g in got] == ["1", "2"], got)
            ck.check("payload spliced as JSON", got[0].get("payload") == {"i": 0}, got[0])
            try:
                extra = await asyncio.wait_for(ws.recv(), 1.0)
            except asyncio.TimeoutError:
                extra = None
            ck.check("no frame for the non-matching keys", extra is None, extra)
            # ping/pong, client side
            t0 = time.monotonic()
            pong = await ws.ping(b"hello")
            await asyncio.wait_for(pong, 5)
            ck.check("client ping: pong within 5 s", True, time.monotonic() - t0)
            # the server pings every RT_HEARTBEAT_S; the library answers: still open later
            await asyncio.sleep(2 * HEARTBEAT_S + 1.5)
            r = self.publish(p, name, [{"payload": "late", "routing_key": "a.late"}])
            g = await self.recv_json(ws)
            ck.check("open past 2 x RT_HEARTBEAT_S (server pings answered)",
                     g.get("routing_key") == "a.late", g)

    async def queue_client_acks(self, p):
        ck = self.ck
        qn = self.st.qname("jobs")
        r = self.req(p, "POST", "/queues", {"name": qn})
        ck.check("queue for /ws: 201", r.status == 201, r)
        r = self.req(p, "POST", "/queues/%s/messages" % qn,
                     {"messages": [{"payload": {"i": i}, "id": "c%d" % i} for i in range(6)]})
        ck.check("6 messages into the queue: 201", r.status == 201, r)
        async with websockets.connect(self.url(p, "/queues/%s/ws?ack=client" % qn),
                                      extra_headers=self.adm, open_timeout=10) as ws:
            got = [await self.recv_json(ws) for _ in range(6)]
            ck.check("queue /ws ?ack=client: the 6 messages with queue and redelivered",
                     sorted(g.get("id") for g in got) == ["c%d" % i for i in range(6)] and
                     all(g.get("queue") == qn and g.get("redelivered") is False for g in got),
                     got)
            acked = sorted(got, key=lambda g: g["id"])[:3]
            for g in acked:
                await ws.send(json.dumps({"ack": g["event_id"]}))
            await asyncio.sleep(1.0)  # the acks reach the broker (rq_rt_ack is asynchronous)
        await asyncio.sleep(1.0)
        r = self.req(p, "GET", "/queues/%s/messages?max=10&wait_s=1" % qn)
        back = sorted(m.get("message_id") for m in
                      (r.json() or {}).get("messages", [])) if r.status == 200 else r
        ck.check("socket closed: the 3 unacked went back, the 3 acked did not",
                 back == ["c3", "c4", "c5"], back)
        for m in (r.json() or {}).get("messages", []) if r.status == 200 else []:
            self.req(p, "POST", "/queues/%s/messages/%s/ack" % (qn, q(m["message_id"])),
                     {"lease_id": m["lease_id"]})
        # auto mode: acked once written, nothing goes back
        self.req(p, "POST", "/queues/%s/messages" % qn,
                 {"messages": [{"payload": i, "id": "a%d" % i} for i in range(4)]})
        async with websockets.connect(self.url(p, "/queues/%s/ws" % qn),
                                      extra_headers=self.adm, open_timeout=10) as ws:
            got = [await self.recv_json(ws) for _ in range(4)]
            ck.check("queue /ws (auto): the 4 messages",
                     sorted(g.get("id") for g in got) == ["a%d" % i for i in range(4)], got)
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        r = self.req(p, "GET", "/queues/%s/messages?max=10&wait_s=1" % qn)
        ck.check("auto mode: acked once written, nothing went back",
                 r.status == 200 and (r.json() or {}).get("messages") == [], r)

    async def too_big_lib(self, p, name):
        try:
            async with websockets.connect(self.url(p, "/topics/%s/ws" % name),
                                          extra_headers=self.adm, open_timeout=10,
                                          max_size=None) as ws:
                await ws.send("x" * (MAX_FRAME + 1))
                await asyncio.wait_for(ws.recv(), 5)
            code = None
        except websockets.ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
        self.ck.check("websockets: a %d-byte message -> close 1009" % (MAX_FRAME + 1),
                      code == 1009, code)

    def protocol_errors(self, p, name):
        ck = self.ck
        path = "/topics/%s/ws?access_token=%s" % (name, SA)
        r = RawWs(p.port, path)
        r.send(1, b"hi", mask=False)
        code = r.close_code(5)
        ck.check("unmasked client frame -> close 1002", code is not None and code[0] == 1002, code)
        r.close()
        r = RawWs(p.port, path)
        r.send(2, b"", length=MAX_FRAME + 1)  # the header alone is enough
        code = r.close_code(5)
        ck.check("oversized frame header -> close 1009", code is not None and code[0] == 1009, code)
        r.close()
        r = RawWs(p.port, path)
        r.send(1, b"\xff\xfe")
        code = r.close_code(5)
        ck.check("text not UTF-8 -> close 1007", code is not None and code[0] == 1007, code)
        r.close()
        r = RawWs(p.port, path)  # never answers the server's pings
        t0 = time.monotonic()
        code = r.close_code(2 * HEARTBEAT_S + 4)
        el = time.monotonic() - t0
        ck.check("no pong for 2 x RT_HEARTBEAT_S -> close 1008",
                 code is not None and code[0] == 1008 and 2 * HEARTBEAT_S - 1 < el, (code, el))
        r.close()
        asyncio.run(self.too_big_lib(p, name))
        time.sleep(0.5)
        m = p.metrics()
        for c in ("1002", "1009", "1007", "1008"):
            v = qharness.metric(m, "producer_rt_ws_protocol_errors_total", code=c)
            ck.check("producer_rt_ws_protocol_errors_total{code=%s} counted" % c, v >= 1, v)

    def slow_reader(self, p, name):
        ck = self.ck
        path = "/topics/%s/ws?access_token=%s" % (name, SA)
        fast = RawWs(p.port, path)
        slow = RawWs(p.port, path, rcvbuf=4096)
        ck.check("slow + fast raw clients: 101", fast.status == 101 and slow.status == 101,
                 (fast.status, slow.status))
        time.sleep(0.5)
        rss0 = rss_kb(p.proc.pid)
        pad = "x" * 4000
        n = 1500  # 6 MB: more than the kernel's socket buffers (tcp_wmem max 4 MiB) + 64 KiB
        fast_got, fast_close = [0], [None]
        stop = threading.Event()

        def fast_reader():  # reads all the time (and answers pings)
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                f = fast.frame(0.2)
                if f is None:
                    if fast.eof:
                        return
                    continue
                if f[0] == 9:
                    fast.send(10, f[1])
                elif f[0] == 1:
                    fast_got[0] += 1
                    if fast_got[0] == n:
                        return
                elif f[0] == 8:
                    fast_close[0] = f[1][:2]
                    return
        th = threading.Thread(target=fast_reader)
        th.start()
        for b in range(n // 50):
            r = self.publish(p, name, [{"payload": {"i": b * 50 + i, "pad": pad},
                                        "routing_key": "k"} for i in range(50)])
            if r.status != 201:
                ck.check("slow test publish", False, r)
                break
        th.join(30)
        stop.set()
        rss1 = rss_kb(p.proc.pid)
        # now the slow one reads: data, then the close frame 1008 slow_consumer
        code = slow.close_code(10)
        ck.check("slow reader: closed 1008 slow_consumer",
                 code is not None and code[0] == 1008 and code[1] == "slow_consumer", code)
        ck.check("fast reader: got all %d" % n, fast_got[0] == n, (fast_got[0], fast_close[0]))
        # ASan's quarantine keeps freed memory (256 MiB by default): a looser bound there
        with open(os.path.join(self.st.args.bin, "producer"), "rb") as f:
            asan = b"__asan_init" in f.read()
        bound = (320 if asan else 64) * 1024
        ck.check("RSS bounded while a reader is stuck (< +%d MiB)" % (bound // 1024),
                 rss1 - rss0 < bound, (rss0, rss1))
        fast.close()
        slow.close()

    def connections_back_to_zero(self, p):
        deadline = time.monotonic() + 8
        v = None
        while time.monotonic() < deadline:
            v = qharness.metric(p.metrics(), "producer_rt_ws_connections")
            if v == 0:
                break
            time.sleep(0.5)
        self.ck.check("producer_rt_ws_connections back to 0", v == 0, v)


def main():
    ap = qharness.arg_parser(__doc__)
    ap.add_argument("--only", default="", help="comma-separated scenarios (default all): "
                    "handshake,topic,queue,errors,slow")
    args = ap.parse_args()
    only = set(x for x in args.only.split(",") if x)

    def want(x):
        return not only or x in only
    with qharness.Stack(args) as st:
        t = WsTest(st)
        p = st.producer("ws", {"API_KEYS": "adm:%s:*" % SA, "RT_HEARTBEAT_S": str(HEARTBEAT_S),
                               "RT_SEND_BUFFER_BYTES": "65536",
                               "WS_MAX_FRAME_BYTES": str(MAX_FRAME)})
        name = t.topic(p)

        def run(what, fn, *a):
            if not want(what):
                return
            try:
                r = fn(*a)
                if asyncio.iscoroutine(r):
                    asyncio.run(asyncio.wait_for(r, 120))
            except Exception as e:  # noqa: BLE001  (one scenario's failure, the others run)
                st.ck.check("scenario %s ran" % what, False, "%s: %s" % (type(e).__name__, e))
        run("handshake", t.handshake, p, name)
        run("topic", t.topic_frames, p, name)
        run("queue", t.queue_client_acks, p)
        run("errors", t.protocol_errors, p, name)
        if want("slow"):  # a producer whose heartbeat cannot end the stuck reader first
            p2 = st.producer("ws-slow", {"API_KEYS": "adm:%s:*" % SA, "RT_HEARTBEAT_S": "30",
                                         "RT_SEND_BUFFER_BYTES": "65536"})
            run("slow", lambda: t.slow_reader(p2, t.topic(p2)))
            t.connections_back_to_zero(p2)
        t.connections_back_to_zero(p)
    return st.ck.summary()


if __name__ == "__main__":
    sys.exit(main())
