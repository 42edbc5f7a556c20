#!/usr/bin/python3
"""Payloads unchanged, end to end (issue 14): from the HTTP request body to the queue, the
wait=true reply and OUTPUT_FILE, against a real broker.

Table: request body (bytes, sent as is) -> the payload's bytes in the published message and
the output line. Checks, per case:
  queue   with the consumer stopped, POST /produce (201); the message in the request queue
          carries the payload exactly as sent (basic.get).
  reply   with the consumer running, POST /produce?wait=true answers 200 with the reply
          "Consumer processed: " + the output line.
  output  OUTPUT_FILE holds each line once, one line per message: its line count equals
          consumer_lines_written_total and the number of messages.

Usage: test_payloads.py --build-dir build [--amqp-port P] [--keep]
Without --amqp-port it starts (and stops) a broker of its own on a free port
(scripts/broker.sh, 127.0.0.1). Prints one PASS/FAIL line per check and `N passed, M failed`;
exit 1 on any failure. Every wait is bounded; only processes this script started are
signalled, by PID. Standard library only (/usr/bin/python3).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_consumer_review import Amqp  # noqa: E402 - a minimal AMQP client
from test_reliability import Checks, Stack, http_call, log  # noqa: E402

QUEUE = "payloads_q"

# (name, request body, payload bytes in the published message, output line)
CASES = [
    ("0.1", b'{"payload":0.1}', b"0.1", b"0.1"),
    ("19.99", b'{"payload": 19.99}', b"19.99", b"19.99"),
    ("1e-7", b'{"payload":1e-7}', b"1e-7", b"1e-7"),
    ("an integer beyond 64 bits", b'{"payload":123456789012345678901234567890}',
     b"123456789012345678901234567890", b"123456789012345678901234567890"),
    ("escapes as sent (object)", b'{"payload":{"name":"caf\\u00e9","p":"a\\/b"}}',
     b'{"name":"caf\\u00e9","p":"a\\/b"}', b'{"name":"caf\\u00e9","p":"a\\/b"}'),
    ("a string's escapes decoded (no control character)", b'{"payload":"caf\\u00e9 2"}',
     b'"caf\\u00e9 2"', "café 2".encode()),
    ("nested objects with odd whitespace",
     b'{ "id" : "odd-ws",\n "payload" :  {\n  "a" : [ 1,  2.50 ,{"b":null}] ,\r\n "c":{} } \n}',
     b'{\n  "a" : [ 1,  2.50 ,{"b":null}] ,\r\n "c":{} }',
     b'{  "a" : [ 1,  2.50 ,{"b":null}] , "c":{} }'),
    ("a string with \\n (written as sent, one line)", b'{"payload":"line1\\nline2"}',
     b'"line1\\nline2"', b'"line1\\nline2"'),
    ("a string with a tab", b'{"payload":"tab\\there"}', b'"tab\\there"', b'"tab\\there"'),
    ("an array with a big negative integer", b'{"payload":[-98765432109876543210987654321, 0.30]}',
     b"[-98765432109876543210987654321, 0.30]", b"[-98765432109876543210987654321, 0.30]"),
]


def post(url, body, timeout=20):
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", u.path + ("?" + u.query if u.query else ""), body=body,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    except OSError as e:
        return 0, str(e).encode()
    finally:
        conn.close()


def metric(url, name):
    st, _, body, _, _ = http_call(url + "/metrics", timeout=5)
    for ln in body.decode(errors="replace").splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    return None


def check_queue(c, st):
    """The published messages carry the payloads as sent."""
    st.start("producer")
    pu = st.url("producer")
    for name, body, _, _ in CASES:
        s, ans = post(pu + "/produce", body)
        c.check(f"queue [{name}]: 201", s == 201, f"{s} {ans[:200]!r}")
    a = Amqp(st.amqp)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < len(CASES) and time.monotonic() < deadline:
        m = a.get(QUEUE)
        if m is None:
            time.sleep(0.1)
            continue
        got.append(m)
    a.close()
    c.check(f"queue: {len(CASES)} messages in the request queue", len(got) == len(CASES),
            f"{len(got)}")
    for (name, _, raw, _), (props, body) in zip(CASES, got):
        ok = (b',"payload":' + raw + b',"processing_time":') in body
        try:
            env = json.loads(body)
        except ValueError:
            env = None
        c.check(f"queue [{name}]: the payload's bytes as sent ({raw[:40]!r})",
                ok and isinstance(env, dict) and "payload" in env and
                props.get("content_type") == b"application/json", f"{body[:300]!r}")


def check_reply_and_output(c, st):
    st.start("consumer")
    pu, cu = st.url("producer"), st.url("consumer")
    for name, body, _, line in CASES:
        s, ans = post(pu + "/produce?wait=true", body)
        try:
            reply = json.loads(ans).get("reply") if s == 200 else None
        except ValueError:
            reply = None
        want = "Consumer processed: " + line.decode()
        c.check(f"reply [{name}]: {want!r}", reply == want, f"status {s}, body {ans[:300]!r}")
    deadline = time.monotonic() + 10
    data = b""
    while time.monotonic() < deadline:
        with open(st.output, "rb") as f:
            data = f.read()
        if data.count(b"\n") >= len(CASES):
            break
        time.sleep(0.1)
    lines = data.split(b"\n")
    tail = lines.pop()
    c.check(f"output: {len(CASES)} lines, each message on one line, ending in a newline",
            len(lines) == len(CASES) and tail == b"", f"{len(lines)} lines, tail {tail[:80]!r}")
    for name, _, _, line in CASES:
        c.check(f"output [{name}]: {line[:60]!r} once", lines.count(line) == 1,
                f"{lines.count(line)} times; output {data[:600]!r}")
    written, nl = metric(cu, "consumer_lines_written_total"), data.count(b"\n")
    c.check("output: consumer_lines_written_total == wc -l", written == nl,
            f"metric {written}, wc -l {nl}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--amqp-port", type=int, help="use this broker (else start one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    tmp = tempfile.mkdtemp(prefix="rq-payloads-")
    os.chmod(tmp, 0o755)  # the broker (user rabbitmq) must reach its folder inside
    c = Checks()
    st = Stack(build, tmp, QUEUE, args.amqp_port, {"REPLY_TIMEOUT_MS": "10000"})
    t0 = time.monotonic()
    try:
        if st.own_broker:
            log(f"starting a broker on 127.0.0.1:{st.amqp}")
            st.broker("start")
        check_queue(c, st)
        check_reply_and_output(c, st)
    except Exception as e:  # noqa: BLE001 - reported as a failure
        c.check("scenario ran to the end", False, repr(e))
    finally:
        st.close()
    log(f"{time.monotonic() - t0:.1f} s; scratch {tmp}")
    if not args.keep and c.failed == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{c.passed} passed, {c.failed} failed", flush=True)
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
