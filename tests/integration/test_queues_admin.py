#!/usr/bin/python3
"""Queue administration of the queue service (issue 16): POST/GET /queues, GET/DELETE
/queues/{id}, GET /queues/{id}/dlq, POST /queues/{id}/messages/retry, against a real
RabbitMQ (a private one with the management plugin unless --amqp-port is given).

Every route and status: 201/200/409 (naming the argument, with and without the management
API)/400 (each naming rule, each option)/403/404/405/503 (no management API); DELETE of a
non-empty queue 409 then ?force=true, its derived queues gone (checked through the management
API); a per-queue DLQ: messages put into <q>.dlq, listed, and moved back to <q>. Standard
library only; bounded (every request 15 s, the whole run a few minutes at most).
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qharness  # noqa: E402

SECRET_ADMIN = "adminsecret-0123456789abcdef"
SECRET_ORDERS = "orderssecret-0123456789abcdef"


def main():
    ap = qharness.arg_parser(__doc__)
    args = ap.parse_args()
    with qharness.Stack(args) as st:
        run(st, args)
    return st.ck.summary()


def mgmt_names(args, prefix):
    """Names of the broker's queues starting with prefix (management API), or None."""
    return qharness.mgmt_queue_names(args.mgmt_port, prefix)


def tool(args, *argv, timeout=30):
    cmd = [os.path.join(args.bin, "rq_amqp_tool"), argv[0], "--port", str(args.amqp_port)]
    cmd += list(argv[1:])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def depth(args, queue):
    p = tool(args, "depth", "--queue", queue)
    try:
        return int(p.stdout.split()[-1])
    except (ValueError, IndexError):
        return None


def err_of(r):
    j = r.json() or {}
    return j.get("error", "") if isinstance(j, dict) else ""


