#!/usr/bin/python3
"""Pull consumption with leases across producer replicas (issue 16): an ack, nack or lease
extension sent to a replica that does not hold the lease is forwarded over the broker to the
one that does (producer/queues/lease_fwd.h), so a load balancer may send any request to any
replica.

Two producers A and B on the same broker (a private one with the management plugin unless
--amqp-port is given). Checks: a message pulled from A and acked on B is gone (depth 0,
unacked 0); a lease extended on B keeps the message invisible past its first expiry; a nack
on B requeues it (attempt 2) and a nack to the DLQ on B lands it in <q>.dlq with the reason;
a wrong message id or an expired lease is 409 through B as through A; after a kill -9 of A,
an ack on B of A's lease is 409 "replica ... is gone" and the message is back in the queue;
B's forwarded-requests metric counts what it sent. Standard library only; bounded in time.
"""

import json
import os
import signal
import sys
import time
import urllib.parse

import qharness
from test_queues_pull import PullTest


def metric(p, outcome, role="sent"):
    return qharness.metric(p.metrics(), "producer_lease_forwarded_total", role=role,
                           outcome=outcome)


AUTH = {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}


def mgmt(st, method, path):
    return qharness.request(st.args.mgmt_port, method, path, headers=AUTH)


def replica_queue(st, rid):
    """The management API's view of relayq.replica.<rid> (a dict, {} when absent)."""
    r = mgmt(st, "GET", "/api/queues/%2F/" + urllib.parse.quote("relayq.replica." + rid))
    try:
        got = json.loads(r.body) if r.status == 200 else {}
    except ValueError:  # a 200 whose body is not JSON (the API under load): as absent
        got = {}
    return got if isinstance(got, dict) else {}


def forwarder_faults(st, t, a, b):
    """Only the holder's forwarder connection goes (its leaser's stays, with the leases), then
    its replica queue is deleted from outside: a forward must never say 'gone' for a lease
    that is still held, and the forwarder must come back by itself."""
    ck = st.ck
    q = st.qname("fwd")
    t.declare(q)
    t.publish(q, 2, "f")
    ms = t.msgs(t.pull(a, q, max=2, lease_s=600))
    if len(ms) != 2 or not st.args.mgmt_port:
        ck.check("forwarder faults: 2 leased on A, management API present", False, len(ms))
        return
    rid = ms[0]["lease_id"][:8]
    conn = None
    for _ in range(50):
        cd = replica_queue(st, rid).get("consumer_details") or []
        if cd:
            conn = cd[0]["channel_details"]["connection_name"]
            break
        time.sleep(0.2)
    r = mgmt(st, "DELETE", "/api/connections/" + urllib.parse.quote(conn or "x"))
    ck.check("the management API closes A's forwarder connection", r.status == 204, r)
    m = ms[0]
    r = t.act(b, q, m["message_id"], "ack", {"lease_id": m["lease_id"]})
    ck.check("ack on B while A's forwarder reconnects: never 409 'gone' (A holds the lease)",
             r.status != 409, r)
    deadline, r2 = time.monotonic() + 15, None
    while time.monotonic() < deadline:
        r2 = t.act(b, q, m["message_id"], "ack", {"lease_id": m["lease_id"]})
        if r2.status != 503:
            break
        time.sleep(0.3)
    ck.check("the same ack once A's forwarder is back: 200 (or 409 when the first one did it)",
             r2 is not None and (r2.status == 200 or (r2.status == 409 and r.status == 200)),
             (r.status, r2))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not replica_queue(st, rid).get("consumer_details"):
        time.sleep(0.2)
    # (exclusive to A's forwarder: the management API may not delete it, rabbitmqctl may)
    r = st.ctl("delete_queue", "relayq.replica." + rid)
    if r is None:
        return  # an outside broker without --broker-dir
    ck.check("rabbitmqctl deletes A's replica queue", r.returncode == 0, r.stderr[-200:])
    m = ms[1]
    deadline, r = time.monotonic() + 15, None
    while time.monotonic() < deadline:
        r = t.act(b, q, m["message_id"], "ack", {"lease_id": m["lease_id"]})
        if r.status == 200:
            break
        time.sleep(0.3)
    ck.check("after its queue was deleted, A's forwarder declares it again: the ack on B is 200",
             r is not None and r.status == 200, r)


