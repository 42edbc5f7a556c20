#!/usr/bin/python3
"""The real-time hub (producer/rt/hub.c, issue 18) and topic publishing (producer/publisher.c,
job->topic) against a real broker of this script's own (scripts/broker.sh, 127.0.0.1), driven
by rq_rt_tool (tools/rt/rq_rt_tool.c: JSON commands on stdin, JSON lines on stdout):
  topics    create 201 / again 200 / other retention 409 / bad name 400, get (subscribers),
            list (management API), delete 200 then 404; a topic publish is confirmed
  fanout    4 live subscriptions of one topic with different binds and filters each get
            exactly their messages, ids 1, 2, ...; the payload arrives byte for byte
            ({"n": 0.1, "big": 12345678901234567890}); identical subscriptions share one queue
            (list_bindings: one queue per distinct set of binds)
  slow      a subscriber whose buffer is full ends "slow_consumer" (counted), the others go on
  queue     a queue subscription gets the queue's messages; acked ones are gone, the unacked
            ones go back to the queue when it unsubscribes (redelivered to the next one)
  deleted   a topic deleted under live subscriptions ends them "topic_deleted"; a queue deleted
            under its subscription ends it "queue_deleted"
  resume    a retained topic's stream read from after_offset + 1 (event ids = offsets), with
            the binds matched by the hub; resume on a topic without retention is refused (400)
  liveret   a live subscription of a retained topic reads the stream from "next": its event
            ids are the stream offsets (resuming after one gets exactly the rest); binds and
            filters still apply; a topic without retention keeps counter ids 1, 2, ...
  slowmgmt  a management API that accepts and never answers: topic GET and LIST wait for it
            (then 200 from the AMQP fallback / 503) but deliveries to a subscriber go on
            meanwhile (< 150 ms): the management calls are off the hub's thread
  limits    RT_MAX_SUBSCRIPTIONS_PER_KEY (429, only with a key id) and RT_MAX_SUBSCRIPTIONS (503)
  restart   the broker restarted: every subscription ends "broker_lost", then new ones work
Usage: test_rt_hub.py --build-dir build [--keep] [CHECK ...] (default: all; restart runs
last). Prints PASS/FAIL lines and `N passed, M failed`; exit 1 on any failure. Every wait is
bounded; only processes this script started are signalled, by PID.
"""
import argparse
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_reliability import Checks, free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(msg):
    print(f"[rt_hub {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Tool:
    """One rq_rt_tool process."""

    def __init__(self, env, name):
        self.p = subprocess.Popen([env.tool], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=open(os.path.join(env.tmp, f"{name}.log"), "w"),
                                  text=True, env=env.env_of(name))
        self.q, self.seen = queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                o = json.loads(line)
            except ValueError:
                continue
            if isinstance(o, dict):
                o["_t"] = time.monotonic()  # when it was read
            self.q.put(o)

    def send(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()

    def wait(self, pred, timeout=15):
        """The first line (seen before or new) matching pred, or None after timeout."""
        for i, o in enumerate(self.seen):
            if pred(o):
                return self.seen.pop(i)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                o = self.q.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if pred(o):
                return o
            self.seen.append(o)
        return None

    def drain(self, secs=0.5):
        end = time.monotonic() + secs
        while time.monotonic() < end:
            try:
                self.seen.append(self.q.get(timeout=max(0.01, end - time.monotonic())))
            except queue.Empty:
                break

    def take(self, pred):
        out = [o for o in self.seen if pred(o)]
        self.seen = [o for o in self.seen if not pred(o)]
        return out

    def ev(self, ev, id=None, timeout=15):
        return self.wait(lambda o: o.get("ev") == ev and (id is None or o.get("id") == id),
                         timeout)

    def topic(self, job, name="", retention_s=0):
        self.send(op="topic", job=job, name=name, retention_s=retention_s)
        return self.ev("topic") or {"status": None, "body": None}

    def pub(self, topic, rk, body, **kw):
        self.send(op="pub", topic=topic, rk=rk, body=body, **kw)
        o = self.ev("pub", timeout=20)
        return o and o["status"]

    def sub(self, id, **kw):
        self.send(op="sub", id=id, **kw)
        s = self.ev("subscribe", id)
        if s is None or s["status"] != 0:
            return s
        return self.ev("ready", id)

    def msgs(self, id):
        return self.take(lambda o: o.get("ev") == "msg" and o.get("id") == id)

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(timeout=15)
        except Exception:
            self.p.kill()
            self.p.wait()
        return self.p.returncode


class Env:
    def __init__(self, build, tmp, port, mport):
        self.tool = os.path.join(build, "bin", "rq_rt_tool")
        self.amqp_tool = os.path.join(build, "bin", "rq_amqp_tool")
        self.tmp, self.port, self.mport = tmp, port, mport
        self.broker_dir = os.path.join(tmp, "broker")
        self.env = dict(os.environ, RABBITMQ_HOST="127.0.0.1", RABBITMQ_PORT=str(port),
                        RABBITMQ_MANAGEMENT_URL=f"http://127.0.0.1:{mport}",
                        RABBITMQ_HEARTBEAT="5", RABBITMQ_CONNECT_TIMEOUT_MS="2000",
                        LOG_LEVEL="info")
        self.tools = []

    def env_of(self, name, **extra):
        return dict(self.env, **extra)

    def broker(self, cmd, *extra, timeout=120):
        return subprocess.run(["bash", os.path.join(ROOT, "scripts/broker.sh"), cmd,
                               self.broker_dir, *extra], capture_output=True, text=True,
                              timeout=timeout)

    def amqp(self, *args):
        return subprocess.run([self.amqp_tool, *args], capture_output=True, text=True,
                              env=self.env, timeout=30)

    def spawn(self, name, **extra):
        saved = self.env
        self.env = dict(self.env, **extra)
        try:
            t = Tool(self, name)
        finally:
            self.env = saved
        self.tools.append(t)
        r = t.send(op="wait_ready") or t.ev("connected", timeout=20)
        return t if r and r.get("up") else t


def check_topics(c, e):
    t = e.spawn("topics")
    r = t.topic("create", "orders", 0)
    c.check("create: 201", r["status"] == 201 and r["body"] ==
            {"name": "orders", "exchange": "relayq.topic.orders", "retention_s": 0}, str(r))
    r = t.topic("create", "orders", 0)
    c.check("create again: 200", r["status"] == 200, str(r))
    r = t.topic("create", "orders", 60)
    c.check("create with another retention: 409", r["status"] == 409, str(r))
    r = t.topic("create", "bad name!", 0)
    c.check("create a bad name: 400", r["status"] == 400, str(r))
    r = t.topic("create", "kept", 3600)
    c.check("create retained: 201", r["status"] == 201 and r["body"]["retention_s"] == 3600,
            str(r))
    r = t.topic("create", "kept", 3600)
    c.check("create retained again: 200 (retention from mgmt)", r["status"] == 200, str(r))
    r = t.topic("get", "kept")
    c.check("get: 200 with retention and subscribers", r["status"] == 200 and
            r["body"].get("retention_s") == 3600 and r["body"].get("subscribers") == 0
            and r.get("known"), str(r))
    r = t.topic("list")
    names = sorted(x["name"] for x in (r["body"] or {}).get("topics", []))
    c.check("list: the topics from the management API", r["status"] == 200 and
            names == ["kept", "orders"] and r["body"]["count"] == 2, str(r))
    q = e.broker("ctl", "list_bindings", "source_name", "destination_name", "arguments")
    c.check("the ingress binds the topic exchange with relayq-topic",
            "relayq.topics\trelayq.topic.orders" in q.stdout and "relayq-topic" in q.stdout,
            q.stdout[-400:])
    q = e.broker("ctl", "list_queues", "name", "type", "arguments")
    c.check("the retained topic's stream", "relayq.topic.kept.retained\tstream" in q.stdout
            and "3600s" in q.stdout, q.stdout[-300:])
    c.check("a topic publish without subscribers is confirmed",
            t.pub("orders", "a.b", '{"x":1}') == "confirmed")
    c.check("a publish to a topic that does not exist is confirmed (dropped)",
            t.pub("nothere", "a.b", '{"x":1}') == "confirmed")
    r = t.topic("delete", "kept")
    c.check("delete: 200", r["status"] == 200 and r["body"] == {"deleted": "kept"}, str(r))
    r = t.topic("get", "kept")
    c.check("get after delete: 404", r["status"] == 404 and not r.get("known"), str(r))
    q = e.broker("ctl", "list_queues", "name")
    c.check("delete removes the stream", "relayq.topic.kept.retained" not in q.stdout)
    r = t.topic("delete", "kept")
    c.check("delete again: 404", r["status"] == 404, str(r))
    c.check("the tool exits 0", t.close() == 0)


def check_fanout(c, e):
    t = e.spawn("fanout")
    t.topic("create", "fan", 0)
    r1 = t.sub("all1", kind="topic", name="fan")
    r2 = t.sub("all2", kind="topic", name="fan", binds=["#"])
    r3 = t.sub("err", kind="topic", name="fan", filter='payload.level == "error"')
    r4 = t.sub("eu", kind="topic", name="fan", binds=["eu.*"])
    r5 = t.sub("eu2", kind="topic", name="fan", binds=["eu.*", "eu.*"])
    c.check("5 subscriptions ready", all(r and r["status"] == 0 for r in (r1, r2, r3, r4, r5)),
            str([r1, r2, r3, r4, r5]))
    r = t.sub("none", kind="topic", name="nope")
    c.check("a subscription of a missing topic: ready 404", r and r["status"] == 404, str(r))
    t.send(op="unsub", id="none")
    big = '{"n": 0.1, "big": 12345678901234567890, "level": "error"}'
    ok = [t.pub("fan", "eu.x", big, id="m1", headers={"region": "eu"}),
          t.pub("fan", "us.y", '{"level":"info"}', id="m2"),
          t.pub("fan", "eu.z", "not json\nat all", id="m3")]
    c.check("3 topic publishes confirmed", ok == ["confirmed"] * 3, str(ok))
    t.drain(1.5)
    got = {k: t.msgs(k) for k in ("all1", "all2", "err", "eu", "eu2")}
    ids = {k: [m["data"]["id"] for m in v] for k, v in got.items()}
    c.check("each member gets its messages",
            ids == {"all1": ["m1", "m2", "m3"], "all2": ["m1", "m2", "m3"], "err": ["m1"],
                    "eu": ["m1", "m3"], "eu2": ["m1", "m3"]}, str(ids))
    c.check("event ids count 1, 2, ... per member",
            [m["event_id"] for m in got["all1"]] == ["1", "2", "3"] and
            [m["event_id"] for m in got["err"]] == ["1"], str(got["all1"]))
    m = got["all1"][0] if got["all1"] else {"data": {}}
    c.check("the event's fields", m["data"].get("topic") == "fan" and
            m["data"].get("routing_key") == "eu.x" and
            m["data"].get("headers") == {"x-source": "api", "region": "eu"} and
            re.search(r',"published_ms":\d{13}}$', m.get("raw", "")) is not None and
            m.get("oneline"), str(m))
    c.check("text body as a string with its newline", len(got["all1"]) == 3 and
            got["all1"][2]["data"].get("payload") == "not json\nat all", str(got["all1"][-1:]))
    c.check("payload: the body's bytes verbatim (0.1, 12345678901234567890)",
            '"payload":' + big + "," in m.get("raw", ""), m.get("raw", ""))
    q = e.broker("ctl", "list_bindings", "source_name", "destination_name", "routing_key")
    dests = {ln.split("\t")[1] for ln in q.stdout.splitlines()
             if ln.startswith("relayq.topic.fan\t")}
    c.check("one queue per distinct set of binds (2 for 5 subscriptions)", len(dests) == 2,
            q.stdout[-400:])
    r = t.topic("get", "fan")
    c.check("get counts this replica's subscribers", r["body"].get("subscribers") == 5, str(r))
    for k in ("all1", "all2", "err", "eu", "eu2"):
        t.send(op="unsub", id=k)
    time.sleep(1.0)
    q = e.broker("ctl", "list_bindings", "source_name", "destination_name")
    c.check("the groups' queues go with their last member",
            "relayq.topic.fan\tamq.gen" not in q.stdout, q.stdout[-300:])
    t.close()


def check_slow(c, e):
    t = e.spawn("slow")
    t.topic("create", "slowt", 0)
    a = t.sub("slow", kind="topic", name="slowt", slow=1)
    b = t.sub("fast", kind="topic", name="slowt")
    c.check("subscribed", a and b and a["status"] == 0 and b["status"] == 0)
    for i in range(3):
        t.pub("slowt", "k", str(i))
    end = t.ev("end", "slow")
    c.check("a full buffer ends it slow_consumer", end and end["reason"] == "slow_consumer",
            str(end))
    t.drain(1.0)
    c.check("the other member gets every message", len(t.msgs("fast")) == 3)
    t.send(op="metrics")
    m = t.ev("metrics")
    c.check("counted", m and "producer_rt_slow_disconnects_total 1" in m["text"],
            (m or {}).get("text", "")[-600:])
    t.send(op="unsub", id="slow")
    t.send(op="unsub", id="fast")
    t.close()


def check_queue(c, e):
    r = e.amqp("declare", "--queue", "jobs", "--transient")
    c.check("queue declared", r.returncode == 0, r.stderr[-300:])
    r = e.amqp("publish", "--queue", "jobs", "--count", "4", "--json")
    c.check("4 messages published", r.returncode == 0, r.stderr[-300:])
    t = e.spawn("queue")
    a = t.sub("q1", kind="queue", name="jobs", ack="none")
    c.check("queue subscription ready", a and a["status"] == 0, str(a))
    t.drain(1.5)
    got = t.msgs("q1")
    c.check("it gets the 4 messages, event id = delivery tag, redelivered false",
            [m["event_id"] for m in got] == ["1", "2", "3", "4"] and
            all(m["data"].get("queue") == "jobs" and m["data"].get("redelivered") is False
                for m in got), str(got[:1]))
    t.send(op="ack", id="q1", tag=1)
    t.send(op="ack", id="q1", tag=2)
    time.sleep(0.5)
    t.send(op="unsub", id="q1")
    time.sleep(1.0)
    r = e.amqp("depth", "--queue", "jobs")
    c.check("the 2 unacked went back to the queue", r.stdout.strip().startswith("2"),
            r.stdout + r.stderr)
    b = t.sub("q2", kind="queue", name="jobs")  # auto ack
    t.drain(1.5)
    got = t.msgs("q2")
    c.check("redelivered to the next subscription", len(got) == 2 and
            all(m["data"].get("redelivered") is True for m in got), str(got[:1]))
    time.sleep(0.5)
    t.send(op="unsub", id="q2")
    time.sleep(1.0)
    r = e.amqp("depth", "--queue", "jobs")
    c.check("acked: the queue is empty", r.stdout.strip().startswith("0"), r.stdout + r.stderr)
    r = t.sub("q3", kind="queue", name="missing")
    c.check("a missing queue: ready 404", r and r["status"] == 404, str(r))
    t.send(op="unsub", id="q3")
    del b
    t.close()


def check_deleted(c, e):
    t = e.spawn("deleted")
    t.topic("create", "gone", 0)
    a = t.sub("a", kind="topic", name="gone")
    b = t.sub("b", kind="topic", name="gone", binds=["x.#"])
    c.check("subscribed", a and b and a["status"] == 0 and b["status"] == 0)
    r = t.topic("delete", "gone")
    ea, eb = t.ev("end", "a"), t.ev("end", "b")
    c.check("topic deleted: both end topic_deleted", r["status"] == 200 and ea and eb and
            ea["reason"] == "topic_deleted" and eb["reason"] == "topic_deleted", str((ea, eb)))
    # deleted by another replica (another process): seen by the periodic check
    t.topic("create", "gone2", 0)
    a = t.sub("c", kind="topic", name="gone2")
    other = e.spawn("deleter")
    r = other.topic("delete", "gone2")
    ec = t.ev("end", "c", timeout=10)
    c.check("deleted on another replica: ended topic_deleted within seconds",
            r["status"] == 200 and ec and ec["reason"] == "topic_deleted", str(ec))
    other.close()
    e.amqp("declare", "--queue", "doomed", "--transient")
    q = t.sub("q", kind="queue", name="doomed")
    c.check("queue subscription ready", q and q["status"] == 0, str(q))
    e.amqp("delete", "--queue", "doomed")
    eq = t.ev("end", "q")
    c.check("queue deleted: queue_deleted", eq and eq["reason"] == "queue_deleted", str(eq))
    for k in ("a", "b", "c", "q"):
        t.send(op="unsub", id=k)
    t.close()


def check_isolation(c, e):
    """CI (issue 18): the ingress bound each topic exchange with {x-match: all,
    x-relayq-topic: <name>}, but RabbitMQ's headers exchange ignores binding arguments that
    start with "x-": every topic exchange matched every topic message, so a subscriber of one
    topic got the messages of all the others."""
    t = e.spawn("isolation")
    t.topic("create", "iso-a", 0)
    t.topic("create", "iso-b", 0)
    a = t.sub("ia", kind="topic", name="iso-a")
    c.check("isolation: subscribed to iso-a", a and a["status"] == 0, str(a))
    c.check("isolation: publish to iso-b confirmed", t.pub("iso-b", "k", '{"to":"b"}') == "confirmed")
    c.check("isolation: publish to iso-a confirmed", t.pub("iso-a", "k", '{"to":"a"}') == "confirmed")
    t.drain(1.0)
    got = [m.get("ev_json", m) for m in t.msgs("ia")]
    text = json.dumps(got)
    c.check("isolation: the iso-a subscriber got iso-a's message and not iso-b's",
            '\\"to\\":\\"a\\"' in text.replace(" ", "") or '"to":"a"' in text.replace(" ", ""),
            text[:400])
    c.check("isolation: nothing of iso-b reached iso-a", '"b"' not in text.replace(" ", ""), text[:400])
    t.send(op="unsub", id="ia")
    t.close()


def check_recreated(c, e):
    """Review: a topic deleted and created again on another replica between two of the hub's
    2 s checks left the group queue without its bindings: its subscribers got nothing, with no
    end event. The hub binds each group again at every check."""
    t = e.spawn("recreated")
    t.topic("create", "again", 0)
    a = t.sub("ra", kind="topic", name="again", binds=["k.#"])
    c.check("recreated: subscribed", a and a["status"] == 0, str(a))
    other = e.spawn("recreator")
    r1, r2 = other.topic("delete", "again"), other.topic("create", "again", 0)
    c.check("recreated: deleted and created again on another replica",
            r1["status"] == 200 and r2["status"] == 201, str((r1, r2)))
    got, deadline = [], time.monotonic() + 8
    while not got and time.monotonic() < deadline:
        other.pub("again", "k.1", '{"n":1}')
        t.drain(0.7)
        got = t.msgs("ra")
        ended = t.take(lambda o: o.get("ev") == "end" and o.get("id") == "ra")
        if ended:
            break
    c.check("recreated: the subscriber gets messages again (or is ended), never silence",
            bool(got) or bool(ended), "nothing within 8 s")
    t.send(op="unsub", id="ra")
    other.close()
    t.close()


def check_resume(c, e):
    t = e.spawn("resume")
    t.topic("create", "ret", 3600)
    keys = ["a.1", "b.1", "a.2", "a.3", "b.2"]
    ok = [t.pub("ret", k, json.dumps({"i": i})) for i, k in enumerate(keys)]
    c.check("5 retained publishes confirmed", ok == ["confirmed"] * 5, str(ok))
    r = t.sub("r", kind="topic", name="ret", resume=True, after=1)
    c.check("resume ready", r and r["status"] == 0, str(r))
    t.drain(2.0)
    got = t.msgs("r")
    c.check("offsets 2.. read, event id = offset",
            [(m["event_id"], m["data"].get("offset"), m["data"]["payload"]["i"]) for m in got]
            == [("2", 2, 2), ("3", 3, 3), ("4", 4, 4)], str(got))
    r = t.sub("ra", kind="topic", name="ret", resume=True, after=0, binds=["a.*"],
              filter="payload.i >= 2")
    t.drain(2.0)
    got = t.msgs("ra")
    c.check("binds and filter on the stream", [m["event_id"] for m in got] == ["2", "3"],
            str(got))
    t.pub("ret", "a.9", '{"i": 5}')
    t.drain(1.5)
    got = t.msgs("r")
    c.check("then live messages from the stream", [m["event_id"] for m in got] == ["5"],
            str(got))
    t.topic("create", "plain", 0)
    r = t.sub("p", kind="topic", name="plain", resume=True, after=3)
    c.check("resume without retention: 400", r and r["status"] == 400, str(r))
    for k in ("r", "ra", "p"):
        t.send(op="unsub", id=k)
    t.close()


def check_liveret(c, e):
    """A live subscription of a retained topic reads the stream from "next": its event ids are
    stream offsets, so a reconnect with Last-Event-ID resumes at the right message."""
    t = e.spawn("liveret")
    t.topic("create", "lret", 3600)
    ok = [t.pub("lret", "old", json.dumps({"i": i})) for i in range(2)]
    c.check("liveret: 2 messages before the subscription", ok == ["confirmed"] * 2, str(ok))
    r = t.sub("l", kind="topic", name="lret")
    rb = t.sub("lb", kind="topic", name="lret", binds=["a.*"], filter="payload.i >= 3")
    c.check("liveret: live subscriptions ready", r and r["status"] == 0 and rb and
            rb["status"] == 0, str((r, rb)))
    ok = [t.pub("lret", k, json.dumps({"i": i})) for i, k in
          ((2, "a.1"), (3, "b.1"), (4, "a.2"))]
    c.check("liveret: 3 live publishes confirmed", ok == ["confirmed"] * 3, str(ok))
    t.drain(1.5)
    got = t.msgs("l")
    ids = [(m["event_id"], m["data"].get("offset"), m["data"]["payload"]["i"]) for m in got]
    c.check("liveret: a live member's event ids are the events' stream offsets (from next)",
            len(got) == 3 and all(i == str(o) for i, o, _ in ids) and
            [p for _, _, p in ids] == [2, 3, 4], str(ids))
    gb = t.msgs("lb")
    c.check("liveret: binds and filter still apply (only a.2)",
            [m["data"]["payload"]["i"] for m in gb] == [4] and
            gb[0]["event_id"] == str(gb[0]["data"].get("offset")), str(gb))
    r = t.sub("rs", kind="topic", name="lret") if len(got) < 2 else \
        t.sub("rs", kind="topic", name="lret", resume=True, after=int(got[1]["event_id"]))
    t.drain(1.5)
    rest = t.msgs("rs")
    c.check("liveret: resume after the 2nd id gets exactly the rest",
            [m["data"]["payload"]["i"] for m in rest] == [4], str(rest))
    r = t.topic("get", "lret")
    c.check("liveret: get counts them", r["body"].get("subscribers") == 3, str(r))
    t.topic("create", "lplain", 0)
    r = t.sub("p", kind="topic", name="lplain")
    t.pub("lplain", "k", '{"i": 0}')
    t.drain(1.0)
    got = t.msgs("p")
    c.check("liveret: a topic without retention keeps counter ids",
            [m["event_id"] for m in got] == ["1"] and "offset" not in got[0]["data"], str(got))
    for k in ("l", "lb", "rs", "p"):
        t.send(op="unsub", id=k)
    t.close()


def check_slowmgmt(c, e):
    """The management API accepts and never answers: topic GET/LIST wait for it (up to 2 s),
    but not on the hub's thread: deliveries to an existing subscriber go on meanwhile."""
    import socket
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))  # listens
    ls.listen(16)
    held, stop = [], threading.Event()

    def hold():  # accept, read nothing, answer nothing
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(ls.accept()[0])
            except OSError:
                pass
    threading.Thread(target=hold, daemon=True).start()
    mute = f"http://127.0.0.1:{ls.getsockname()[1]}"
    try:
        t = e.spawn("slowmgmt", RABBITMQ_MANAGEMENT_URL=mute)
        pub = e.spawn("slowmgmt-pub")
        r = t.topic("create", "smg", 0)
        c.check("slowmgmt: create a new topic (no management call)", r["status"] == 201, str(r))
        a = t.sub("a", kind="topic", name="smg")
        c.check("slowmgmt: subscribed", a and a["status"] == 0, str(a))
        c.check("slowmgmt: a first message", pub.pub("smg", "k", '{"i": -1}') == "confirmed"
                and t.wait(lambda o: o.get("ev") == "msg", timeout=5) is not None)
        for job in ("get", "list"):
            t0 = time.monotonic()
            t.send(op="topic", job=job, name="smg")
            time.sleep(0.3)  # the job now waits for the mute management API
            delays = []
            for i in range(3):
                st = pub.pub("smg", "k", json.dumps({"i": i}))
                tp = time.monotonic()
                m = t.wait(lambda o: o.get("ev") == "msg", timeout=5)
                delays.append(round(m["_t"] - tp, 3) if st == "confirmed" and m else None)
                time.sleep(0.3)
            ans = t.ev("topic", timeout=10)
            took = time.monotonic() - t0
            log(f"slowmgmt {job}: delivery delays {delays} s, answered after {took:.1f} s")
            c.check(f"slowmgmt: {job}: deliveries go on while it waits (< 150 ms each)",
                    None not in delays and max(delays) < 0.15, f"delays {delays}")
            want = 200 if job == "get" else 503
            c.check(f"slowmgmt: {job} answered {want} after the management timeout",
                    ans and ans["status"] == want and 1.5 < took < 6, f"{ans} after {took:.1f} s")
        t.send(op="unsub", id="a")
        t.close()
        pub.close()
    finally:
        stop.set()
        for s_ in held:
            s_.close()
        ls.close()


