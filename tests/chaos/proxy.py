#!/usr/bin/python3
"""A fault-injecting TCP proxy (issue 13): sits between a service and RabbitMQ.

Every accepted connection is paired with a fresh connection to the target and pumped by two
threads, one per direction: "up" is client -> target (the service's writes to the broker),
"down" is target -> client. Per connection (or for every connection accepted later) it can:

  cut SEL DIR N       forward exactly N more bytes in DIR, then close both sides (FIN):
                      a cut in the middle of a frame
  pause SEL DIR       stop reading from the side that sends in DIR: that sender's window
                      fills and it blocks (what a broker under a resource alarm does)
  resume SEL DIR      read again
  delay SEL DIR S     hold every chunk S seconds before forwarding it
  throttle SEL DIR B  forward at most B bytes per second (0: unlimited)
  reset SEL           close both sides with RST (SO_LINGER 0): ECONNRESET for both peers
  pass SEL            clear every fault of SEL (resume, no delay, no throttle, no cut)
  refuse S            for S seconds every new connection is reset at once (0: accept again)
  heal                pass all, clear the rules for new connections, stop refusing
  list                the live connections with their byte counts and faults
  log                 every fault applied so far, with timestamps

SEL is a connection id (from `list`), `all` (every live connection), `new` (a rule for every
connection accepted from now on: N of a cut counts from its first byte) or `any` (one live
connection picked at random). DIR is up, down or both.

Control: a line protocol on a local TCP socket (--control PORT on 127.0.0.1), one command a
line, one JSON object a reply ({"ok": true, ...} or {"ok": false, "error": "..."}). A
schedule file (--schedule FILE) holds lines `SECONDS COMMAND...` run at that time after
start; `#` starts a comment. Every fault is logged (stderr and `log`) with a timestamp.

Usage: proxy.py --listen PORT --target HOST:PORT [--control PORT] [--schedule FILE]
Standard library only; binds 127.0.0.1 only.
"""
import argparse
import json
import random
import select
import socket
import struct
import sys
import threading
import time

DIRS = ("up", "down")


def _dirs(d):
    if d == "both":
        return list(DIRS)
    if d not in DIRS:
        raise ValueError(f"direction must be up, down or both, not {d!r}")
    return [d]


class Faults:
    """The fault state of one direction of one connection."""

    def __init__(self):
        self.cut_after = None  # bytes still to forward before the cut (None: no cut)
        self.paused = False
        self.delay = 0.0
        self.throttle = 0  # bytes per second, 0: unlimited

    def clear(self):
        self.cut_after = None
        self.paused = False
        self.delay = 0.0
        self.throttle = 0

    def copy(self):
        f = Faults()
        f.cut_after, f.paused, f.delay, f.throttle = (self.cut_after, self.paused, self.delay,
                                                       self.throttle)
        return f

    def describe(self):
        d = {}
        if self.cut_after is not None:
            d["cut_after"] = self.cut_after
        if self.paused:
            d["paused"] = True
        if self.delay:
            d["delay"] = self.delay
        if self.throttle:
            d["throttle"] = self.throttle
        return d


