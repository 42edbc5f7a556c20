#!/usr/bin/python3
"""Self-test of tests/chaos/proxy.py against a local echo server: each fault does what it says.

Run: /usr/bin/python3 tests/chaos/test_proxy.py  (about 10 s; 127.0.0.1 only; stdlib unittest)
"""
import errno
import os
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy as px  # noqa: E402


class EchoServer:
    """Echoes every byte; counts what each connection received."""

    def __init__(self):
        self.s = socket.socket()
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.s.bind(("127.0.0.1", 0))  # listens
        self.s.listen(16)
        self.port = self.s.getsockname()[1]
        self.received = []  # one counter per connection
        self.echo = True
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            idx = len(self.received)
            self.received.append(0)
            threading.Thread(target=self._serve, args=(c, idx), daemon=True).start()

    def _serve(self, c, idx):
        with c:
            while True:
                try:
                    d = c.recv(65536)
                except OSError:
                    return
                if not d:
                    return
                self.received[idx] += len(d)
                if self.echo:
                    try:
                        c.sendall(d)
                    except OSError:
                        return

    def close(self):
        self.s.close()


def recv_all(s, timeout=5.0):
    """Reads until EOF; returns (bytes, errno or None)."""
    s.settimeout(timeout)
    buf = b""
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            return buf, errno.ECONNRESET
        except socket.timeout:
            return buf, "timeout"
        if not d:
            return buf, None
        buf += d


class ProxyTest(unittest.TestCase):
    def setUp(self):
        self.echo = EchoServer()
        self.logf = tempfile.NamedTemporaryFile(prefix="proxy-log.", delete=False).name
        self.p = px.Proxy(0, ("127.0.0.1", self.echo.port), "test", log_file=self.logf).start()
        self.ctl = self.p.serve_control(0)

    def tearDown(self):
        self.p.stop()
        self.echo.close()
        os.unlink(self.logf)

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.p.port), timeout=5)

    def wait_conns(self, n=1):
        deadline = time.time() + 5
        while time.time() < deadline:
            r = px.control(self.ctl, "list")
            if len(r["conns"]) >= n:
                return r["conns"]
            time.sleep(0.02)
        self.fail("connection not seen by the proxy")

    def test_pass_through(self):
        with self.connect() as s:
            s.sendall(b"x" * 100000)
            got = b""
            while len(got) < 100000:
                got += s.recv(65536)
            self.assertEqual(got, b"x" * 100000)

    def test_cut_down_at_1000(self):
        self.assertTrue(px.control(self.ctl, "cut new down 1000")["ok"])
        with self.connect() as s:
            s.sendall(os.urandom(5000))
            got, err = recv_all(s)
        self.assertEqual(len(got), 1000)
        self.assertIn(err, (None, errno.ECONNRESET))

    def test_cut_up_at_1000_mid_stream(self):
        with self.connect() as s:
            s.sendall(b"a" * 300)
            got = b""
            while len(got) < 300:
                got += s.recv(65536)
            (c,) = self.wait_conns()
            self.assertTrue(px.control(self.ctl, f"cut {c['id']} up 1000")["ok"])
            try:
                s.sendall(b"b" * 5000)
            except OSError:
                pass
            recv_all(s)
        time.sleep(0.2)
        self.assertEqual(self.echo.received[0], 1300)  # 300 before the cut, exactly 1000 after

    def test_reset_gives_econnreset(self):
        with self.connect() as s:
            s.sendall(b"hello")
            s.recv(10)
            r = px.control(self.ctl, "reset all")
            self.assertEqual(len(r["conns"]), 1)
            time.sleep(0.1)
            with self.assertRaises(ConnectionResetError):
                s.settimeout(3)
                s.recv(10)
                s.sendall(b"x")  # in case the recv saw nothing yet
                s.recv(10)

    def test_pause_blocks_sender_then_resume(self):
        self.echo.echo = False
        with self.connect() as s:
            self.wait_conns()
            px.control(self.ctl, "pause all up")
            s.setblocking(False)
            sent = 0
            chunk = b"z" * 65536
            deadline = time.time() + 10
            blocked = False
            while time.time() < deadline:
                try:
                    sent += s.send(chunk)
                except BlockingIOError:
                    blocked = True
                    break
            self.assertTrue(blocked, "sender never blocked")
            time.sleep(0.5)
            self.assertLess(self.echo.received[0], sent)
            before = self.echo.received[0]
            time.sleep(0.5)
            self.assertEqual(self.echo.received[0], before, "the proxy read while paused")
            px.control(self.ctl, "resume all up")
            deadline = time.time() + 5
            while self.echo.received[0] < sent and time.time() < deadline:
                time.sleep(0.05)
            self.assertEqual(self.echo.received[0], sent)

    def test_delay(self):
        with self.connect() as s:
            self.wait_conns()
            px.control(self.ctl, "delay all down 0.5")
            t0 = time.time()
            s.sendall(b"ping")
            self.assertEqual(s.recv(10), b"ping")
            self.assertGreaterEqual(time.time() - t0, 0.45)

    def test_throttle(self):
        with self.connect() as s:
            self.wait_conns()
            px.control(self.ctl, "throttle all down 20000")
            t0 = time.time()
            s.sendall(b"q" * 40000)
            got = 0
            s.settimeout(10)
            while got < 40000:
                got += len(s.recv(65536))
            self.assertGreaterEqual(time.time() - t0, 1.5)

    def test_refuse_then_accept(self):
        px.control(self.ctl, "refuse 1")
        try:
            s = self.connect()
        except ConnectionResetError:
            s = None  # reset before connect() returned: a loaded machine, refused all the same
        if s is not None:
            with s:
                got, err = recv_all(s, 2)
                self.assertEqual(got, b"")
                self.assertEqual(err, errno.ECONNRESET)
        time.sleep(1.1)
        with self.connect() as s:
            s.sendall(b"ok")
            self.assertEqual(s.recv(10), b"ok")

    def test_pass_clears_faults(self):
        with self.connect() as s:
            self.wait_conns()
            px.control(self.ctl, "pause all both")
            s.sendall(b"one")
            s.settimeout(0.5)
            with self.assertRaises(socket.timeout):
                s.recv(10)
            px.control(self.ctl, "pass all")
            s.settimeout(3)
            self.assertEqual(s.recv(10), b"one")

    def test_schedule_and_log(self):
        sched = tempfile.NamedTemporaryFile("w", prefix="sched.", delete=False)
        sched.write("# comment\n0.3 reset all\n")
        sched.close()
        try:
            with self.connect() as s:
                self.wait_conns()
                self.p.run_schedule(sched.name)
                t0 = time.time()
                _, err = recv_all(s, 3)
                self.assertEqual(err, errno.ECONNRESET)
                self.assertGreaterEqual(time.time() - t0, 0.25)
        finally:
            os.unlink(sched.name)
        log = px.control(self.ctl, "log")["log"]
        self.assertTrue(any(r["fault"] == "reset" and "t" in r for r in log))
        with open(self.logf) as f:
            self.assertIn('"reset"', f.read())

    def test_bad_command(self):
        r = px.control(self.ctl, "explode all")
        self.assertFalse(r["ok"])
        self.assertFalse(px.control(self.ctl, "cut all sideways 5")["ok"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
