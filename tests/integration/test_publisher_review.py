#!/usr/bin/python3
"""The producer's publish path against a real broker (issue 11: items 2, 3, 4 and 7).

Scenarios (one per run; each starts its own broker unless --amqp-port is given):
  unroutable       the request queue is deleted under a running producer: a publish the
                   broker cannot route (mandatory, basic.return) is never answered 201; the
                   producer declares the topology again and publishes again within the
                   deadline, so every 201 and every tailed line is stored (counted in the
                   output file of a consumer started afterwards: each exactly once).
  wait-disconnect  wait=true requests whose messages the broker confirmed, when the producer's
                   connection is closed before the reply: 504 with the id(s) and status
                   "queued" (never 503, which invites a duplicate retry); GET /messages/{id}
                   still knows them; after the consumer starts, each is in the output once.
  wire-limits      an "id" the wire cannot carry (256 bytes) is 400 naming the limit, while
                   another client's /produce keeps getting 201 (no reconnect: the connection
                   counter does not move); an id of 255 bytes is stored and replied to.
  partial          a batch the broker partly refuses (a max-length policy with reject-publish):
                   503 listing the stored, not stored and unknown ids; the stored ones are
                   kept (GET /messages/{id}); a refused single says "stored": false.
  dlq-unroutable   POST /dlq/retry while the request queue is missing: the republished copies
                   come back (mandatory), so nothing is removed from the DLQ (503).
  same-id          different payloads with one client id (in one batch, in two requests,
                   and one retried through a delay queue) all reach the output: deduplication
                   keys on the id the producer makes per message (x-relayq-uid), not the
                   client's.

Usage: test_publisher_review.py --build-dir build SCENARIO [--amqp-port P]
Prints one PASS/FAIL line per check and `N passed, M failed`; exit 1 on any failure. Every
wait is bounded; only processes this script started are signalled, by PID. Standard library
only (/usr/bin/python3).
"""
import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_reliability as rel  # noqa: E402 - the shared Stack, Checks and HTTP helpers

http_call, log = rel.http_call, rel.log


def post(st, path, body, timeout=15.0):
    s, h, b, lat, _ = http_call(st.url("producer") + path, "POST", body, timeout=timeout)
    try:
        j = json.loads(b.decode()) if b else None
    except ValueError:
        j = None
    return s, h, j, lat


def connections_total(st):
    return rel.metrics(st.url("producer")).get("producer_broker_connections_total", -1)


def queue_depth(st):
    """Messages in the request queue; 0 when it does not exist."""
    try:
        out = st.tool("depth", "--queue", st.queue)
    except RuntimeError as e:
        if "NOT_FOUND" in str(e):
            return 0
        raise
    return int(out.split()[0])


# ---------------------------------------------------------------------------------------------


def unroutable(c, st, args):
    tail = os.path.join(st.tmp, "input.log")
    open(tail, "w").close()
    st.start("producer", INPUT_FILE=tail, TAIL_STATE_DIR=os.path.join(st.tmp, "tailstate"))
    accepted = []
    for i in range(5):
        s, _, _, _ = post(st, "/produce", {"id": f"before-{i}", "payload": f"before-{i}"})
        if s == 201:
            accepted.append(f"before-{i}")
    c.check("201 before the queue is deleted", len(accepted) == 5, f"{len(accepted)}")
    st.tool("delete", "--queue", st.queue)
    log("request queue deleted under the running producer")
    accepted = []
    statuses = []
    slowest = 0.0
    for i in range(20):
        s, _, _, lat = post(st, "/produce", {"id": f"after-{i}", "payload": f"after-{i}"})
        statuses.append(s)
        slowest = max(slowest, lat)
        if s == 201:
            accepted.append(f"after-{i}")
    c.check("every answer within the publish deadline",
            slowest < rel.PUBLISH_TIMEOUT_MS / 1000 + rel.LATENCY_SLACK_S, f"{slowest:.2f} s")
    with open(tail, "ab") as f:
        for i in range(10):
            f.write(b"tail-%d\n" % i)
    log(f"after the delete: {statuses}")
    c.check("every answer is 201 or 503 (never a dropped connection)",
            set(statuses) <= {201, 503}, f"{sorted(set(statuses))}")
    # Each 201 must be in the (declared again) queue: count them, then consume them.
    time.sleep(2.0)  # tailed lines are confirmed meanwhile
    depth = queue_depth(st)
    log(f"queue depth {depth} for {len(accepted)} x 201 (+ tailed lines)")
    c.check("the queue exists again and holds at least every 201", depth >= len(accepted),
            f"depth {depth} < {len(accepted)} x 201")
    st.start("consumer")
    want = {x.encode() for x in accepted} | {b"tail-%d" % i for i in range(10)}
    rel.check_output_exactly_once(c, st.output, want, "after the queue was deleted", timeout=30)
    ok, _, _, _, _ = http_call(st.url("producer") + "/health/ready", timeout=5)
    c.check("producer ready again", ok == 200, f"{ok}")
    rel.expect_clean_exit(c, st)


