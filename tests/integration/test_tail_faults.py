#!/usr/bin/python3
"""Fault injection for the tail -> broker -> output pipeline (issue 3's promise).

Writes LINES lines at a steady rate into INPUT_FILE while, one after another, it:
rotates the file by rename (logrotate `create`), copytruncates it, kill -9s the consumer
and restarts it, kill -9s the producer and restarts it, and restarts the broker. Then it
waits for the output and compares: the output file must equal every line written, in
order, byte for byte (`cmp`).

Lines hold every kind of byte the promise covers: empty lines, '\\r', tabs, NUL and bytes
that are not UTF-8.

copytruncate is lossy by nature for bytes nobody has read yet (the copy is a file nobody
tails), in every tailer. Like logrotate users who care, the test lets the tailer catch up
(producer_tail_bytes_behind == 0) before truncating, with the writer paused.

Usage: test_tail_faults.py --build-dir build [--lines 30000] [--seconds 40]
Bounded: every wait has a deadline; exits 1 on any failure. Only 127.0.0.1 is used, and
only processes this script started are signalled (by PID).
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_reliability import free_port, wait_output_size  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(msg):
    print(f"[tail-faults {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Stack:
    """The broker and the two services, each started and stopped by this script."""

    def __init__(self, build, tmp):
        self.build, self.tmp = build, tmp
        self.amqp = free_port()
        self.pport, self.cport = free_port(), free_port()
        self.broker_dir = os.path.join(tmp, "broker")
        self.input = os.path.join(tmp, "in.log")
        self.output = os.path.join(tmp, "out.txt")
        self.procs = {}
        base = dict(os.environ)
        base.update(RABBITMQ_HOST="127.0.0.1", RABBITMQ_PORT=str(self.amqp), LOG_LEVEL="warn",
                    REQUEST_QUEUE="tail_faults", RABBITMQ_HEARTBEAT="5")
        self.env = {
            "producer": dict(base, PRODUCER_PORT=str(self.pport), INPUT_FILE=self.input,
                             TAIL_STATE_DIR=os.path.join(tmp, "state"), TAIL_POLL_MS="100",
                             TAIL_ROTATE_WAIT_MS="500"),
            "consumer": dict(base, CONSUMER_PORT=str(self.cport), OUTPUT_FILE=self.output),
        }

    def broker(self, cmd):
        args = ["bash", os.path.join(ROOT, "scripts/broker.sh"), cmd, self.broker_dir]
        if cmd == "start":
            args.append(str(self.amqp))
        with open(os.path.join(self.tmp, "broker.out"), "a") as out:
            rc = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, timeout=120).returncode
        if rc != 0:
            raise RuntimeError(f"broker {cmd} failed")

    def start(self, name):
        logf = open(os.path.join(self.tmp, f"{name}.log"), "a")
        self.procs[name] = subprocess.Popen([os.path.join(self.build, "bin", name)],
                                            env=self.env[name], stdout=logf, stderr=logf)
        self.wait_ready(name)

    def wait_ready(self, name, timeout=30):
        port = self.pport if name == "producer" else self.cport
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.procs[name].returncode}")
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready within {timeout} s")

    def kill9(self, name):
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def stop(self, name, timeout=15):
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return None
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return -9

    def metric(self, name):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.pport}/metrics", timeout=2) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith(name + " "):
                        return float(line.split()[1])
        except OSError:
            return None
        return None


def make_line(i, rng):
    kinds = [
        b"line %d plain text" % i,
        b"",  # empty line
        b"line %d with\ttab and carriage return\r" % i,
        b"line %d with NUL \x00 inside" % i,
        b"line %d not utf-8 \xff\xfe\xc3" % i,
        b"line %d " % i + bytes(rng.randrange(32, 127) for _ in range(rng.randrange(0, 200))),
    ]
    return kinds[i % len(kinds)] + b"\n"


class Writer(threading.Thread):
    """Appends lines at a steady rate in its own thread, reopening the path for every chunk
    (as an application does after a `create` rotation). `lock` pauses it (copytruncate)."""

    def __init__(self, path, total, seconds):
        super().__init__(daemon=True)
        self.path, self.total = path, total
        self.interval = seconds / total
        self.rng = random.Random(7)
        self.written = []
        self.lock = threading.Lock()
        self.start_time = time.time()

    def run(self):
        self.start_time = time.time()
        while len(self.written) < self.total:
            due = min(self.total, int((time.time() - self.start_time) / self.interval) + 1)
            if due > len(self.written):
                chunk = [make_line(i, self.rng) for i in range(len(self.written), due)]
                with self.lock:
                    with open(self.path, "ab") as f:
                        f.write(b"".join(chunk))
                self.written.extend(chunk)
            time.sleep(0.01)


def wait_caught_up(stack, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        behind = stack.metric("producer_tail_bytes_behind")
        if behind == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("the tailer did not catch up before copytruncate")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--lines", type=int, default=30000)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    tmp = tempfile.mkdtemp(prefix="relayq-tail-faults.")
    os.chmod(tmp, 0o755)
    stack = Stack(build, tmp)
    ok = False
    try:
        stack.broker("start")
        stack.start("consumer")
        stack.start("producer")
        w = Writer(stack.input, args.lines, args.seconds)
        s = args.seconds
        plan = [
            (0.12 * s, "rename rotation (in.log -> in.log.1, new in.log)"),
            (0.25 * s, "copytruncate"),
            (0.40 * s, "kill -9 consumer, restart"),
            (0.55 * s, "kill -9 producer, restart"),
            (0.62 * s, "rename rotation again"),
            (0.72 * s, "broker restart"),
        ]
        rotations = 0
        w.start()
        for at, what in plan:
            while time.time() < w.start_time + at:
                time.sleep(0.05)
            log(f"{len(w.written)} lines written; {what}")
            if what.startswith("rename"):
                rotations += 1
                os.rename(stack.input, f"{stack.input}.{rotations}")
            elif what == "copytruncate":
                with w.lock:
                    wait_caught_up(stack)
                    shutil.copyfile(stack.input, stack.input + ".copy")
                    with open(stack.input, "r+b") as f:
                        f.truncate(0)
            elif what.startswith("kill -9 consumer"):
                stack.kill9("consumer")
                time.sleep(0.5)
                stack.start("consumer")
            elif what.startswith("kill -9 producer"):
                stack.kill9("producer")
                time.sleep(0.5)
                stack.start("producer")
            elif what == "broker restart":
                stack.broker("stop")
                time.sleep(1)
                stack.broker("start")
                stack.wait_ready("producer", 60)
                stack.wait_ready("consumer", 60)
                log(f"broker back; {len(w.written)} lines written")
        w.join(timeout=args.seconds + 60)
        if w.is_alive():
            raise RuntimeError("the writer did not finish")
        expected = b"".join(w.written)
        log(f"all {len(w.written)} lines ({len(expected)} bytes) written; waiting for the output")
        got = wait_output_size(stack.output, len(expected), 120)
        with open(os.path.join(tmp, "expected.txt"), "wb") as f:
            f.write(expected)
        rc = subprocess.run(["cmp", os.path.join(tmp, "expected.txt"), stack.output]).returncode
        lines_out = got.count(b"\n")
        log(f"output: {lines_out} lines, {len(got)} bytes; expected {len(w.written)} lines, "
            f"{len(expected)} bytes")
        if rc == 0:
            log("PASS: output equals input byte for byte")
            ok = True
        else:
            log("FAIL: output differs from input (cmp above)")
    except Exception as e:  # noqa: BLE001 - any failure is a test failure, reported
        log(f"FAIL: {e}")
    finally:
        for name in ("producer", "consumer"):
            stack.stop(name)
        try:
            stack.broker("stop")
        except Exception as e:  # noqa: BLE001
            log(f"broker stop: {e}")
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"scratch folder kept: {tmp}")
    print(f"tail-faults: {1 if ok else 0} passed, {0 if ok else 1} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