def check_limits(c, e):
    t = e.spawn("limits", RT_MAX_SUBSCRIPTIONS="3", RT_MAX_SUBSCRIPTIONS_PER_KEY="2")
    t.topic("create", "lim", 0)
    r = [t.sub(f"k{i}", kind="topic", name="lim", key="key1") for i in range(3)]
    c.check("per key: 2 then 429", r[0]["status"] == 0 and r[1]["status"] == 0 and
            r[2]["status"] == 429, str(r))
    r3 = t.sub("anon", kind="topic", name="lim", key="")
    c.check("no key id: no per-key limit", r3 and r3["status"] == 0, str(r3))
    r4 = t.sub("over", kind="topic", name="lim", key="key2")
    c.check("total: 503", r4 and r4["status"] == 503, str(r4))
    t.send(op="unsub", id="k0")
    time.sleep(0.2)
    r5 = t.sub("again", kind="topic", name="lim", key="key1")
    c.check("a slot freed by unsubscribe is usable again", r5 and r5["status"] == 0, str(r5))
    for k in ("k1", "anon", "again"):
        t.send(op="unsub", id=k)
    t.close()


def check_restart(c, e):
    t = e.spawn("restart")
    t.topic("create", "rs", 0)
    e.amqp("declare", "--queue", "rsq", "--transient")
    a = t.sub("a", kind="topic", name="rs")
    b = t.sub("b", kind="queue", name="rsq")
    c.check("subscribed", a and b and a["status"] == 0 and b["status"] == 0)
    r = e.broker("stop")
    c.check("broker stopped", r.returncode == 0, r.stderr[-300:])
    ea, eb = t.ev("end", "a", timeout=20), t.ev("end", "b", timeout=20)
    c.check("every subscription ends broker_lost", ea and eb and ea["reason"] == "broker_lost"
            and eb["reason"] == "broker_lost", str((ea, eb)))
    s = t.sub("x", kind="topic", name="rs")
    c.check("no connection: subscribe 503", s and s["status"] == 503, str(s))
    r = e.broker("start", str(e.port), str(e.mport))
    c.check("broker started again", r.returncode == 0, r.stderr[-300:])
    t.send(op="wait_ready")
    up = t.ev("connected", timeout=40)
    c.check("the hub reconnects", up and up["up"] == 1, str(up))
    a2 = t.sub("a2", kind="topic", name="rs")
    c.check("a new subscription works", a2 and a2["status"] == 0, str(a2))
    c.check("publish after the restart", t.pub("rs", "k", '{"after": 1}') == "confirmed")
    m = t.wait(lambda o: o.get("ev") == "msg" and o.get("id") == "a2", timeout=10)
    c.check("and it is delivered", m and m["data"]["payload"] == {"after": 1}, str(m))
    for k in ("a", "b", "a2"):
        t.send(op="unsub", id=k)
    t.close()


