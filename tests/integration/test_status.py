#!/usr/bin/python3
"""Results that outlive a producer (issue 17): two producer replicas (A, B on their own ports)
and one consumer on one request queue and one status stream, against a real broker.

Scenarios (all by default, or name some):
  async     202 + Location on A (Prefer: respond-async, and ?wait=N), the result on B; a reply
            within N is answered inline; GET ?wait=N long-polls; the timeline
  restart   A restarted: the result is still there (read back from the stream)
  idem      one Idempotency-Key on A, then on B, then after A's restart: one message in the
            queue and one line in OUTPUT_FILE; a batch with per-item keys; concurrent repeats
  outage    the stream is gone (deleted, and the user may not declare it): /produce keeps
            answering 201, GET says status_stream "unavailable"; back once allowed again

    python3 tests/integration/test_status.py [--bin build/bin] [scenario ...]
Standard library only; starts and stops its own broker (qharness).
"""

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import qharness  # noqa: E402

HOST = "127.0.0.1"


class Consumer:
    def __init__(self, st, env):
        a = st.args
        self.log = os.path.join(a.work, "consumer-%s.log" % secrets.token_hex(2))
        e = dict(os.environ)
        e.update({"RABBITMQ_HOST": HOST, "RABBITMQ_PORT": str(a.amqp_port),
                  "CONSUMER_PORT": str(qharness.free_port()), "LOG_LEVEL": "info"})
        e.update(env)
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen([os.path.join(a.bin, "consumer")], env=e,
                                     stdout=self.logf, stderr=subprocess.STDOUT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode

    def sanitizer_report(self):
        with open(self.log, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        return re.search(r"AddressSanitizer|runtime error:|LeakSanitizer", text) is not None


class Env:
    """The shared settings of one run: queue, stream, output file."""

    def __init__(self, st):
        tag = secrets.token_hex(3)
        self.st = st
        self.queue = "st_q_" + tag
        self.stream = "relayq.status.t" + tag
        self.output = os.path.join(st.args.work, "out-%s.txt" % tag)
        self.common = {"REQUEST_QUEUE": self.queue, "STATUS_STREAM": self.stream,
                       "STATUS_MAX_BYTES": "67108864", "MAX_RETRIES": "1",
                       "RETRY_BASE_MS": "100"}

    def producer(self, name, extra=None):
        e = dict(self.common)
        e.update(extra or {})
        return self.st.producer(name, e)

    def consumer(self):
        e = dict(self.common)
        e.update({"OUTPUT_FILE": self.output})
        c = Consumer(self.st, e)
        self.st.consumers.append(c)
        return c


def post(st, p, path, body, headers=None, timeout=30):
    return st.request(p, "POST", path, body, headers=headers, timeout=timeout)


def get(st, p, path, timeout=30):
    return st.request(p, "GET", path, timeout=timeout)


def wait_until(fn, seconds, step=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


def seen_on(st, p, mid, seconds=10, status=None):
    """GET /messages/{mid} on p until 200 (and the status, when given); the last answer."""
    def probe():
        r = get(st, p, "/messages/" + mid)
        if r.status == 200 and (status is None or (r.json() or {}).get("status") == status):
            return r
        return None
    return wait_until(probe, seconds) or get(st, p, "/messages/" + mid)


def output_lines(env):
    try:
        with open(env.output, "rb") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def scenario_async(st, env, a, b):
    ck = st.ck
    r = post(st, a, "/produce", {"payload": "slow", "processing_time": 1.5},
             headers={"Prefer": "respond-async"})
    o = r.json() or {}
    loc = r.headers.get("location", "")
    ck.check("async: Prefer respond-async answers 202", r.status == 202, (r.status, r.body[:300]))
    ck.check("async: Location /messages/{id}", loc == "/messages/" + o.get("message_id", "?"),
             (loc, o))
    ck.check("async: Preference-Applied", "respond-async" in r.headers.get("preference-applied", ""),
             r.headers)
    ck.check("async: the 202 holds the status so far", o.get("status") in ("queued", "processing"),
             o)
    t0 = time.monotonic()
    r2 = get(st, b, loc + "?wait=15", timeout=30)
    o2 = r2.json() or {}
    ck.check("async: GET ?wait on replica B answers once processed",
             r2.status == 200 and o2.get("status") == "processed", (r2.status, r2.body[:400]))
    ck.check("async: B's result holds the reply", o2.get("reply") == "Consumer processed: slow", o2)
    events = [e.get("event") for e in o2.get("timeline", [])]
    for ev in ("accepted", "confirmed", "delivered", "replied"):
        ck.check("async: the timeline holds %s" % ev, ev in events, events)
    ck.check("async: the long poll returned early (not at its deadline)",
             time.monotonic() - t0 < 10, time.monotonic() - t0)
    # A reply within N seconds is answered inline.
    r = post(st, a, "/produce?wait=10", {"payload": "quick"})
    ck.check("async: ?wait=10 with a quick consumer answers 200 with the reply",
             r.status == 200 and (r.json() or {}).get("reply") == "Consumer processed: quick",
             (r.status, r.body[:300]))
    # Not within N: 202 after about N seconds.
    t0 = time.monotonic()
    r = post(st, a, "/produce", {"payload": "slower", "processing_time": 3},
             headers={"Prefer": "respond-async, wait=1"})
    dt = time.monotonic() - t0
    ck.check("async: Prefer wait=1 with a 3 s message answers 202 after about 1 s",
             r.status == 202 and 0.8 < dt < 2.5, (r.status, dt))
    mid = (r.json() or {}).get("message_id", "?")
    r = seen_on(st, b, mid, 15, "processed")
    ck.check("async: ... and B has its result later", r.status == 200 and
             (r.json() or {}).get("status") == "processed", (r.status, r.body[:300]))
    # wait=true keeps its meaning: 200 with the reply.
    r = post(st, b, "/produce?wait=true", {"payload": "sync"})
    ck.check("async: wait=true still answers 200 with the reply", r.status == 200 and
             (r.json() or {}).get("reply") == "Consumer processed: sync", (r.status, r.body[:300]))
    for bad in ("/produce?wait=-1", "/produce?wait=abc", "/produce?wait=999999"):
        r = post(st, a, bad, {"payload": "x"})
        ck.check("async: %s is 400" % bad, r.status == 400 and "error" in (r.json() or {}),
                 (r.status, r.body[:200]))
    r = post(st, a, "/produce", {"payload": "x"}, headers={"Prefer": "wait=abc"})
    ck.check("async: Prefer wait=abc is 400", r.status == 400, r.status)
    r = post(st, a, "/produce", {"payload": "bws"},
             headers={"Prefer": 'respond-async; foo=1, wait = "10"'})
    ck.check("async: Prefer with spaces around '=' and a quoted value (RFC 7240) is understood",
             r.status == 200 and (r.json() or {}).get("reply") == "Consumer processed: bws",
             (r.status, r.body[:200]))
    # A failing message: retried, then dead-lettered (MAX_RETRIES 1), status failed.
    r = post(st, a, "/produce", {"payload": "bad", "fail_times": 5},
             headers={"Prefer": "respond-async"})
    mid = (r.json() or {}).get("message_id", "?")
    r = get(st, b, "/messages/%s?wait=20" % mid, timeout=30)
    o = r.json() or {}
    events = [e.get("event") for e in o.get("timeline", [])]
    ck.check("async: a failing message ends failed on B", o.get("status") == "failed", o)
    ck.check("async: its timeline shows retried and dead_lettered",
             "retried" in events and "dead_lettered" in events, events)
    r = get(st, b, "/messages/no-such-id?wait=1")
    ck.check("async: an unknown id is 404 after its wait", r.status == 404, r.status)
    return mid


def visibility(st, env, a, b, n=50):
    """How soon B sees A's messages: p50/p99 of the first 200 on B after A's 201 (polled)."""
    lat = []
    for i in range(n):
        r = post(st, a, "/produce", {"payload": "v%d" % i})
        if r.status != 201:
            continue
        mid = (r.json() or {}).get("message_id")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            if get(st, b, "/messages/" + mid).status == 200:
                lat.append(time.monotonic() - t0)
                break
            time.sleep(0.002)
    lat.sort()
    if lat:
        print("visibility: another replica sees a confirmed message after p50 %.1f ms, "
              "p99 %.1f ms (n=%d, polled every 2 ms)" % (lat[len(lat) // 2] * 1e3,
                                                          lat[min(len(lat) - 1, int(len(lat) * .99))] * 1e3,
                                                          len(lat)))
    st.ck.check("visibility: B saw every message of A within 5 s", len(lat) == n, len(lat))


def scenario_restart(st, env, a, b, mid_failed):
    ck = st.ck
    r = post(st, a, "/produce?wait=true", {"payload": "before-restart"})
    mid = (r.json() or {}).get("message_id", "?")
    ck.check("restart: a processed message on A", r.status == 200, r.status)
    rc = a.stop()
    st.procs.remove(a)
    ck.check("restart: A exits 0", rc == 0, rc)
    a2 = env.producer("a2")
    r = seen_on(st, a2, mid, 15, "processed")
    o = r.json() or {}
    ck.check("restart: the restarted A has the result back", r.status == 200 and
             o.get("reply") == "Consumer processed: before-restart", (r.status, r.body[:300]))
    r = seen_on(st, a2, mid_failed, 15, "failed")
    ck.check("restart: and the failed one's timeline", r.status == 200, r.status)
    return a2


def scenario_idem(st, env, a, b):
    ck = st.ck
    key = "order-" + secrets.token_hex(4)
    before = len(output_lines(env))
    r1 = post(st, a, "/produce", {"payload": "idem-1"}, headers={"Idempotency-Key": key})
    o1 = r1.json() or {}
    ck.check("idem: the first request is 201", r1.status == 201, (r1.status, r1.body[:200]))
    r2 = post(st, b, "/produce", {"payload": "idem-1"}, headers={"Idempotency-Key": key})
    o2 = r2.json() or {}
    ck.check("idem: the same key on replica B at once is 200 duplicate with the same id",
             r2.status == 200 and o2.get("duplicate") is True and
             o2.get("message_id") == o1.get("message_id"), (r2.status, r2.body[:300]))
    r3 = post(st, a, "/produce", {"payload": "idem-1"}, headers={"Idempotency-Key": key})
    ck.check("idem: again on A: duplicate", r3.status == 200 and
             (r3.json() or {}).get("duplicate") is True, r3.status)
    # A batch: per-item keys, one of them already used.
    k2 = "item-" + secrets.token_hex(4)
    r = post(st, b, "/batch-produce", {"messages": [
        {"payload": "idem-b1", "idempotency_key": key},
        {"payload": "idem-b2", "idempotency_key": k2}]})
    o = r.json() or {}
    ck.check("idem: a batch with a used key publishes only the new one",
             r.status == 201 and o.get("messages_produced") == 1 and
             o.get("duplicates") == [o1.get("message_id")] and len(o.get("message_ids", [])) == 2,
             (r.status, r.body[:300]))
    r = post(st, a, "/batch-produce", {"messages": [{"payload": "idem-b2", "idempotency_key": k2}]})
    ck.check("idem: the batch's key on A: all duplicates, 200", r.status == 200 and
             (r.json() or {}).get("messages_produced") == 0, (r.status, r.body[:300]))
    r = post(st, a, "/batch-produce?wait=true", {"messages": [
        {"payload": "idem-b2", "idempotency_key": k2}, {"payload": "idem-b3"}]})
    o = r.json() or {}
    ck.check("idem: a waiting batch with a duplicate: replies line up with message_ids "
             "(null for the duplicate)", r.status == 200 and
             o.get("replies") == [None, "Consumer processed: idem-b3"] and
             len(o.get("message_ids", [])) == 2, (r.status, r.body[:300]))
    r = post(st, a, "/produce", {"payload": "x"}, headers={"Idempotency-Key": "bad\x7fkey"})
    ck.check("idem: a key with a control character is 400", r.status == 400, r.status)
    r = post(st, a, "/batch-produce", {"messages": [{"payload": 1, "idempotency_key": "k"},
                                                     {"payload": 2, "idempotency_key": "k"}]})
    ck.check("idem: one key twice in a batch is 400", r.status == 400, r.status)
    # Concurrent repeats on both replicas: exactly one message.
    k3 = "race-" + secrets.token_hex(4)
    res = []

    def one(p):
        res.append(post(st, p, "/produce", {"payload": "race"}, headers={"Idempotency-Key": k3}))
    ths = [threading.Thread(target=one, args=(p,)) for p in (a, a, b, b, a, b)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    created = [x for x in res if x.status == 201]
    print("idem: 6 concurrent requests with one key on two replicas: %s" %
          sorted(x.status for x in res))
    ck.check("idem: concurrent repeats: at least one 201, the rest 200 duplicate or 409",
             len(created) >= 1 and all(x.status in (200, 201, 409) for x in res),
             [x.status for x in res])
    # The output: one line per key (the consumer deduplicates on the key too).
    def lines_ok():
        lines = output_lines(env)[before:]
        return (lines.count(b"idem-1") == 1 and lines.count(b"idem-b2") == 1 and
                lines.count(b"race") == 1)
    ok = wait_until(lines_ok, 15, 0.2)
    lines = output_lines(env)[before:]
    ck.check("idem: OUTPUT_FILE holds each keyed message once", ok,
             {x: lines.count(x) for x in (b"idem-1", b"idem-b2", b"race")})
    return key


def idem_race(st, env, a, b, pairs=10):
    """The race window of one key on two replicas: a request to A, then after delta ms the
    same key to B (each on its own connection); how many pairs published twice (both 201).
    After the first answer (delta past A's 201) a repeat is always a duplicate."""
    out = {}
    late = wrong = 0
    for delta in (0, 2, 5, 10, 20, 50):
        twice = 0
        for i in range(pairs):
            k = "w-%d-%d-%s" % (delta, i, secrets.token_hex(3))
            res = {}

            def send(p, name):
                res[name + "_t0"] = time.monotonic()
                res[name] = post(st, p, "/produce", {"payload": "race-window"},
                                 headers={"Idempotency-Key": k})
                res[name + "_t1"] = time.monotonic()
            ta = threading.Thread(target=send, args=(a, "a"))
            tb = threading.Thread(target=send, args=(b, "b"))
            ta.start()
            time.sleep(delta / 1000.0)
            tb.start()
            ta.join()
            tb.join()
            both = res["a"].status == 201 and res["b"].status == 201
            twice += both
            # B sent once A had its answer: always a duplicate, however loaded the machine
            late += res["b_t0"] > res["a_t1"]
            wrong += both and res["b_t0"] > res["a_t1"]
        out[delta] = twice
    print("idem race window: pairs (of %d) published twice, by the delay between A and B: %s"
          % (pairs, ", ".join("%d ms: %d" % kv for kv in sorted(out.items()))))
    st.ck.check("idem race: a repeat sent after the first answer is never published again "
                "(%d such pairs)" % late, wrong == 0, (wrong, out))


def scenario_idem_restart(st, env, a, key):
    r = post(st, a, "/produce", {"payload": "idem-1"}, headers={"Idempotency-Key": key})
    st.ck.check("idem: after A's restart the key is still a duplicate", r.status == 200 and
                (r.json() or {}).get("duplicate") is True, (r.status, r.body[:300]))


def scenario_outage(st, env, a, b):
    ck = st.ck
    deny = "^(?!%s$).*" % env.stream.replace(".", "\\.")
    r = st.ctl("set_permissions", "-p", "/", "guest", deny, deny, deny)
    ck.check("outage: permissions set", r is not None and r.returncode == 0, r and r.stderr)
    r = st.ctl("delete_queue", env.stream)
    ck.check("outage: stream deleted", r is not None and r.returncode == 0, r and r.stderr)
    # Once A knows (its consumer was cancelled, it may not declare the stream again): what it
    # produces now is kept for later. (Events published while the broker was still deleting
    # the stream may be confirmed and lost with it: a broker-side window.)
    probe = (post(st, a, "/produce", {"payload": "probe"}).json() or {}).get("message_id", "?")
    ck.check("outage: GET says the stream is unavailable", wait_until(
        lambda: (get(st, a, "/messages/" + probe).json() or {}).get("status_stream") ==
        "unavailable", 10, 0.1), get(st, a, "/messages/" + probe).body[:300])
    ok = 0
    t0 = time.monotonic()
    during = []
    for i in range(40):
        r = post(st, a, "/produce", {"payload": "out-%d" % i})
        ok += r.status == 201
        during.append((r.json() or {}).get("message_id", "?"))
    ck.check("outage: /produce keeps answering 201 without the stream", ok == 40, ok)
    t1 = time.monotonic()
    r = post(st, a, "/produce", {"payload": "keyed-out"},
             headers={"Idempotency-Key": "out-" + secrets.token_hex(4)})
    dt = time.monotonic() - t1
    ck.check("outage: a keyed produce does not wait for the missing stream (201 within 1 s)",
             r.status == 201 and dt < 1.0, (r.status, round(dt, 2)))
    print("outage: 40 produces in %.2f s without the stream" % (time.monotonic() - t0))
    allow = ".*"
    st.ctl("set_permissions", "-p", "/", "guest", allow, allow, allow)
    def back():
        m = post(st, a, "/produce", {"payload": "back"})
        mid = (m.json() or {}).get("message_id", "?")
        g = seen_on(st, b, mid, 1)
        return g.status == 200 and (g.json() or {}).get("status_stream") == "up"
    ck.check("outage: once allowed again, B sees A's messages again", wait_until(back, 30, 0.5))
    # (each writer catches up on its own reconnect: the consumer's events may come first)
    missing = during

    def all_there():
        nonlocal missing
        missing = [m for m in missing if get(st, b, "/messages/" + m).status != 200]
        return not missing
    wait_until(all_there, 20, 0.5)
    ck.check("outage: the messages produced during the outage reach B once it is back "
             "(A kept their events)", not missing, "%d of %d missing" % (len(missing), len(during)))


def main():
    ap = qharness.arg_parser(__doc__)
    ap.add_argument("scenarios", nargs="*")
    args = ap.parse_args()
    wanted = args.scenarios or ["async", "restart", "idem", "outage"]
    with qharness.Stack(args) as st:
        st.consumers = []
        try:
            env = Env(st)
            a, b = env.producer("a"), env.producer("b")
            env.consumer()
            time.sleep(0.5)
            mid_failed, key = "?", None
            if "async" in wanted:
                mid_failed = scenario_async(st, env, a, b)
                visibility(st, env, a, b)
            if "idem" in wanted:
                key = scenario_idem(st, env, a, b)
                idem_race(st, env, a, b)
            if "restart" in wanted:
                a = scenario_restart(st, env, a, b, mid_failed)
                if key:
                    scenario_idem_restart(st, env, a, key)
            if "outage" in wanted:
                scenario_outage(st, env, a, b)
        finally:
            for c in st.consumers:
                rc = c.stop()
                st.ck.check("consumer exits 0 on SIGTERM", rc == 0, rc)
                st.ck.check("consumer: no sanitizer report", not c.sanitizer_report(), c.log)
    sys.exit(st.ck.summary())


if __name__ == "__main__":
    main()
