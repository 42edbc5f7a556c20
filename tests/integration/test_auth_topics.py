#!/usr/bin/python3
"""Topic permissions publish:<pattern> and subscribe:<pattern> (issue 18) seen from the queue
routes, against a real RabbitMQ (a private one with the management plugin unless --amqp-port
is given): they are topic actions, so they never open a queue route. A key holding only
publish:/subscribe: gets 403 on GET /queues, GET /queues/{id} and the queue message routes; a
key with subscribe:* beside consume:jobs.* sees only the jobs.* queues in GET /queues and 403
on GET /queues/{other}; '*' still sees everything.

    tests/integration/test_auth_topics.py --bin build/bin [--amqp-port P --mgmt-port M]

Standard library only; bounded (every request 15 s, the run about a minute).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qharness  # noqa: E402

SECRET_ADMIN = "adminsecret-0123456789abcdef"
SECRET_SUB = "subsecret-0123456789abcdef"
SECRET_PUB = "pubsecret-0123456789abcdef"


def main():
    ap = qharness.arg_parser(__doc__)
    args = ap.parse_args()
    with qharness.Stack(args) as st:
        run(st)
    return st.ck.summary()


def run(st):
    ck = st.ck
    keys = "adm:%s:*,sub:%s:subscribe:*,consume:jobs.*,pub:%s:publish:*,subscribe:ev.*" % (
        SECRET_ADMIN, SECRET_SUB, SECRET_PUB)
    p = st.producer("topics-auth", {"API_KEYS": keys})
    adm, sub, pub = (qharness.bearer(s) for s in (SECRET_ADMIN, SECRET_SUB, SECRET_PUB))
    jobs, other = "jobs." + st.qname("j"), st.qname("other")
    for n in (jobs, other):
        r = st.request(p, "POST", "/queues", {"name": n}, adm)
        ck.check("'*' creates %s: 201" % n.split("-")[0], r.status == 201, r)

    r = st.request(p, "GET", "/queues", headers=sub)
    names = [x.get("name") for x in (r.json() or {}).get("queues", [])]
    ck.check("subscribe:* + consume:jobs.*: GET /queues lists only the jobs.* queue",
             r.status == 200 and jobs in names and other not in names, (r.status, names))
    r = st.request(p, "GET", "/queues/" + other, headers=sub)
    ck.check("subscribe:* is no permission on queue other: GET /queues/{other} 403",
             r.status == 403, r)
    r = st.request(p, "GET", "/queues/" + jobs, headers=sub)
    ck.check("consume:jobs.*: GET /queues/{jobs} 200", r.status == 200, r)

    r = st.request(p, "GET", "/queues", headers=pub)
    ck.check("publish:/subscribe: only: GET /queues 403 (no queue permission)",
             r.status == 403, r)
    r = st.request(p, "GET", "/queues/" + other, headers=pub)
    ck.check("publish:* only: GET /queues/{other} 403", r.status == 403, r)
    r = st.request(p, "POST", "/queues/%s/messages" % other, {"payload": 1}, pub)
    ck.check("publish:* is not produce:*: POST /queues/{other}/messages 403", r.status == 403, r)
    r = st.request(p, "GET", "/queues/%s/messages" % other, headers=pub)
    ck.check("subscribe: is not consume:: GET /queues/{other}/messages 403", r.status == 403, r)

    r = st.request(p, "GET", "/queues", headers=adm)
    names = [x.get("name") for x in (r.json() or {}).get("queues", [])]
    ck.check("'*': GET /queues lists both", jobs in names and other in names, names)
    for n in (jobs, other):
        r = st.request(p, "DELETE", "/queues/" + n, headers=adm)
        ck.check("DELETE %s: 200" % n.split("-")[0], r.status == 200, r)


if __name__ == "__main__":
    sys.exit(main())
