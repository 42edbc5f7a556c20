#!/usr/bin/python3
"""Review R2 of the queue service (issue 16): races and limits the other scenarios miss.

  create-race   two producer replicas create the same queue at the same moment with different
                max_retries (an argument only relayq reads, which the broker does not compare):
                at most one of them may answer 201/200; the other 409 naming the argument.

  frame-max     a broker with frame_max = 4096 (plain AMQP and TLS): a message whose headers are
                within the API's limits (8 KiB) but whose content header cannot fit one frame is
                refused alone (400, before anything is sent), the connection stays up (no
                reconnect), and the next message is 201 and stored.

  delay-load    many delayed messages to many delay buckets (each new bucket: a passive declare and
                a declare on the side channel 2 while channel 1 has confirms in flight),
                interleaved with plain ones, from 4 clients at once: every message answered 201
                is in the queue, exactly once, and no answer is "unknown".

  delete-delayed  a queue whose only messages wait in a delay bucket is not empty: DELETE without
                ?force is 409, with and without the management API (without it the buckets
                cannot be listed), and ?force=true removes the buckets too.

  delete-race   DELETE ?force=true while a client keeps sending delayed messages to new delay
                buckets: afterwards no bucket of the queue is left (a bucket left behind would
                take 201 messages and dead-letter them into a queue that is gone).

  foreign-delete  without the management API (RABBITMQ_MANAGEMENT_URL=off, or unreachable),
                DELETE of a queue relayq did not create (another application's, without a
                <q>.dlq) is refused (409), with and without ?force=true: the queue is still
                there. A queue relayq created is still deleted.

  raw-edge      raw bodies at the edges: the same Message-Header-<name> twice (in any case) is 400
                naming it (an AMQP table with one key twice is ambiguous for every consumer),
                and the connection is not dropped; queue names in URLs with %2F, %00, "..",
                unicode are 400 or 404, never a publish.

  bucket-type   two replicas with different QUEUE_TYPE (a migration from classic to quorum, rolled
                out one replica at a time) delay messages into the same bucket: the second
                replica finds the bucket with the other type and uses it (201 and delivered),
                as the leaser does, instead of a 503 for every delayed message.

  cc-header     headers named CC or BCC (RabbitMQ's sender-selected distribution: the broker
                closes the publishing channel for a CC that is not an array, and would route a
                copy elsewhere for one that is) are refused with 400 on every path; the
                connection is not dropped and the next message is 201.

  max-delay     delay_ms 86400000 (the documented maximum, whose bucket rounds up to 87000000) and
                86000001: 201 and the message waits in its bucket; the connection is not dropped.

Against a private broker with the management plugin (qharness). Standard library only;
bounded (each request 15 s, the run about a minute).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qharness  # noqa: E402

ROUNDS = 12


def create_race(st, a, b):
    ck = st.ck
    both_ok = []
    answers = []
    for i in range(ROUNDS):
        q = st.qname("race%d" % i)
        res = {}

        def post(p, key, retries):
            try:
                res[key] = st.request(p, "POST", "/queues",
                                      {"name": q, "type": "classic", "max_retries": retries,
                                       "retry_base_ms": 100})
            except OSError as e:  # noqa: PERF203
                res[key] = e
        ts = [threading.Thread(target=post, args=(a, "a", 2)),
              threading.Thread(target=post, args=(b, "b", 3))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        sa = getattr(res.get("a"), "status", None)
        sb = getattr(res.get("b"), "status", None)
        answers.append((sa, sb))
        if sa in (200, 201) and sb in (200, 201):
            both_ok.append(q)
        elif sorted([sa, sb]) == [201, 409]:
            loser = res["a"] if sa == 409 else res["b"]
            ck.check("race %d: the 409 names x-relayq-max-retries" % i,
                     "x-relayq-max-retries" in loser.body.decode("utf-8", "replace"), loser)
        else:
            ck.check("race %d: one 201 and one 409" % i, False, (sa, sb))
        # whatever happened, the queue has the settings the winner was told
        g = st.request(a, "GET", "/queues/" + q)
        mr = ((g.json() or {}).get("settings") or {}).get("max_retries")
        winner = 2 if sa in (200, 201) and sb not in (200, 201) else 3 if sb in (200, 201) and \
            sa not in (200, 201) else None
        if winner is not None:
            ck.check("race %d: GET shows the winner's max_retries" % i, mr == winner, (mr, g))
    ck.check("create race: never two successes for different max_retries (%d rounds)" % ROUNDS,
             not both_ok, {"both_ok": both_ok, "answers": answers})


def amqp_tool(args, *argv, timeout=60):
    cmd = [os.path.join(args.bin, "rq_amqp_tool"), argv[0], "--port", str(args.amqp_port),
           "--quiet"] + list(argv[1:])
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


def delay_load(st):
    import json
    import random
    ck = st.ck
    p = st.producer("dl")
    q = st.qname("dl")
    amqp_tool(st.args, "declare", "--queue", q)
    stored, answers, lock = [], [], threading.Lock()

    def client(c):
        rnd = random.Random(c)
        for i in range(40):
            msgs = []
            for k in range(6):
                mid = "c%d-%d-%d" % (c, i, k)
                m = {"id": mid, "payload": k}
                d = rnd.choice([0, 0] + list(range(1, 99, 3)))
                if d:
                    m["delay_ms"] = d
                msgs.append(m)
            try:
                r = st.request(p, "POST", "/queues/%s/messages" % q, {"messages": msgs}, timeout=20)
            except OSError as e:
                with lock:
                    answers.append(("error", str(e)))
                continue
            with lock:
                answers.append((r.status, r.body[:200]))
                if r.status == 201:
                    stored.extend(m["id"] for m in msgs)
    missing_q = st.qname("gone")
    nf = []

    def to_missing():
        # returns from a missing named queue: every bucket is forgotten and declared again
        # (side-channel RPCs) while the other clients' confirms are in flight
        for i in range(60):
            r = st.request(p, "POST", "/queues/%s/messages" % missing_q, {"payload": i})
            nf.append(r.status)
    ts = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    ts.append(threading.Thread(target=to_missing))
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    ck.check("delay-load: a missing queue -> 404 every time", set(nf) == {404}, set(nf))
    time.sleep(1.5)  # the longest delay is 97 ms (+ the broker's TTL sweep)
    r = amqp_tool(st.args, "get", "--queue", q, "--format", "json")
    got = [json.loads(line).get("message_id") for line in r.stdout.decode().splitlines()
           if line.strip()]
    statuses = sorted(set(a[0] for a in answers), key=str)
    ck.check("delay-load: every request 201 (%d answers, statuses %s)" % (len(answers), statuses),
             len(answers) == 160 and statuses == [201], [a for a in answers if a[0] != 201][:3])
    missing = sorted(set(stored) - set(got))
    dups = len(got) - len(set(got))
    ck.check("delay-load: every 201 message is in the queue (%d stored, %d got, %d missing)"
             % (len(stored), len(got), len(missing)), not missing, missing[:10])
    ck.check("delay-load: no message twice (%d duplicates)" % dups, dups == 0)


def delete_delayed(st):
    ck = st.ck
    for label, env in (("mgmt", {}), ("no mgmt", {"RABBITMQ_MANAGEMENT_URL": "off"})):
        p = st.producer("dd" + label.replace(" ", ""), env)
        q = st.qname("dd")
        r = st.request(p, "POST", "/queues", {"name": q, "type": "classic"})
        ck.check("delete-delayed %s: created" % label, r.status == 201, r)
        r = st.request(p, "POST", "/queues/%s/messages" % q, {"payload": 1, "delay_ms": 60000})
        ck.check("delete-delayed %s: delayed message 201" % label, r.status == 201, r)
        r = st.request(p, "DELETE", "/queues/" + q)
        ck.check("delete-delayed %s: DELETE without force -> 409 (a message waits in %s.delay."
                 "60000)" % (label, q), r.status == 409, r)
        r = st.request(p, "DELETE", "/queues/%s?force=true" % q)
        ck.check("delete-delayed %s: DELETE ?force=true -> 200" % label, r.status == 200, r)
        left = amqp_tool(st.args, "depth", "--queue", q + ".delay.60000")
        ck.check("delete-delayed %s: the delay bucket is gone" % label, left.returncode != 0,
                 left.stdout)


def mgmt_queue_names(st, prefix):
    """The broker's queue names starting with prefix; None when the management API never
    answered with a list (qharness.mgmt_queue_names)."""
    return qharness.mgmt_queue_names(st.args.mgmt_port, prefix)


def delete_race(st, rounds=15):
    ck = st.ck
    if not ck.check("delete-race: the stack has a management API (to list what is left)",
                    bool(st.args.mgmt_port)):
        return
    p = st.producer("dr")
    left, statuses = [], set()
    for rnd in range(rounds):
        q = st.qname("dr%d" % rnd)
        st.request(p, "POST", "/queues", {"name": q, "type": "classic"})
        stop = threading.Event()

        def sender():
            i = 0
            while not stop.is_set() and i < 800:
                # a new bucket almost every time: 100..990 s in steps of 10 s, then on
                r = st.request(p, "POST", "/queues/%s/messages" % q,
                               {"payload": i, "delay_ms": 100000 + 10000 * (i % 89) + 7})
                statuses.add(r.status)
                i += 1
                if r.status == 404:
                    break
        t = threading.Thread(target=sender)
        t.start()
        time.sleep(0.15 + 0.02 * rnd)
        r = st.request(p, "DELETE", "/queues/%s?force=true" % q)
        t.join(30)
        stop.set()
        time.sleep(0.2)
        names = mgmt_queue_names(st, q + ".")
        if names is None:
            left.append("round %d: the management API gave no queue list in 20 tries" % rnd)
        elif names:
            left.append(names)
    ck.check("delete-race: answers are 201 or 404 only", statuses <= {201, 404}, statuses)
    ck.check("delete-race: no delay bucket left behind (%d rounds)" % rounds, not left, left[:3])


def foreign_delete(st):
    ck = st.ck
    for label, env in (("off", {"RABBITMQ_MANAGEMENT_URL": "off"}),
                       ("unreachable", {"RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:%d"
                                        % qharness.free_port()})):
        p = st.producer("fd" + label, env)
        f = st.qname("foreign")
        amqp_tool(st.args, "declare", "--queue", f)
        r = st.request(p, "DELETE", "/queues/" + f)
        ck.check("foreign-delete (%s): DELETE of another application's empty queue -> 409"
                 % label, r.status == 409, r)
        r = st.request(p, "DELETE", "/queues/%s?force=true" % f)
        ck.check("foreign-delete (%s): with ?force=true -> 409" % label, r.status == 409, r)
        ck.check("foreign-delete (%s): the queue is still there" % label,
                 amqp_tool(st.args, "depth", "--queue", f).returncode == 0)
        q = st.qname("own")
        r = st.request(p, "POST", "/queues", {"name": q, "type": "classic"})
        t0 = time.monotonic()
        r = st.request(p, "DELETE", "/queues/" + q)
        el = time.monotonic() - t0
        ck.check("foreign-delete (%s): a queue relayq created -> 200 within 5 s (%.2f s: every "
                 "possible delay bucket probed)" % (label, el), r.status == 200 and el < 5, r)


def raw_post(port, path, body, headers):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    c.putrequest("POST", path)
    for k, v in headers:
        c.putheader(k, v)
    c.putheader("Content-Length", str(len(body)))
    c.endheaders()
    c.send(body)
    r = c.getresponse()
    out = (r.status, r.read())
    c.close()
    return out


def raw_edge(st):
    ck = st.ck
    p = st.producer("re")
    q = st.qname("re")
    amqp_tool(st.args, "declare", "--queue", q)
    c0 = connections(p)
    for hs in ([("Message-Header-Color", "red"), ("Message-Header-Color", "blue")],
               [("Message-Header-Color", "red"), ("message-header-COLOR", "blue")]):
        st_, body = raw_post(p.port, "/queues/%s/messages" % q, b"raw!",
                             [("Content-Type", "text/plain")] + hs)
        ck.check("raw-edge: header %s twice -> 400 naming it" % hs[1][0], st_ == 400 and
                 b"color" in body.lower(), (st_, body[:200]))
    ck.check("raw-edge: nothing published", depth_of(st, q) == 0, depth_of(st, q))
    for path in ("/queues/%2F/messages", "/queues/a%00b/messages", "/queues/../messages",
                 "/queues/%2E%2E/messages", "/queues/caf%C3%A9/messages",
                 "/queues/%s%%2Fx/messages" % q):
        st_, body = raw_post(p.port, path, b'{"payload":1}', [("Content-Type", "application/json")])
        ck.check("raw-edge: POST %s -> 400/404/405" % path, st_ in (400, 404, 405),
                 (st_, body[:200]))
    ck.check("raw-edge: still nothing in %s or the default queue" % q,
             depth_of(st, q) == 0 and p.depth() == 0, (depth_of(st, q), p.depth()))
    ck.check("raw-edge: no reconnect", connections(p) == c0, (c0, connections(p)))


def depth_of(st, q):
    r = amqp_tool(st.args, "depth", "--queue", q)
    try:
        return int(r.stdout.decode().split()[-1])
    except (ValueError, IndexError):
        return -1


def bucket_type(st):
    ck = st.ck
    a = st.producer("btc", {"QUEUE_TYPE": "classic"})
    b = st.producer("btq", {"QUEUE_TYPE": "quorum"})
    q = st.qname("bt")
    amqp_tool(st.args, "declare", "--queue", q)
    r1 = st.request(a, "POST", "/queues/%s/messages" % q, {"payload": 1, "delay_ms": 300})
    r2 = st.request(b, "POST", "/queues/%s/messages" % q, {"payload": 2, "delay_ms": 300})
    ck.check("bucket-type: classic replica 201", r1.status == 201, r1)
    ck.check("bucket-type: quorum replica into the classic bucket 201", r2.status == 201, r2)
    time.sleep(1.5)
    ck.check("bucket-type: both delivered", depth_of(st, q) == (1 + (r2.status == 201)),
             depth_of(st, q))


def cc_header(st):
    ck = st.ck
    p = st.producer("cc", {"PUBLISH_TIMEOUT_MS": "3000"})
    q = st.qname("cc")
    amqp_tool(st.args, "declare", "--queue", q)
    c0 = connections(p)
    for name in ("CC", "BCC"):
        t0 = time.monotonic()
        r = st.request(p, "POST", "/queues/%s/messages" % q,
                       {"payload": 1, "headers": {name: "elsewhere"}})
        ck.check("cc-header: header %s -> 400 at once (%.1f s)" % (name, time.monotonic() - t0),
                 r.status == 400 and name in r.body.decode(), r)
    r = st.request(p, "POST", "/produce", {"payload": 1, "headers": {"CC": q}})
    ck.check("cc-header: /produce with CC -> 400", r.status == 400, r)
    r = st.request(p, "POST", "/queues/%s/messages" % q, {"payload": 2})
    ck.check("cc-header: the next message -> 201", r.status == 201, r)
    ck.check("cc-header: no reconnect (%s -> %s)" % (c0, connections(p)), connections(p) == c0)
    ck.check("cc-header: only the plain message is in the queue and nothing in the default "
             "queue", depth_of(st, q) == 1 and p.depth() == 0, (depth_of(st, q), p.depth()))


def max_delay(st):
    ck = st.ck
    p = st.producer("md", {"PUBLISH_TIMEOUT_MS": "3000"})
    q = st.qname("md")
    amqp_tool(st.args, "declare", "--queue", q)
    c0 = connections(p)
    for d in (86400000, 86000001, 85999999):
        r = st.request(p, "POST", "/queues/%s/messages" % q, {"payload": 1, "delay_ms": d})
        ck.check("max-delay: delay_ms %d -> 201" % d, r.status == 201, r)
    r = st.request(p, "POST", "/produce", {"payload": 1, "delay_ms": 86400000})
    ck.check("max-delay: /produce delay_ms 86400000 -> 201", r.status == 201, r)
    ck.check("max-delay: no reconnect (%s -> %s)" % (c0, connections(p)), connections(p) == c0)
    ck.check("max-delay: the messages wait in %s.delay.87000000 / .86000000" % q,
             depth_of(st, q + ".delay.87000000") == 2 and depth_of(st, q + ".delay.86000000") == 1,
             (depth_of(st, q + ".delay.87000000"), depth_of(st, q + ".delay.86000000")))


def connections(p):
    return qharness.metric(p.metrics(), "producer_broker_connections_total")


def frame_max(args):
    import test_wire_review as wr  # make_pki
    work = tempfile.mkdtemp(prefix="relayq-r2fm.")
    os.chmod(work, 0o755)
    pki = os.path.join(work, "pki")
    wr.make_pki(pki)
    d = os.path.join(work, "tls")
    os.makedirs(d)
    for n in ("ca.pem", "server.pem", "server.key"):
        shutil.copy(os.path.join(pki, n), d)
        os.chmod(os.path.join(d, n), 0o644)
    os.chmod(d, 0o755)
    subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", d], capture_output=True, timeout=30)
    tls_port = qharness.free_port()
    os.environ["BROKER_EXTRA_CONF"] = (
        "frame_max = 4096\n"
        f"listeners.ssl.1 = 127.0.0.1:{tls_port}\n"
        f"ssl_options.cacertfile = {d}/ca.pem\nssl_options.certfile = {d}/server.pem\n"
        f"ssl_options.keyfile = {d}/server.key\nssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n")
    a2 = type(args)(**vars(args))
    a2.amqp_port, a2.mgmt_port, a2.work = 0, 0, work
    try:
        with qharness.Stack(a2) as st:
            ck = st.ck
            plain = st.producer("fmplain")
            tls = st.producer("fmtls", {"RABBITMQ_HOST": "localhost",
                                        "RABBITMQ_PORT": str(tls_port), "RABBITMQ_TLS": "1",
                                        "RABBITMQ_TLS_CA": os.path.join(pki, "ca.pem")})
            for name, p in (("plain", plain), ("tls", tls)):
                c0 = connections(p)
                big = {"h%02d" % i: "v" * 500 for i in range(16)}  # 8 KiB + names
                t0 = time.monotonic()
                r = st.request(p, "POST", "/produce", {"id": "big-" + name, "payload": 1,
                                                       "headers": big}, timeout=20)
                el = time.monotonic() - t0
                ck.check("frame-max %s: 8 KiB of headers under frame_max 4096 -> 400 at once "
                         "(%.1f s)" % (name, el), r.status == 400 and el < 2.0, r)
                r2 = st.request(p, "POST", "/produce", {"id": "small-" + name, "payload": 2})
                ck.check("frame-max %s: the next message -> 201" % name, r2.status == 201, r2)
                ck.check("frame-max %s: no reconnect (connections %s -> %s)"
                         % (name, c0, connections(p)), connections(p) == c0)
                ck.check("frame-max %s: only the small message was stored" % name,
                         p.depth() == 1, p.depth())
        return st.ck
    finally:
        os.environ.pop("BROKER_EXTRA_CONF", None)


def main():
    ap = qharness.arg_parser(__doc__)
    ap.add_argument("--only", default="", help="run one scenario (create-race, delay-load, delete-delayed, delete-race, foreign-delete, raw-edge, bucket-type, cc-header, max-delay, frame-max)")
    args = ap.parse_args()
    failed = 0
    if args.only in ("", "create-race"):
        with qharness.Stack(type(args)(**vars(args))) as st:
            create_race(st, st.producer("ra"), st.producer("rb"))
        failed |= st.ck.summary()
    if args.only in ("", "delay-load"):
        with qharness.Stack(type(args)(**vars(args))) as st:
            delay_load(st)
        failed |= st.ck.summary()
    if args.only in ("", "delete-delayed"):
        with qharness.Stack(type(args)(**vars(args))) as st:
            delete_delayed(st)
        failed |= st.ck.summary()
    if args.only in ("", "delete-race"):
        with qharness.Stack(type(args)(**vars(args))) as st:
            delete_race(st)
        failed |= st.ck.summary()
    if args.only in ("", "foreign-delete"):
        with qharness.Stack(type(args)(**vars(args))) as st:
            foreign_delete(st)
        failed |= st.ck.summary()
    if args.only in ("", "raw-edge"):
        with qharness.Stack(type(args)(**vars(args))) as st:
            raw_edge(st)
        failed |= st.ck.summary()
    if args.only in ("", "bucket-type"):
        with qharness.Stack(type(args)(**vars(args))) as st:
            bucket_type(st)
        failed |= st.ck.summary()
    if args.only in ("", "cc-header"):
        with qharness.Stack(type(args)(**vars(args))) as st:
            cc_header(st)
        failed |= st.ck.summary()
    if args.only in ("", "max-delay"):
        with qharness.Stack(type(args)(**vars(args))) as st:
            max_delay(st)
        failed |= st.ck.summary()
    if args.only in ("", "frame-max"):
        failed |= frame_max(args).summary()
    return failed


if __name__ == "__main__":
    sys.exit(main())