def main():
    ap = qharness.arg_parser(__doc__)
    args = ap.parse_args()
    with qharness.Stack(args) as st:
        ck, t = st.ck, PullTest(st)
        a = st.producer("a")
        b = st.producer("b")
        try:
            q = st.qname("rep")
            t.declare(q)
            t.publish(q, 4, "r")
            ms = t.msgs(t.pull(a, q, max=4, lease_s=3))
            ck.check("A leases 4 messages", len(ms) == 4, len(ms))
            replica_a = (ms[0]["lease_id"] if ms else "")[:8]
            m0, m1, m2, m3 = (ms + [{}] * 4)[:4]

            r = t.act(b, q, m0.get("message_id", "x"), "ack", {"lease_id": m0.get("lease_id", "")})
            ck.check("ack on B of A's lease: 200, answered by A", r.status == 200 and
                     r.headers.get("relayq-replica") == replica_a, r)

            r = t.act(b, q, m1.get("message_id", "x"), "lease",
                      {"lease_id": m1.get("lease_id", ""), "lease_s": 30})
            ck.check("lease extension on B of A's lease: 200", r.status == 200, r)

            r = t.act(b, q, m2.get("message_id", "x"), "nack",
                      {"lease_id": m2.get("lease_id", ""), "requeue": False, "reason": "bad one"})
            ck.check("nack to the DLQ on B: 200", r.status == 200, r)

            r = t.act(b, q, "not-" + m3.get("message_id", "x"), "ack",
                      {"lease_id": m3.get("lease_id", "")})
            ck.check("ack on B with a wrong message id: 409 from A", r.status == 409, r)

            time.sleep(3.5)  # m3's lease (3 s) expires; m1's was extended to 30 s
            r = t.act(b, q, m3.get("message_id", "x"), "ack", {"lease_id": m3.get("lease_id", "")})
            ck.check("ack on B of an expired lease of A: 409", r.status == 409, r)
            # The expired message goes back to the queue, where A's own consumer may hold it
            # unleased until its idle give-back (about 5 s) before B's pull can have it: B
            # pulls until it comes (at most 15 s, still well inside m1's 30 s), then once more
            # to show that nothing else (m1) comes back.
            again, deadline = [], time.monotonic() + 15
            while not again and time.monotonic() < deadline:
                again = t.msgs(t.pull(b, q, max=4, lease_s=30, wait_s=8))
            if again:
                again += t.msgs(t.pull(b, q, max=4, lease_s=30, wait_s=1))
            ids = sorted(m["message_id"] for m in again)
            ck.check("after the expiry: only the expired message is back (the extended one "
                     "stays hidden)", ids == [m3.get("message_id")], ids)
            ck.check("the DLQ holds the nacked message", t.depth(q + ".dlq") == 1,
                     t.depth(q + ".dlq"))
            for m in again:
                r = t.act(a, q, m["message_id"], "ack", {"lease_id": m["lease_id"]})
                ck.check("ack on A of B's lease: 200", r.status == 200, r)
            ck.check("B counted its forwards", metric(b, "answered") >= 4, metric(b, "answered"))
            ck.check("A counted what it served", metric(a, "answered", "served") >= 4,
                     metric(a, "answered", "served"))

            forwarder_faults(st, t, a, b)

            # The holder dies: its leases go back, and a forward finds no replica.
            # (B consumed the queue for its last pull, so B may hold the new message unleased
            # until its idle give-back, about 5 s: A long-polls longer than that.)
            t.publish(q, 1, "k")
            ms = t.msgs(t.pull(a, q, max=1, lease_s=600, wait_s=10))
            ck.check("A leases the new message", len(ms) == 1, ms)
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            st.procs.remove(a)
            time.sleep(0.5)
            m = (ms + [{}])[0]
            r = t.act(b, q, m.get("message_id", "x"), "ack", {"lease_id": m.get("lease_id", "")})
            ck.check("ack on B after A's kill -9: 409 'replica is gone'", r.status == 409 and
                     b"gone" in r.body, r)
            deadline, d = time.monotonic() + 15, -1
            while time.monotonic() < deadline and d != 2:
                d = t.depth(q)
                time.sleep(0.2)
            ck.check("A's leased messages are back in the queue (the new one and the one "
                     "whose lease B extended)", d == 2, d)
            ck.check("B counted the forward to a gone replica", metric(b, "replica_gone") >= 1)
        except Exception as e:  # noqa: BLE001
            ck.check("replicas: no exception", False, repr(e))
    sys.exit(st.ck.summary())


if __name__ == "__main__":
    main()
