#!/usr/bin/python3
"""A minimal AMQP 0-9-1 publisher (standard library only) for the chaos campaign.

rq_amqp_tool cannot set arbitrary headers, and the campaign publishes hostile messages with
forged tail headers (x-file, x-offset, x-end, x-format), so this speaks just enough AMQP:
PLAIN login, one channel in confirm mode, basic.publish (mandatory) with any properties,
and waits for the broker's basic.ack. Test tool only: 127.0.0.1, no TLS, no heartbeats.
"""
import socket
import struct


class AmqpError(Exception):
    pass


def _shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    if len(b) > 255:
        raise ValueError("short string over 255 bytes")
    return struct.pack("B", len(b)) + b


def _longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def _table(d):
    out = b""
    for k, v in (d or {}).items():
        out += _shortstr(k)
        if isinstance(v, bool):
            out += b"t" + struct.pack("B", 1 if v else 0)
        elif isinstance(v, int):
            out += b"l" + struct.pack(">q", v)
        elif isinstance(v, float):
            out += b"d" + struct.pack(">d", v)
        elif isinstance(v, (str, bytes)):
            out += b"S" + _longstr(v)
        elif v is None:
            out += b"V"
        else:
            raise ValueError(f"unsupported header value {v!r}")
    return struct.pack(">I", len(out)) + out


class Publisher:
    def __init__(self, host, port, user="guest", password="guest", vhost="/", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.tag = 0
        self.frame_max = 131072
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self._expect(0, 10, 10)
        resp = b"\x00" + user.encode() + b"\x00" + password.encode()
        self._method(0, 10, 11, _table({}) + _shortstr("PLAIN") + _longstr(resp) +
                     _shortstr("en_US"))
        args = self._expect(0, 10, 30)
        ch_max, fmax, _hb = struct.unpack(">HIH", args[:8])
        self.frame_max = fmax or 131072
        self._method(0, 10, 31, struct.pack(">HIH", ch_max, self.frame_max, 0))
        self._method(0, 10, 40, _shortstr(vhost) + _shortstr("") + b"\x00")
        self._expect(0, 10, 41)
        self._method(1, 20, 10, _shortstr(""))
        self._expect(1, 20, 11)
        self._method(1, 85, 10, b"\x00")
        self._expect(1, 85, 11)

    # -------------------------------------------------------------- frames
    def _frame(self, ftype, ch, payload):
        self.sock.sendall(struct.pack(">BHI", ftype, ch, len(payload)) + payload + b"\xce")

    def _method(self, ch, cls, mth, args):
        self._frame(1, ch, struct.pack(">HH", cls, mth) + args)

    def _read(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(65536)
            if not d:
                raise AmqpError("connection closed by the broker")
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _next(self):
        ftype, ch, size = struct.unpack(">BHI", self._read(7))
        payload = self._read(size)
        if self._read(1) != b"\xce":
            raise AmqpError("bad frame end")
        return ftype, ch, payload

    def _expect(self, ch, cls, mth):
        while True:
            ftype, fch, p = self._next()
            if ftype != 1:
                continue
            c, m = struct.unpack(">HH", p[:4])
            if (c, m) in ((10, 50), (20, 40)):
                code = struct.unpack(">H", p[4:6])[0]
                text = p[7:7 + p[6]].decode(errors="replace")
                raise AmqpError(f"closed by the broker: {code} {text}")
            if fch == ch and c == cls and m == mth:
                return p[4:]

    # -------------------------------------------------------------- publish
    def publish(self, queue, body, content_type=None, message_id=None, headers=None,
                reply_to=None, correlation_id=None, persistent=True):
        """Publishes one message to the default exchange with routing key `queue` (mandatory)
        and waits for its confirm. Returns True when acked and not returned."""
        if isinstance(body, str):
            body = body.encode()
        self._method(1, 60, 40, struct.pack(">H", 0) + _shortstr("") + _shortstr(queue) +
                     b"\x01")
        flags = 0
        props = b""
        if content_type is not None:
            flags |= 0x8000
            props += _shortstr(content_type)
        if headers is not None:
            flags |= 0x2000
            props += _table(headers)
        flags |= 0x1000
        props += struct.pack("B", 2 if persistent else 1)
        if correlation_id is not None:
            flags |= 0x0400
            props += _shortstr(correlation_id)
        if reply_to is not None:
            flags |= 0x0200
            props += _shortstr(reply_to)
        if message_id is not None:
            flags |= 0x0080
            props += _shortstr(message_id)
        self._frame(2, 1, struct.pack(">HHQH", 60, 0, len(body), flags) + props)
        step = self.frame_max - 8
        for i in range(0, len(body), step):
            self._frame(3, 1, body[i:i + step])
        self.tag += 1
        returned = False
        while True:
            ftype, ch, p = self._next()
            if ftype != 1:
                continue
            c, m = struct.unpack(">HH", p[:4])
            if (c, m) == (60, 50):
                returned = True
            elif (c, m) == (60, 80):
                tag = struct.unpack(">Q", p[4:12])[0]
                if tag >= self.tag:
                    return not returned
            elif (c, m) == (60, 120):
                return False
            elif (c, m) in ((10, 50), (20, 40)):
                raise AmqpError("closed by the broker")

    def close(self):
        try:
            self._method(0, 10, 50, struct.pack(">H", 200) + _shortstr("bye") +
                         struct.pack(">HH", 0, 0))
            self._expect(0, 10, 51)
        except (OSError, AmqpError):
            pass
        self.sock.close()