def run(st, args):
    ck = st.ck
    a = st.producer("a")  # with the management API (when the stack has one)
    b = st.producer("b", {"RABBITMQ_MANAGEMENT_URL": "off"})
    has_mgmt = bool(args.mgmt_port)
    ck.check("the stack has a management API", has_mgmt, "run without --amqp-port, or pass --mgmt-port")

    def req(p, method, path, body=None, headers=None):
        return st.request(p, method, path, body=body, headers=headers)

    # ---- create ----
    q = st.qname("adm")
    spec = {"name": q, "type": "classic", "max_priority": 5, "max_length": 100,
            "message_ttl_ms": 600000, "max_retries": 2, "retry_base_ms": 200}
    r = req(a, "POST", "/queues", spec)
    ck.check("POST /queues new: 201", r.status == 201, r)
    ck.check("201 echoes the settings", (r.json() or {}).get("settings", {}).get("max_priority") == 5, r)
    r = req(a, "POST", "/queues", spec)
    ck.check("POST /queues identical: 200", r.status == 200, r)
    r = req(b, "POST", "/queues", spec)
    ck.check("POST /queues identical, no management API: 200", r.status == 200, r)
    for field, value, arg in (("max_priority", 6, "x-max-priority"), ("max_length", 50, "x-max-length"),
                              ("max_retries", 3, "x-relayq-max-retries"),
                              ("retry_base_ms", 300, "x-relayq-retry-base-ms"),
                              ("message_ttl_ms", None, "x-message-ttl")):
        other = dict(spec)
        if value is None:
            del other[field]
        else:
            other[field] = value
        r = req(a, "POST", "/queues", other)
        ck.check("POST /queues other %s: 409 naming %s" % (field, arg),
                 r.status == 409 and (r.json() or {}).get("argument") == arg, r)
    # without the management API the broker compares its own arguments (and relayq the retry queues)
    other = dict(spec, max_length=50)
    r = req(b, "POST", "/queues", other)
    ck.check("no management API, other max_length: 409 with the broker's inequivalent arg",
             r.status == 409 and (r.json() or {}).get("argument") == "x-max-length"
             and "inequivalent arg" in err_of(r), r)
    r = req(b, "POST", "/queues", dict(spec, retry_base_ms=300))
    ck.check("no management API, other retry_base_ms: 409 (x-message-ttl of <q>.retry.1)",
             r.status == 409 and (r.json() or {}).get("argument") == "x-message-ttl"
             and q + ".retry.1" in err_of(r), r)
    r = req(b, "POST", "/queues", dict(spec, max_retries=1))
    ck.check("no management API, fewer max_retries: 409 x-relayq-max-retries",
             r.status == 409 and (r.json() or {}).get("argument") == "x-relayq-max-retries", r)
    r = req(b, "POST", "/queues", dict(spec, max_retries=3))
    ck.check("no management API, more max_retries: 409 x-relayq-max-retries",
             r.status == 409 and (r.json() or {}).get("argument") == "x-relayq-max-retries", r)
    r = req(a, "POST", "/queues", {"name": a.queue})
    ck.check("POST /queues with the default queue's name: 409", r.status == 409 and "default queue" in err_of(r), r)
    qq = st.qname("admq")
    r = req(a, "POST", "/queues", {"name": qq})
    ck.check("POST /queues quorum (the default type): 201", r.status == 201, r)

    # ---- 400: names ----
    for name, rule in (("", "1"), ("x" * 201, "200"), ("a b", "A-Z a-z 0-9"), ("a*", "A-Z a-z 0-9"),
                       (".a", "'.'"), ("amq.x", "amq."), ("relayq.x", "relayq."), ("a.dlq", ".dlq"),
                       ("a.retry.3", ".retry"), ("a.delay.100", ".delay")):
        r = req(a, "POST", "/queues", {"name": name})
        ck.check("POST /queues name %r: 400 naming the rule (%s)" % (name[:20], rule),
                 r.status == 400 and rule in err_of(r), r)
    # ---- 400: options ----
    for body, field in (({"name": "x", "type": "stream"}, "type"), ({"name": 5}, "name"), ({}, "name"),
                        ({"name": "x", "max_priority": "5"}, "max_priority"),
                        ({"name": "x", "type": "classic", "max_priority": 0}, "max_priority"),
                        ({"name": "x", "type": "classic", "max_priority": 256}, "max_priority"),
                        ({"name": "x", "max_length": -1}, "max_length"),
                        ({"name": "x", "message_ttl_ms": 1.5}, "message_ttl_ms"),
                        ({"name": "x", "max_retries": 21}, "max_retries"),
                        ({"name": "x", "retry_base_ms": 5}, "retry_base_ms"),
                        ({"name": "x", "max_priority": 3}, "classic"),
                        ({"name": "x", "colour": "red"}, "colour")):
        r = req(a, "POST", "/queues", body)
        ck.check("POST /queues %s: 400 naming %s" % (json.dumps(body)[:60], field),
                 r.status == 400 and field in err_of(r), r)
    r = req(a, "POST", "/queues", b"[1]", {"Content-Type": "application/json"})
    ck.check("POST /queues body not an object: 400", r.status == 400, r)
    r = req(a, "POST", "/queues", b"{", {"Content-Type": "application/json"})
    ck.check("POST /queues invalid JSON: 400", r.status == 400, r)
    r = req(a, "GET", "/queues/" + "y" * 300)
    ck.check("GET /queues/{id} too long: 400", r.status == 400 and "200" in err_of(r), r)
    r = req(a, "GET", "/queues/amq.x")
    ck.check("GET /queues/amq.x: 400", r.status == 400 and "amq." in err_of(r), r)

    # ---- 405 ----
    for method, path, allow in (("PUT", "/queues", "GET, POST"), ("PATCH", "/queues/" + q, "GET, DELETE"),
                                ("POST", "/queues/%s/dlq" % q, "GET"),
                                ("GET", "/queues/%s/messages/retry" % q, "POST")):
        r = req(a, method, path)
        ck.check("%s %s: 405 Allow %s" % (method, path.replace(q, "{id}"), allow),
                 r.status == 405 and r.headers.get("allow") == allow, (r, r.headers.get("allow")))

    # ---- get ----
    r = req(a, "GET", "/queues/" + q)
    j = r.json() or {}
    ck.check("GET /queues/{id}: 200 with depth, consumers, DLQ depth, settings",
             r.status == 200 and j.get("ready") == 0 and j.get("consumers") == 0 and j.get("dlq_depth") == 0
             and j.get("type") == "classic" and j.get("settings", {}).get("max_retries") == 2
             and j.get("settings", {}).get("max_length") == 100, r)
    ck.check("GET /queues/{id}: unacked from the management API", j.get("unacked") == 0, r)
    r = req(b, "GET", "/queues/" + q)
    j = r.json() or {}
    ck.check("GET /queues/{id} without the management API: 200, unacked null",
             r.status == 200 and "unacked" in j and j["unacked"] is None and j.get("ready") == 0, r)
    r = req(a, "GET", "/queues/" + st.qname("nope"))
    ck.check("GET /queues/{unknown}: 404", r.status == 404, r)
    r = req(a, "GET", "/queues/" + a.queue)
    ck.check("GET /queues/{default}: 200, default true",
             r.status == 200 and (r.json() or {}).get("default") is True, r)
    foreign = st.qname("foreign")
    tool(args, "declare", "--queue", foreign)
    r = req(a, "GET", "/queues/" + foreign)
    ck.check("GET /queues/{a queue relayq did not create}: 404", r.status == 404, r)

    # ---- list ----
    r = req(a, "GET", "/queues")
    names = [x.get("name") for x in (r.json() or {}).get("queues", [])]
    ck.check("GET /queues: 200 with the created queues and the default one",
             r.status == 200 and q in names and qq in names and a.queue in names, r)
    ck.check("GET /queues: no derived or foreign queue",
             not any(n.endswith(".dlq") or ".retry." in n or n == foreign for n in names), names)
    ent = [x for x in (r.json() or {}).get("queues", []) if x.get("name") == q]
    ck.check("GET /queues entry: type, ready, unacked, consumers, dlq_depth, settings",
             ent and all(k in ent[0] for k in ("type", "ready", "unacked", "consumers", "dlq_depth", "settings")),
             ent)
    r = req(b, "GET", "/queues")
    ck.check("GET /queues without the management API: 503 with the reason",
             r.status == 503 and "management API" in err_of(r), r)
    d = st.producer("d", {"RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:%d" % qharness.free_port()})
    r = req(d, "GET", "/queues")
    ck.check("GET /queues with the management API unreachable: 503 saying so",
             r.status == 503 and "refused" in err_of(r) and r.headers.get("retry-after") == "1", r)
    r = req(d, "GET", "/queues/" + q)
    ck.check("GET /queues/{id} with the management API unreachable: 200, unacked null",
             r.status == 200 and (r.json() or {}).get("unacked", 0) is None, r)
    d.stop()

    # ---- per-queue DLQ ----
    p = tool(args, "publish", "--queue", q + ".dlq", "--count", "3", "--id-prefix", "dead")
    ck.check("3 messages put into <q>.dlq", p.returncode == 0, p.stderr[-300:])
    r = req(a, "GET", "/queues/%s/dlq?limit=2" % q)
    j = r.json() or {}
    ck.check("GET /queues/{id}/dlq: 200 with the DLQ's messages",
             r.status == 200 and j.get("queue") == q + ".dlq" and j.get("count") == 3
             and len(j.get("messages", [])) == 2 and j.get("next_offset") == 2, r)
    r = req(a, "GET", "/queues/%s/dlq?limit=5000" % q)
    ck.check("GET /queues/{id}/dlq limit over 1000: 400", r.status == 400, r)
    r = req(a, "GET", "/queues/%s/dlq" % st.qname("nope"))
    ck.check("GET /queues/{unknown}/dlq: 404", r.status == 404, r)
    r = req(a, "POST", "/queues/%s/messages/retry" % q, {"count": 1})
    j = r.json() or {}
    ck.check("POST /queues/{id}/messages/retry count 1: moved 1, remaining 2",
             r.status == 200 and j.get("moved") == 1 and j.get("remaining") == 2, r)
    ck.check("the retried message is in <q>", depth(args, q) == 1, depth(args, q))
    r = req(a, "POST", "/queues/%s/messages/retry?count=x" % q)
    ck.check("POST /queues/{id}/messages/retry ?count=x: 400", r.status == 400, r)
    r = req(a, "POST", "/queues/%s/messages/retry" % st.qname("nope"))
    ck.check("POST /queues/{unknown}/messages/retry: 404", r.status == 404, r)
    r = req(a, "POST", "/queues/%s/messages/retry" % q)
    j = r.json() or {}
    ck.check("POST /queues/{id}/messages/retry without a body: moves the rest",
             r.status == 200 and j.get("moved") == 2 and j.get("remaining") == 0, r)
    ck.check("all 3 back in <q>", depth(args, q) == 3, depth(args, q))
    r = req(a, "GET", "/dlq")
    ck.check("GET /dlq (the default queue's) unchanged: 200",
             r.status == 200 and (r.json() or {}).get("queue") == a.queue + ".dlq", r)

    # ---- delete ----
    r = req(a, "DELETE", "/queues/" + q)
    ck.check("DELETE non-empty: 409", r.status == 409 and "force=true" in err_of(r), r)
    ck.check("still there after the 409", depth(args, q) == 3)
    r = req(a, "DELETE", "/queues/%s?force=maybe" % q)
    ck.check("DELETE ?force=maybe: 400", r.status == 400, r)
    if has_mgmt:
        before = mgmt_names(args, q + ".")
        ck.check("derived queues exist before the delete",
                 before == sorted([q + ".dlq", q + ".retry.1", q + ".retry.2"]), before)
    tool(args, "declare", "--queue", q + ".delay.1300")  # a delay bucket (H4 declares them lazily)
    r = req(a, "DELETE", "/queues/%s?force=true" % q)
    ck.check("DELETE ?force=true: 200", r.status == 200 and (r.json() or {}).get("deleted") == q, r)
    if has_mgmt:
        left = mgmt_names(args, q)
        ck.check("the queue and its derived queues are gone (management API)", left == [], left)
    r = req(a, "GET", "/queues/" + q)
    ck.check("GET after DELETE: 404", r.status == 404, r)
    r = req(a, "DELETE", "/queues/" + q)
    ck.check("DELETE unknown: 404", r.status == 404, r)
    r = req(a, "DELETE", "/queues/" + qq)
    ck.check("DELETE empty (quorum) without force: 200", r.status == 200, r)
    r = req(a, "DELETE", "/queues/" + a.queue)
    ck.check("DELETE the default queue: 409 saying why", r.status == 409 and "default queue" in err_of(r), r)
    r = req(a, "DELETE", "/queues/" + foreign)
    ck.check("DELETE a queue relayq did not create: 409", r.status == 409, r)
    tool(args, "delete", "--queue", foreign)

    # ---- permissions ----
    c = st.producer("c", {"API_KEYS": "adm:%s:admin:*,ord:%s:admin:orders.*" % (SECRET_ADMIN, SECRET_ORDERS)})
    o1 = "orders." + st.qname("x")
    r = req(c, "POST", "/queues", {"name": o1}, qharness.bearer(SECRET_ORDERS))
    ck.check("admin:orders.* creates orders.x: 201", r.status == 201, r)
    other = st.qname("other")
    r = req(c, "POST", "/queues", {"name": other}, qharness.bearer(SECRET_ORDERS))
    ck.check("admin:orders.* may not create another name: 403", r.status == 403, r)
    r = req(c, "POST", "/queues", {"name": other}, qharness.bearer(SECRET_ADMIN))
    ck.check("admin:* creates it: 201", r.status == 201, r)
    r = req(c, "GET", "/queues", headers=qharness.bearer(SECRET_ORDERS))
    names = [x.get("name") for x in (r.json() or {}).get("queues", [])]
    ck.check("GET /queues shows a key only the queues it may use",
             r.status == 200 and o1 in names and other not in names
             and (r.json() or {}).get("count") == len(names), names)
    r = req(c, "GET", "/queues", headers=qharness.bearer(SECRET_ADMIN))
    names = [x.get("name") for x in (r.json() or {}).get("queues", [])]
    ck.check("GET /queues with admin:* shows both", o1 in names and other in names, names)
    for n in (o1, other):
        r = req(c, "DELETE", "/queues/" + n, headers=qharness.bearer(SECRET_ADMIN))
        ck.check("DELETE %s: 200" % n.split("-")[0], r.status == 200, r)


if __name__ == "__main__":
    sys.exit(main())
