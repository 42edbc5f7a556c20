#!/usr/bin/python3
"""Issue 17 review: a batch in which some items are duplicates (an idempotency key already
used) keeps one entry per item, in item order, in every answer: the 202 of ?wait=N (its
"message_ids" and "locations", plus "duplicates"), and the 504 of wait=true without a reply.
And a SIGTERM while a keyed request waits on the status stream (the broker frozen with
SIGSTOP: so this test needs a broker of its own) answers that request at once.

    python3 tests/integration/test_status_review.py --bin build/bin

Starts its own broker (qharness.Stack) and one producer (no consumer); bounded (~1 min).
"""

import json
import os
import re
import secrets
import signal
import sys
import threading
import time

import qharness


def post(st, p, path, body, headers=None, timeout=20.0):
    return st.request(p, "POST", path, body=body, headers=headers, timeout=timeout)


def main():
    args = qharness.arg_parser(__doc__).parse_args()
    with qharness.Stack(args) as st:
        ck = st.ck
        a = st.producer("a", {"REPLY_TIMEOUT_MS": "800"})
        k1 = "rev-" + secrets.token_hex(4)
        r = post(st, a, "/batch-produce", {"messages": [{"payload": "first", "idempotency_key": k1}]})
        id1 = ((r.json() or {}).get("message_ids") or [None])[0]
        ck.check("a first keyed batch is 201", r.status == 201 and id1, (r.status, r.body[:200]))

        k2 = "rev-" + secrets.token_hex(4)
        r = post(st, a, "/batch-produce?wait=0", {"messages": [
            {"payload": "again", "idempotency_key": k1},
            {"payload": "new", "idempotency_key": k2}]})
        o = r.json() or {}
        ids, locs = o.get("message_ids") or [], o.get("locations") or []
        ck.check("202: one message id per item, the duplicate's first", r.status == 202 and
                 len(ids) == 2 and ids[0] == id1 and ids[1] not in (None, id1),
                 (r.status, r.body[:400]))
        ck.check("202: one location per item", len(locs) == 2 and
                 locs[0] == "/messages/" + str(id1), (locs,))
        ck.check("202: the duplicates listed", o.get("duplicates") == [id1], (o.get("duplicates"),))

        k3 = "rev-" + secrets.token_hex(4)
        r = post(st, a, "/batch-produce?wait=true", {"messages": [
            {"payload": "again", "idempotency_key": k1},
            {"payload": "new3", "idempotency_key": k3}]})
        o = r.json() or {}
        ids = o.get("message_ids") or []
        ck.check("504: one message id per item, the duplicate's first", r.status == 504 and
                 len(ids) == 2 and ids[0] == id1 and ids[1] not in (None, id1),
                 (r.status, r.body[:400]))
        print(json.dumps({"checked": "batch answers with duplicates"}))
        if st.broker_dir:  # our own broker: we may freeze it
            shutdown_waiting_on_stream(st)
    return st.ck.summary()


def shutdown_waiting_on_stream(st):
    """SIGTERM while a keyed request waits on the stream (its barrier: the broker is frozen,
    so the marker never comes back): the request gets an answer and the producer exits 0
    within its stop bounds, never stopping MHD with the connection still suspended."""
    ck = st.ck
    b = st.producer("b", {"PUBLISH_TIMEOUT_MS": "500"})
    pid = int(open(os.path.join(st.broker_dir, "rabbitmq.pid")).read().strip())
    res = {}

    def keyed():
        try:
            res["r"] = post(st, b, "/produce", {"payload": "k"},
                            headers={"Idempotency-Key": "stop-" + secrets.token_hex(4)},
                            timeout=20.0)
            res["t"] = time.monotonic()
        except OSError as e:
            res["err"] = e
    os.kill(pid, signal.SIGSTOP)
    try:
        t = threading.Thread(target=keyed)
        t.start()
        time.sleep(0.2)  # in its barrier (the stream looked up when it came)
        t0 = time.monotonic()
        rc = b.stop()
        st.procs.remove(b)
        dt = time.monotonic() - t0
        t.join(20)
    finally:
        os.kill(pid, signal.SIGCONT)
    ck.check("shutdown: the producer exits 0 with a keyed request waiting on the stream",
             rc == 0, rc)
    ck.check("shutdown: ... within 8 s (%.1f s)" % dt, dt < 8, dt)
    ck.check("shutdown: the waiting request got an answer (not a dropped connection)",
             "r" in res and res["r"].status in (201, 503), res)
    # at once: the stop answers what waits on the stream, it does not let it run out its
    # 2 s (a stream thread stuck for longer would outlast the 2 s drain)
    waited = res.get("t", t0 + 99) - t0
    ck.check("shutdown: ... at once, not when its barrier times out (%.2f s after SIGTERM)"
             % waited, waited < 1.2, waited)
    ck.check("shutdown: no sanitizer report", not re.search(
        r"AddressSanitizer|runtime error:|LeakSanitizer", b.log_text()))


if __name__ == "__main__":
    sys.exit(main())
