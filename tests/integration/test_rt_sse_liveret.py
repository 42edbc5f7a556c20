#!/usr/bin/python3
"""An EventSource's reconnect on a retained topic (issue 18), through the producer's SSE route.

A LIVE subscriber (no Last-Event-ID) of a topic created with retention_s gets events whose SSE
ids are the topic's stream offsets (equal to each event's "offset"), so when it reconnects
with `Last-Event-ID: <the 2nd id>` it gets exactly the messages after that one: no duplicate,
no gap. Starts a private broker and producer (tests/integration/qharness.py, as
test_rt_sse.py); standard library only; bounded in time.
Usage: test_rt_sse_liveret.py --bin build/bin
"""
import sys
import time

import qharness
from test_rt_sse import RtTest, q


def liveret(t, p):
    ck = t.ck
    name = t.topic(p, retention=3600)
    for i in range(2):  # before the subscription: offsets 0, 1 (not delivered to it)
        t.publish(p, name, {"payload": {"i": i}, "routing_key": "r.old"})
    s = t.sse(p, "/topics/%s/events" % q(name))
    t.subscribed(s, "live subscription of a retained topic")
    for i in range(2, 5):
        r = t.publish(p, name, {"payload": {"i": i}, "routing_key": "r.%d" % i})
    ck.check("3 live publishes: 201", r.status == 201, r)
    got = s.events(3, 10)
    s.close()
    ck.check("live: only the new messages, SSE id = the event's stream offset",
             [e[2]["payload"]["i"] for e in got] == [2, 3, 4] and
             all(e[1] == str(e[2].get("offset")) for e in got), got)
    if len(got) < 2:
        return
    last = got[1][1]
    s = t.sse(p, "/topics/%s/events" % q(name), dict(t.adm, **{"Last-Event-ID": last}))
    t.subscribed(s, "EventSource reconnect with Last-Event-ID: %s" % last)
    again = s.events(1, 10)
    more = s.events(1, 1.5)
    s.close()
    ck.check("reconnect: exactly the rest (4), no duplicate, no gap",
             [e[2]["payload"]["i"] for e in again + more] == [4], again + more)


def huge_ids(t, p):
    """Review: a Last-Event-ID of 2^63 - 1 or more wrapped to a negative x-stream-offset and
    replayed the whole retention; it is 400 now (a header or the query)."""
    ck = t.ck
    name = t.topic(p, retention=3600)
    t.publish(p, name, {"payload": {"i": 0}, "routing_key": "r"})
    for v in ("9223372036854775807", "9223372036854775808", "18446744073709551615"):
        s = t.sse(p, "/topics/%s/events?last_event_id=%s" % (q(name), v))
        st = s.status
        s.close()
        ck.check("last_event_id=%s: 400" % v, st == 400, (st, s.error))


def main():
    ap = qharness.arg_parser(__doc__)
    args = ap.parse_args()
    t0 = time.monotonic()
    with qharness.Stack(args) as st:
        t = RtTest(st)
        p = st.producer("rt-liveret", {"API_KEYS": t.keys(), "RT_HEARTBEAT_S": "1"})
        liveret(t, p)
        huge_ids(t, p)
    print("took %.1f s" % (time.monotonic() - t0))
    return st.ck.summary()


if __name__ == "__main__":
    sys.exit(main())
