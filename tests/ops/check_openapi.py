#!/usr/bin/python3
"""Checks docs/openapi.json against the real services (issue 18).

  (a) lint: `redocly lint docs/openapi.json` (the repo's redocly.yaml) must report no error;
  (b) coverage, both ways, against a producer and a consumer this script starts (with a
      broker of its own, scripts/broker.sh, free ports on 127.0.0.1):
      - every (method, path template) of the spec is answered: a request with sample values
        gets something other than the unknown-route answer (404 {"error": "no such
        endpoint"} from the producer, 404 {"error": "not found"} from the consumer) and
        other than 405;
      - every route the servers answer is in the spec: the probe paths come from the route
        code itself (the path literals and segment names of producer/api/api.c, the route
        modules and producer/rt/*.c, expanded under /queues/{id} and /topics/{name}) plus
        the spec's own paths, each tried with GET, HEAD, POST, PUT, DELETE and PATCH; an
        answered (method, path) that matches no spec operation of that server is a failure;
  (c) GET /openapi.json serves docs/openapi.json byte for byte.

The probes publish nothing that matters: sample names of queues and topics that do not
exist, POSTs without a body (400), a DLQ retry on an empty DLQ.

Usage: check_openapi.py [--build-dir build] [--amqp-port P] [--redocly PATH] [--no-lint]
redocly: --redocly, else BUILD/npm/node_modules/.bin/redocly (make install-deps), else PATH.
Prints PASS/FAIL lines and `N passed, M failed`; exit 1 on any failure. Bounded (< 60 s
with the broker start); only processes it started are stopped, by PID.
"""
import argparse
import glob
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, "docs", "openapi.json")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from test_reliability import free_port  # noqa: E402  (a broker's port below the ephemeral range)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")
UNKNOWN = {"producer": "no such endpoint", "consumer": "not found"}
SAMPLES = {"id": "rq-check-q", "name": "rq-check-t", "msgId": "rq-check-m", "asset": "swagger-ui.css"}
# where the route code lives: path literals and segment names come from these files
ROUTE_SOURCES = ["producer/api/api.c", "producer/api/queues_admin.c", "producer/api/queues_pull.c",
                 "producer/api/messages.c", "producer/api/topics.c", "producer/api/static.c",
                 "producer/rt/*.c", "consumer/main.c", "common/http_util.c"]

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS  {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL  {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def request(port, method, path, timeout=5.0):
    """(status, body bytes); status 0 when the connection failed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Content-Length": "0"} if method in ("POST", "PUT", "PATCH") else {})
        r = conn.getresponse()
        body = r.read(4096) if method != "HEAD" else b""
        return r.status, body
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        conn.close()


def unknown_route(service, body):
    try:
        return json.loads(body).get("error") == UNKNOWN[service]
    except (ValueError, AttributeError):
        return False


def answered(service, port, method, path):
    """(1 when the route exists: not the unknown-route 404, not 405; status, body). A HEAD
    404 has no body: the GET of the same path tells which 404 it is."""
    st, body = request(port, method, path)
    if st in (0, 405):
        return False, st, body
    if st == 404:
        if method == "HEAD":
            gst, gbody = request(port, "GET", path)
            return not (gst == 404 and unknown_route(service, gbody)), st, gbody
        return not unknown_route(service, body), st, body
    return True, st, body


def lint(args):
    exe = args.redocly or os.path.join(args.build_dir, "npm", "node_modules", ".bin", "redocly")
    if not os.path.exists(exe):
        exe = shutil.which("redocly")
    if not exe:
        return check("redocly lint docs/openapi.json", False,
                     "redocly not found: make install-deps (npm install @redocly/cli into build/npm)")
    r = subprocess.run([exe, "lint", "--format", "stylish", args.spec], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    out = (r.stdout + r.stderr).strip()
    warnings = re.findall(r"^\s*\S+:\d+:\d+\s+warning", out, re.M)
    return check("redocly lint docs/openapi.json (no errors%s)" % (
                 f"; {len(warnings)} warnings" if warnings else ""), r.returncode == 0,
                 "\n" + "\n".join(l for l in out.splitlines() if "error" in l.lower())[:2000])


def spec_ops(spec):
    """{service: {(METHOD, template)}}: the consumer has the paths that list its server."""
    ops = {"producer": set(), "consumer": set()}
    for path, item in spec["paths"].items():
        servers = [s["url"] for s in item.get("servers", spec.get("servers", []))]
        for m in item:
            if m.upper() not in METHODS:
                continue
            ops["producer"].add((m.upper(), path))
            if any(u.endswith(":8000") for u in servers):
                ops["consumer"].add((m.upper(), path))
    return ops


def concrete(template):
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLES.get(m.group(1), "x"), template)


def template_of(path, templates):
    """The spec template a concrete path matches (literal segments first), or None."""
    best = None
    for t in templates:
        rx = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(t)) + "$"
        if re.match(rx, path):
            score = len([s for s in t.split("/") if s and not s.startswith("{")])
            if best is None or score > best[0]:
                best = (score, t)
    return best[1] if best else None


def source_probes():
    """Probe paths from the route code: its path literals, and its segment names under the
    resource trees (/queues/{id}/..., /topics/{name}/...)."""
    paths, words = set(), set()
    for pat in ROUTE_SOURCES:
        for f in glob.glob(os.path.join(ROOT, pat)):
            src = open(f, encoding="utf-8", errors="replace").read()
            for lit in re.findall(r'"(/[A-Za-z0-9_.\-/]*)"', src):
                paths.add(lit if not lit.endswith("/") else lit + "x")
                paths.add(lit.rstrip("/") or "/")
                if re.fullmatch(r"/[a-z][a-z_-]*", lit):  # a segment compared with its slash
                    words.add(lit[1:])
            for w in re.findall(r'(?:memcmp|strcmp|strncmp|strcasecmp)\s*\([^,()]+,\s*"([a-z][a-z_-]*)"', src):
                words.add(w)
            for w in re.findall(r'\{\s*"([a-z][a-z_-]*)"\s*,\s*R_', src):  # route tables
                words.add(w)
    for base in ("/queues/" + SAMPLES["id"], "/topics/" + SAMPLES["name"]):
        for w in words:
            paths.update({f"{base}/{w}", f"{base}/messages/{w}", f"{base}/messages/{SAMPLES['msgId']}/{w}"})
    return {p for p in paths if len(p) < 200}


def start_stack(args, tmp, procs, state):
    """Starts the broker (unless --amqp-port), a producer and a consumer; fills procs and
    state["broker_dir"] as it goes, so that a failure half-way still stops what started."""
    ports = {"producer": free_port(), "consumer": free_port()}
    amqp = args.amqp_port or free_port()
    broker_dir = os.path.join(tmp, "broker")
    if not args.amqp_port:
        state["broker_dir"] = broker_dir
        with open(os.path.join(tmp, "broker.out"), "w") as out:
            rc = subprocess.run(["bash", os.path.join(ROOT, "scripts/broker.sh"), "start", broker_dir,
                                 str(amqp)], stdout=out, stderr=subprocess.STDOUT, timeout=120).returncode
        if rc != 0:
            raise RuntimeError(f"broker start failed (see {tmp}/broker.out)")
    env = dict(os.environ, RABBITMQ_HOST="127.0.0.1", RABBITMQ_PORT=str(amqp), LOG_LEVEL="warn",
               REQUEST_QUEUE="rq_check_openapi", RABBITMQ_MANAGEMENT_URL="off")
    for name in ("producer", "consumer"):
        e = dict(env)
        if name == "producer":
            e.update(PRODUCER_BIND="127.0.0.1", PRODUCER_PORT=str(ports[name]))
        else:
            e.update(CONSUMER_BIND="127.0.0.1", CONSUMER_PORT=str(ports[name]),
                     OUTPUT_FILE=os.path.join(tmp, "output.txt"))
        with open(os.path.join(tmp, f"{name}.log"), "w") as logf:
            procs[name] = subprocess.Popen([os.path.join(args.build_dir, "bin", name)], env=e,
                                           stdout=logf, stderr=logf)
    deadline = time.monotonic() + 30
    for name in procs:
        while request(ports[name], "GET", "/health/ready", 2)[0] != 200:
            if procs[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready (see {tmp}/{name}.log)")
            time.sleep(0.1)
    return ports


def stop_stack(procs, broker_dir):
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    if broker_dir:
        subprocess.run(["bash", os.path.join(ROOT, "scripts/broker.sh"), "stop", broker_dir],
                       capture_output=True, timeout=60)


def coverage(spec, ports):
    ops = spec_ops(spec)
    templates = list(spec["paths"])
    probes = source_probes() | {concrete(t) for t in templates}
    for service, port in ports.items():
        missing = []  # in the spec, not answered
        for method, t in sorted(ops[service]):
            ok, st, body = answered(service, port, method, concrete(t))
            if not ok:
                missing.append(f"{method} {t} -> {st} {body[:80].decode(errors='replace')}")
        check(f"{service}: every operation of the spec is answered ({len(ops[service])})",
              not missing, "\n  " + "\n  ".join(missing))
        extra = []  # answered, not in the spec
        for path in sorted(probes):
            for method in METHODS:
                ok, st, _ = answered(service, port, method, path)
                if not ok:
                    continue
                t = template_of(path, templates)
                if t is None or (method, t) not in ops[service]:
                    extra.append(f"{method} {path} -> {st} (spec: {t or 'no such path'})")
        check(f"{service}: every route answered is in the spec ({len(probes)} paths x {len(METHODS)} methods)",
              not extra, "\n  " + "\n  ".join(extra))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--amqp-port", type=int, help="use this broker instead of starting one")
    ap.add_argument("--redocly", help="the redocly executable")
    ap.add_argument("--no-lint", action="store_true")
    ap.add_argument("--spec", default=SPEC, help="the document to check (default docs/openapi.json)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.build_dir = os.path.abspath(args.build_dir)
    t0 = time.monotonic()
    with open(args.spec, "rb") as f:
        raw = f.read()
    spec = json.loads(raw)
    if not args.no_lint:
        lint(args)
    tmp = tempfile.mkdtemp(prefix="rq_openapi_")
    os.chmod(tmp, 0o755)  # the broker (user rabbitmq) must reach its folder inside
    procs, state = {}, {"broker_dir": None}
    try:
        ports = start_stack(args, tmp, procs, state)
        conn = http.client.HTTPConnection("127.0.0.1", ports["producer"], timeout=5)
        conn.request("GET", "/openapi.json")
        r = conn.getresponse()
        body = r.read()
        conn.close()
        check("GET /openapi.json serves docs/openapi.json", r.status == 200 and body == raw,
              f"status {r.status}, {len(body)} bytes vs {len(raw)}")
        coverage(spec, ports)
    except Exception as e:  # noqa: BLE001 - report, then clean up
        check("stack", False, repr(e))
    finally:
        stop_stack(procs, state["broker_dir"])
        if args.keep or failed:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed ({time.monotonic() - t0:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