CHECKS = {"topics": check_topics, "fanout": check_fanout, "slow": check_slow,
          "queue": check_queue, "deleted": check_deleted, "recreated": check_recreated,
          "isolation": check_isolation,
          "resume": check_resume,
          "liveret": check_liveret, "slowmgmt": check_slowmgmt,
          "limits": check_limits, "restart": check_restart}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("checks", nargs="*", choices=[[]] + list(CHECKS), default=[])
    args = ap.parse_args()
    names = args.checks or list(CHECKS)
    tmp = tempfile.mkdtemp(prefix="relayq-rt-hub.")
    os.chmod(tmp, 0o755)  # the broker (user rabbitmq) must reach its folder inside
    e = Env(os.path.abspath(args.build_dir), tmp, free_port(), free_port())
    c = Checks()
    t0 = time.monotonic()
    try:
        r = e.broker("start", str(e.port), str(e.mport))
        if not c.check("broker started", r.returncode == 0, r.stderr[-300:]):
            names = []
        for name in names:
            log(f"check {name}")
            CHECKS[name](c, e)
    finally:
        for t in e.tools:
            if t.p.poll() is None:
                t.p.kill()
                t.p.wait()
        e.broker("stop")
    log(f"took {time.monotonic() - t0:.1f} s")
    if c.failed or args.keep:
        log(f"scratch folder kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