def wait_disconnect(c, st, args):
    st.start("producer", REPLY_TIMEOUT_MS="20000")
    results = {}

    def call(key, path, body):
        results[key] = post(st, path, body, timeout=40)

    threads = [
        threading.Thread(target=call, args=("single", "/produce?wait=true",
                                            {"id": "wd-single", "payload": "wd-single"})),
        threading.Thread(target=call, args=("batch", "/batch-produce",
                                            {"messages": [{"id": "wd-b0", "payload": "wd-b0"},
                                                          {"id": "wd-b1", "payload": "wd-b1"}],
                                             "wait": True})),
    ]
    for t in threads:
        t.start()
    # Both are confirmed (stored) and wait for a reply that no consumer sends yet.
    rel.wait_until(lambda: queue_depth(st) >= 3, 10)
    c.check("the three messages are stored", queue_depth(st) == 3)
    conns = [x for x in st.ctl("-q", "list_connections", "pid", "--no-table-headers").split() if x.startswith("<")]
    log(f"closing {len(conns)} broker connection(s) of the producer")
    for pid in conns:
        st.ctl("close_connection", pid, "test: connection closed under wait=true")
    for t in threads:
        t.join(45)
    s, h, j, _ = results.get("single", (0, {}, None, 0))
    c.check("wait=true single: 504, not 503 (it is stored)", s == 504, f"{s} {j}")
    c.check("504 names the message and says queued",
            j is not None and j.get("message_id") == "wd-single" and j.get("status") == "queued",
            f"{j}")
    c.check("no Retry-After on the 504 (a retry would duplicate)", "retry-after" not in h)
    s, h, j, _ = results.get("batch", (0, {}, None, 0))
    c.check("wait=true batch: 504 with both ids", s == 504 and j is not None and
            j.get("message_ids") == ["wd-b0", "wd-b1"], f"{s} {j}")
    for mid in ("wd-single", "wd-b0", "wd-b1"):
        s2, j2 = rel.get_json(st.url("producer") + "/messages/" + mid)
        c.check(f"GET /messages/{mid}: kept, queued", s2 == 200 and j2 and
                j2.get("status") == "queued", f"{s2} {j2}")
    st.start("consumer")
    rel.check_output_exactly_once(c, st.output, {b"wd-single", b"wd-b0", b"wd-b1"},
                                  "after the disconnect", timeout=30)
    rel.expect_clean_exit(c, st)


def wire_limits(c, st, args):
    st.start("consumer")
    st.start("producer")
    before = connections_total(st)
    stop = threading.Event()
    other = []

    def other_client():
        conn = None
        n = 0
        while not stop.is_set():
            s, _, _, lat, conn = http_call(st.url("producer") + "/produce", "POST",
                                           {"id": f"other-{n}", "payload": f"other-{n}"},
                                           timeout=10, conn=conn)
            other.append((f"other-{n}", s, lat))
            n += 1
            time.sleep(0.01)

    t = threading.Thread(target=other_client, daemon=True)
    t.start()
    time.sleep(0.5)
    for n in range(20):
        s, _, j, _ = post(st, "/produce", {"id": "x" * 256, "payload": "too long"})
        if n == 0:
            c.check("id of 256 bytes: 400", s == 400, f"{s} {j}")
            c.check("the error names the 255-byte limit", j and "255" in j.get("error", ""),
                    f"{j}")
    s, _, j, _ = post(st, "/batch-produce",
                      {"messages": [{"payload": 1}, {"id": "y" * 300, "payload": 2}]})
    c.check("batch with a 300-byte id: 400 naming the item", s == 400 and j and
            "messages[1]" in j.get("error", ""), f"{s} {j}")
    s, _, j, _ = post(st, "/produce?wait=true", {"id": "z" * 255, "payload": "z255"})
    c.check("id of 255 bytes: stored and replied to (200)", s == 200, f"{s} {j}")
    time.sleep(1.0)
    stop.set()
    t.join(15)
    statuses = {x[1] for x in other}
    c.check("the other client got only 201s meanwhile", statuses == {201},
            f"{sorted(statuses)} over {len(other)} requests")
    c.check("no reconnect", connections_total(st) == before,
            f"{before} -> {connections_total(st)}")
    rel.check_output_exactly_once(c, st.output, {x[0].encode() for x in other} | {b"z255"},
                                  "other client", timeout=30)
    rel.expect_clean_exit(c, st)