def _rst(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Conn:
    """One proxied connection: client socket, target socket, two pump threads."""

    def __init__(self, proxy, cid, client, target, rules):
        self.proxy, self.id = proxy, cid
        self.sock = {"up": (client, target), "down": (target, client)}
        self.client, self.target = client, target
        self.faults = {d: rules[d].copy() for d in DIRS}
        self.bytes = {d: 0 for d in DIRS}
        self.cond = threading.Condition()
        self.closed = False
        self.opened = time.time()
        self.threads = [threading.Thread(target=self._pump, args=(d,), daemon=True,
                                         name=f"{proxy.name}-{cid}-{d}") for d in DIRS]

    def start(self):
        for t in self.threads:
            t.start()

    def close(self, rst=False):
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.cond.notify_all()
        for s in (self.client, self.target):
            if rst:
                _rst(s)
            else:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    s.close()
                except OSError:
                    pass
        self.proxy._forget(self)

    def _pump(self, d):
        src, dst = self.sock[d]
        f = self.faults[d]
        try:
            while True:
                with self.cond:
                    while f.paused and not self.closed:
                        self.cond.wait(0.5)
                    if self.closed:
                        return
                # wait for data without holding the lock, and come back to re-check faults
                # (select, not a socket timeout: the other pump sends on the same socket)
                try:
                    ready, _, _ = select.select([src], [], [], 0.2)
                except (OSError, ValueError):
                    self.close()
                    return
                with self.cond:
                    if self.closed:
                        return
                    if f.paused:
                        continue
                    cut = f.cut_after is not None and f.cut_after <= 0
                    want = 65536
                    if f.cut_after is not None and f.cut_after > 0:
                        want = min(want, f.cut_after)
                    if f.throttle:
                        want = max(1, min(want, f.throttle // 10 or 1))
                if cut:
                    self.proxy.log_fault("cut-done", conn=self.id, dir=d, bytes=self.bytes[d])
                    self.close()
                    return
                if not ready:
                    continue
                try:
                    data = src.recv(want)
                except OSError:
                    self.close()
                    return
                if not data:
                    self.close()
                    return
                with self.cond:
                    delay, throttle = f.delay, f.throttle
                if delay:
                    time.sleep(delay)
                if throttle:
                    time.sleep(len(data) / throttle)
                with self.cond:
                    if self.closed:
                        return
                    if f.cut_after is not None:
                        data = data[:max(0, f.cut_after)]
                        f.cut_after -= len(data)
                if data:
                    dst.sendall(data)
                with self.cond:
                    self.bytes[d] += len(data)
        except OSError:
            self.close()

    def set(self, fn):
        with self.cond:
            fn(self.faults)
            self.cond.notify_all()

    def describe(self):
        with self.cond:
            return {"id": self.id, "age_s": round(time.time() - self.opened, 3),
                    "bytes": dict(self.bytes),
                    "faults": {d: self.faults[d].describe() for d in DIRS}}


class Proxy:
    """A TCP proxy with faults. start() listens on 127.0.0.1:listen_port (0: any free port,
    see .port) and forwards to target (host, port); command(line) applies a command."""

    def __init__(self, listen_port, target, name="proxy", log_file=None, seed=None):
        self.target = target
        self.name = name
        self.lock = threading.Lock()
        self.conns = {}
        self.next_id = 1
        self.rules = {d: Faults() for d in DIRS}
        self.refuse_until = 0.0
        self.faults_log = []
        self.log_file = log_file
        self.rng = random.Random(seed)
        self.accepted = 0
        self.refused = 0
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", listen_port))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.stopping = False
        self.ctl_sock = None

    # ------------------------------------------------------------------ logging
    def log_fault(self, what, **kw):
        rec = {"t": round(time.time(), 3), "proxy": self.name, "fault": what}
        rec.update(kw)
        with self.lock:
            self.faults_log.append(rec)
        line = json.dumps(rec)
        if self.log_file:
            with open(self.log_file, "a") as f:
                f.write(line + "\n")
        else:
            print(line, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ accept loop
    def start(self):
        threading.Thread(target=self._accept_loop, daemon=True, name=f"{self.name}-accept").start()
        return self

    def _accept_loop(self):
        while not self.stopping:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                if self.stopping:
                    return
                time.sleep(0.05)
                continue
            if time.time() < self.refuse_until:
                self.refused += 1
                _rst(client)
                continue
            try:
                target = socket.create_connection(self.target, timeout=5)
            except OSError:
                _rst(client)
                continue
            for s in (client, target):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                cid = self.next_id
                self.next_id += 1
                c = Conn(self, cid, client, target, self.rules)
                self.conns[cid] = c
                self.accepted += 1
            c.start()

    def _forget(self, c):
        with self.lock:
            self.conns.pop(c.id, None)

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        if self.ctl_sock is not None:
            try:
                self.ctl_sock.close()
            except OSError:
                pass
        for c in self._select("all"):
            c.close()

    # ------------------------------------------------------------------ commands
    def _select(self, sel):
        with self.lock:
            live = [c for c in self.conns.values() if not c.closed]
        if sel == "all":
            return live
        if sel == "any":
            return [self.rng.choice(live)] if live else []
        try:
            cid = int(sel)
        except ValueError:
            raise ValueError(f"bad selector {sel!r} (an id, all, any or new)") from None
        return [c for c in live if c.id == cid]

    def _apply(self, sel, fn, what, **kw):
        """Applies fn(faults_by_dir) to the selected connections (or the rules for new ones)."""
        if sel == "new":
            with self.lock:
                fn(self.rules)
            self.log_fault(what, conn="new", **kw)
            return {"ok": True, "conns": ["new"]}
        conns = self._select(sel)
        for c in conns:
            c.set(fn)
        ids = [c.id for c in conns]
        self.log_fault(what, conn=ids, **kw)
        return {"ok": True, "conns": ids}

    def command(self, line):
        """Runs one command line; returns a dict (the JSON reply)."""
        try:
            return self._command(line.split())
        except (ValueError, IndexError) as e:
            return {"ok": False, "error": str(e) or "bad command"}

    def _command(self, w):
        if not w:
            return {"ok": False, "error": "empty command"}
        cmd = w[0]
        if cmd == "list":
            with self.lock:
                live = list(self.conns.values())
            return {"ok": True, "conns": [c.describe() for c in live],
                    "accepted": self.accepted, "refused": self.refused,
                    "refusing": time.time() < self.refuse_until}
        if cmd == "log":
            with self.lock:
                return {"ok": True, "log": list(self.faults_log)}
        if cmd == "heal":
            with self.lock:
                for d in DIRS:
                    self.rules[d].clear()
                self.refuse_until = 0.0
            for c in self._select("all"):
                c.set(lambda fs: [fs[d].clear() for d in DIRS])
            self.log_fault("heal")
            return {"ok": True}
        if cmd == "refuse":
            secs = float(w[1])
            self.refuse_until = time.time() + secs if secs > 0 else 0.0
            self.log_fault("refuse", seconds=secs)
            return {"ok": True}
        if cmd == "reset":
            conns = self._select(w[1])
            self.log_fault("reset", conn=[c.id for c in conns])
            for c in conns:
                c.close(rst=True)
            return {"ok": True, "conns": [c.id for c in conns]}
        if cmd == "pass":
            return self._apply(w[1], lambda fs: [fs[d].clear() for d in DIRS], "pass")
        if cmd in ("cut", "pause", "resume", "delay", "throttle"):
            sel, dirs = w[1], _dirs(w[2])
            if cmd == "cut":
                n = int(w[3])
                if n < 0:
                    raise ValueError("cut needs N >= 0")

                def fn(fs):
                    for d in dirs:
                        fs[d].cut_after = n
                return self._apply(sel, fn, "cut", dir=w[2], bytes=n)
            if cmd in ("pause", "resume"):
                on = cmd == "pause"

                def fn(fs):
                    for d in dirs:
                        fs[d].paused = on
                return self._apply(sel, fn, cmd, dir=w[2])
            val = float(w[3])
            if val < 0:
                raise ValueError(f"{cmd} needs a value >= 0")

            def fn(fs):
                for d in dirs:
                    if cmd == "delay":
                        fs[d].delay = val
                    else:
                        fs[d].throttle = int(val)
            return self._apply(sel, fn, cmd, dir=w[2], value=val)
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    # ------------------------------------------------------------------ control socket
    def serve_control(self, port=0):
        """Listens for control lines on 127.0.0.1:port (0: a free one); returns the port."""
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(16)
        self.ctl_sock = s
        threading.Thread(target=self._ctl_loop, args=(s,), daemon=True).start()
        return s.getsockname()[1]

    def _ctl_loop(self, s):
        while not self.stopping:
            try:
                c, _ = s.accept()
            except OSError:
                return
            threading.Thread(target=self._ctl_client, args=(c,), daemon=True).start()

    def _ctl_client(self, c):
        with c, c.makefile("rwb") as f:
            for raw in f:
                reply = self.command(raw.decode(errors="replace").strip())
                f.write((json.dumps(reply) + "\n").encode())
                f.flush()

    def run_schedule(self, path):
        """Runs the schedule file in a thread: lines `SECONDS COMMAND...`."""
        items = []
        with open(path) as f:
            for raw in f:
                line = raw.split("#", 1)[0].strip()
                if line:
                    at, _, cmd = line.partition(" ")
                    items.append((float(at), cmd.strip()))
        items.sort(key=lambda x: x[0])
        t0 = time.time()

        def run():
            for at, cmd in items:
                pause = t0 + at - time.time()
                if pause > 0:
                    time.sleep(pause)
                reply = self.command(cmd)
                if not reply.get("ok"):
                    self.log_fault("schedule-error", command=cmd, error=reply.get("error"))
        th = threading.Thread(target=run, daemon=True)
        th.start()
        return th


def control(port, line, timeout=5.0):
    """Sends one command line to a proxy's control port; returns the JSON reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            part = s.recv(65536)
            if not part:
                break
            buf += part
    return json.loads(buf.decode())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--target", required=True, help="HOST:PORT")
    ap.add_argument("--control", type=int, default=None, help="control port on 127.0.0.1")
    ap.add_argument("--schedule", default=None)
    ap.add_argument("--name", default="proxy")
    ap.add_argument("--log-file", default=None)
    args = ap.parse_args()
    host, _, port = args.target.rpartition(":")
    p = Proxy(args.listen, (host or "127.0.0.1", int(port)), args.name, args.log_file).start()
    if args.control is not None:
        cport = p.serve_control(args.control)
        print(f"control on 127.0.0.1:{cport}", file=sys.stderr, flush=True)
    if args.schedule:
        p.run_schedule(args.schedule)
    print(f"proxy 127.0.0.1:{p.port} -> {args.target}", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        p.stop()


if __name__ == "__main__":
    main()
