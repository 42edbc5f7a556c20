#!/usr/bin/python3
"""Shared harness of the queue service's tests (issue 16): a broker (the caller's, or a
private one started here with the management plugin) and producers on free ports.

    ap = qharness.arg_parser(__doc__)          # --bin --amqp-port --mgmt-port --work
    args = ap.parse_args()
    with qharness.Stack(args) as st:           # starts a broker when --amqp-port is absent
        p = st.producer("a", {"API_KEYS": ...})  # test_security.Producer, ready
        r = st.request(p, "POST", "/queues", {"name": "q1"})
        st.ck.check("created", r.status == 201, r)
    sys.exit(st.ck.summary())

Everything started is stopped by PID (producers: SIGTERM, must exit 0; the broker:
scripts/broker.sh stop). Standard library only.
"""

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import test_security as sec  # noqa: E402  (request, Producer, free_port, metric, bearer)
import test_system as ts  # noqa: E402  (Checker)

request, metric, bearer, free_port, Resp = sec.request, sec.metric, sec.bearer, sec.free_port, sec.Resp


def arg_parser(doc):
    ap = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"),
                    help="folder of producer, consumer and rq_amqp_tool")
    ap.add_argument("--amqp-port", type=int, default=0,
                    help="a running broker's AMQP port (default: start a private broker)")
    ap.add_argument("--mgmt-port", type=int, default=0,
                    help="its management port (0: none, or the private broker's)")
    ap.add_argument("--work", default="", help="scratch folder (default: a new temp folder)")
    ap.add_argument("--broker-dir", default="",
                    help="the running broker's scripts/broker.sh folder (for rabbitmqctl)")
    return ap


MGMT_AUTH = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}  # guest:guest


def mgmt_queue_names(mgmt_port, prefix, tries=20, pause=0.3):
    """Sorted names of the broker's queues that start with prefix, from the management API's
    GET /api/queues/%2F?columns=name; None without a port or when no answer in `tries` was a
    200 with a JSON list (the API answers 500 or an empty body for a moment while queues are
    deleted under load: asked again `pause` seconds later)."""
    if not mgmt_port:
        return None
    for i in range(tries):
        if i:
            time.sleep(pause)
        try:
            r = request(mgmt_port, "GET", "/api/queues/%2F?columns=name", headers=MGMT_AUTH)
        except OSError:
            continue
        listing = r.json() if r.status == 200 else None
        if isinstance(listing, list):
            return sorted(q["name"] for q in listing
                          if isinstance(q, dict) and str(q.get("name", "")).startswith(prefix))
    return None


class Stack:
    def __init__(self, args):
        self.args = args
        self.ck = ts.Checker()
        if not args.work:
            args.work = tempfile.mkdtemp(prefix="relayq-q.")
        os.makedirs(args.work, exist_ok=True)
        os.chmod(args.work, 0o755)
        self.broker_dir = None
        self.ctl_dir = args.broker_dir or None  # broker.sh ctl: the given broker's, or ours
        self.procs = []

    def __enter__(self):
        a = self.args
        if not a.amqp_port:
            a.amqp_port, a.mgmt_port = free_port(), free_port()
            self.broker_dir = self.ctl_dir = os.path.join(a.work, "broker")
            r = subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), "start", self.broker_dir,
                                str(a.amqp_port), str(a.mgmt_port)],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise RuntimeError("broker.sh start: %s" % (r.stdout + r.stderr)[-500:])
            self.wait_mgmt(60)
        return self

    def wait_mgmt(self, seconds):
        deadline = time.monotonic() + seconds
        while self.args.mgmt_port and time.monotonic() < deadline:
            try:
                if request(self.args.mgmt_port, "GET", "/api/overview",
                           headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}).status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.3)
        return False

    def __exit__(self, *exc):
        for p in self.procs:
            try:
                rc = p.stop()
                self.ck.check("producer %s exits 0 on SIGTERM" % p.name, rc == 0, rc)
                if re.search(r"AddressSanitizer|runtime error:|LeakSanitizer", p.log_text()):
                    self.ck.check("producer %s: no sanitizer report" % p.name, False)
            except Exception as e:  # noqa: BLE001
                if p.proc.poll() is None:
                    p.proc.kill()
                    p.proc.wait()
                self.ck.check("producer %s stopped" % p.name, False, e)
        if self.broker_dir:
            subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), "stop", self.broker_dir],
                           capture_output=True, timeout=120)
        return False

    def producer(self, name, env=None, ready=True):
        """A producer on a free port against the stack's broker (with its management URL)."""
        e = {}
        if self.args.mgmt_port:
            e["RABBITMQ_MANAGEMENT_URL"] = "http://127.0.0.1:%d" % self.args.mgmt_port
        e.update(env or {})
        p = sec.Producer(self.args, name, e)
        self.procs.append(p)
        if ready and not p.ready():
            raise RuntimeError("producer %s not ready:\n%s" % (name, p.log_text()[-2000:]))
        return p

    def request(self, p, method, path, body=None, headers=None, timeout=15.0):
        return request(p.port, method, path, body=body, headers=headers, timeout=timeout)

    def ctl(self, *argv):
        """rabbitmqctl on the stack's broker (scripts/broker.sh ctl); None without its folder."""
        if not self.ctl_dir:
            return None
        return subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), "ctl", self.ctl_dir]
                              + list(argv), capture_output=True, text=True, timeout=60)

    @staticmethod
    def qname(prefix="t"):
        return "%s-%s" % (prefix, secrets.token_hex(4))