def same_id(c, st, args):
    st.start("consumer")
    st.start("producer")
    s, _, j, _ = post(st, "/batch-produce", {"messages": [{"id": "dup", "payload": "first"},
                                                          {"id": "dup", "payload": "second"}]})
    c.check("batch with one id twice: 201", s == 201, f"{s} {j}")
    s, _, j, _ = post(st, "/produce", {"id": "dup", "payload": "third"})
    c.check("the same id again in another request: 201", s == 201, f"{s} {j}")
    # A retried message keeps its identity through the delay queue (not its client id).
    s, _, j, _ = post(st, "/produce", {"id": "dup", "payload": "fourth", "fail_times": 1})
    c.check("the same id, failing once: 201", s == 201, f"{s} {j}")
    rel.check_output_exactly_once(c, st.output, {b"first", b"second", b"third", b"fourth"},
                                  "one client id, four payloads", timeout=30)
    rel.expect_clean_exit(c, st)


def partial(c, st, args):
    # A queue at its length limit nacks what does not fit (reject-publish); a classic queue
    # applies the limit message by message (a quorum queue may let a burst overshoot it).
    st.start("producer", QUEUE_TYPE="classic")
    st.ctl("set_policy", "cap", "^" + st.queue + "$",
           '{"max-length": 3, "overflow": "reject-publish"}', "--apply-to", "queues")
    time.sleep(1.0)
    ids = [f"part-{i}" for i in range(5)]
    s, h, j, _ = post(st, "/batch-produce", {"messages": [{"id": x, "payload": x} for x in ids]})
    log(f"batch of 5 into a queue with room for 3: {s} {j}")
    c.check("a partly refused batch is 503 with Retry-After", s == 503 and "retry-after" in h,
            f"{s}")
    stored = (j or {}).get("stored", [])
    c.check("it lists the 3 stored ids", stored == ids[:3], f"{j}")
    c.check("and the 2 not stored", (j or {}).get("not_stored") == ids[3:], f"{j}")
    c.check("nothing unknown", (j or {}).get("unknown") == [], f"{j}")
    c.check("the queue holds exactly the stored ones", queue_depth(st) == 3, f"{queue_depth(st)}")
    for mid in ids[:3]:
        s2, j2 = rel.get_json(st.url("producer") + "/messages/" + mid)
        c.check(f"GET /messages/{mid}: queued", s2 == 200 and j2 and j2.get("status") == "queued",
                f"{s2} {j2}")
    s, _, j, _ = post(st, "/produce", {"id": "part-single", "payload": "x"})
    c.check("a refused single: 503 saying it is not stored", s == 503 and j and
            j.get("message_id") == "part-single" and j.get("stored") is False, f"{s} {j}")
    rc, secs = st.term("producer")
    c.check(f"producer exits 0 on SIGTERM ({secs:.1f} s)", rc == 0, f"status {rc}")


def dlq_unroutable(c, st, args):
    st.start("producer")
    st.tool("publish", "--queue", st.queue + ".dlq", "--count", "3", "--id-prefix", "dlqmsg")
    st.tool("delete", "--queue", st.queue)
    log("3 messages in the DLQ; the request queue deleted")
    s, _, j, _ = post(st, "/dlq/retry", {})
    c.check("POST /dlq/retry with nowhere to route: not 200", s != 200, f"{s} {j}")
    c.check("... 503 saying why", s == 503 and j and "return" in j.get("error", ""), f"{s} {j}")
    out = st.tool("depth", "--queue", st.queue + ".dlq")
    c.check("the DLQ still holds all 3 (nothing acked past a returned copy)",
            int(out.split()[0]) == 3, out.strip())
    rc, secs = st.term("producer")
    c.check(f"producer exits 0 on SIGTERM ({secs:.1f} s)", rc == 0, f"status {rc}")


SCENARIOS = {"partial": partial, "dlq-unroutable": dlq_unroutable, "unroutable": unroutable, "wait-disconnect": wait_disconnect,
             "wire-limits": wire_limits, "same-id": same_id}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--build-dir", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--amqp-port", type=int, help="use this broker (else start one)")
    args = ap.parse_args()
    return rel.run_scenario(SCENARIOS, args, "pub")


if __name__ == "__main__":
    sys.exit(main())
