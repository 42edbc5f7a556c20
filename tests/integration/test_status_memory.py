#!/usr/bin/python3
"""A producer that replays a long status stream at start keeps its memory flat.

The bench found it: each producer it started read the status stream (STATUS_STREAM, on by
default) from its start, and its RSS grew with the stream: 18 MB, then 73, 115, 166 MB as the
runs before it left more events. librabbitmq reads every frame into its channel's pool, the
stream reader gave the pool back only once no data was waiting (never, during a replay), and
a released pool keeps the pages it grew to.

Checks: producer A takes --messages messages through /batch-produce (100 per request), stops;
producer B starts, replays the stream until it knows A's last message (GET /messages/{id},
status_stream "up"); B's peak RSS (VmHWM) stays under --max-mb.

    tests/integration/test_status_memory.py [--bin build/bin] [--amqp-port P] [--work DIR]
        [--messages 150000] [--max-mb 40]
Prints `N passed, N failed`; exit 1 on a failure.
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qharness  # noqa: E402


def log(msg):
    print("[status_memory %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def vm_hwm_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return -1.0


def fill(st, p, total, threads=4):
    """total messages through /batch-produce from several threads; returns (stored, last id)."""
    per = [total // 100 // threads] * threads
    res = {"stored": 0, "last": None, "errors": []}
    lock = threading.Lock()

    def worker(n):
        body = json.dumps({"messages": [{"payload": {"n": i, "text": "replay"}}
                                        for i in range(100)]}).encode()
        for _ in range(n):
            r = st.request(p, "POST", "/batch-produce", body=body,
                           headers={"Content-Type": "application/json"}, timeout=30)
            with lock:
                if r.status != 201:
                    res["errors"].append(r.status)
                    return
                ids = json.loads(r.body).get("message_ids") or []
                res["stored"] += len(ids)
                res["last"] = ids[-1] if ids else res["last"]

    ts = [threading.Thread(target=worker, args=(n,)) for n in per]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return res


def main():
    ap = qharness.arg_parser(__doc__)
    ap.add_argument("--messages", type=int, default=150000)
    ap.add_argument("--max-mb", type=float, default=40.0)
    args = ap.parse_args()
    with qharness.Stack(args) as st:
        ck = st.ck
        a = st.producer("replay-a", {"LOG_LEVEL": "warn"})
        t0 = time.monotonic()
        res = fill(st, a, args.messages)
        ck.check("A stored %d messages (201s)" % args.messages,
                 res["stored"] == args.messages and not res["errors"],
                 "%d stored, errors %s" % (res["stored"], res["errors"][:5]))
        log("filled in %.1f s" % (time.monotonic() - t0))
        rc = a.stop()
        st.procs.remove(a)
        ck.check("A exits 0 on SIGTERM", rc == 0, rc)

        b = st.producer("replay-b", {"LOG_LEVEL": "warn"})
        deadline, known, state = time.monotonic() + 90, False, ""
        while time.monotonic() < deadline and not known:
            r = st.request(b, "GET", "/messages/%s" % res["last"])
            if r.status == 200:
                state = json.loads(r.body).get("status_stream", "")
                known = state == "up"
            if not known:
                time.sleep(0.5)
        ck.check("B replayed the stream up to A's last message (status_stream up)", known,
                 state or "not known")
        peak = vm_hwm_mb(b.proc.pid)
        log("B's peak RSS after the replay: %.1f MB" % peak)
        ck.check("B's peak RSS stays under %.0f MB while it replays %d messages' events"
                 % (args.max_mb, args.messages), 0 < peak < args.max_mb, "%.1f MB" % peak)
    sys.exit(st.ck.summary())


if __name__ == "__main__":
    main()
