#!/usr/bin/python3
"""User-style checks of the Docker Compose stack, for scripts/test-compose.sh.

Standard library only. Each subcommand prints what it saw and exits 1 when the check fails
(after its own deadline: every wait here is bounded).

  checks.py wait-ready URL SECONDS
  checks.py queue-consumers MGMT_URL QUEUE N SECONDS     (RabbitMQ management API, guest)
  checks.py spread PRODUCER_URL MESSAGES SECONDS CONTAINER...
        records each consumer replica's messages_consumed_total (docker exec ... curl
        /metrics), sends MESSAGES messages, waits until the replicas consumed them all and
        fails unless every replica consumed some
  checks.py prom-targets PROM_URL JOB N SECONDS          (N active targets of JOB, all up)
  checks.py logs-show LOGFILE CONTAINER...               (every replica appears in the logs)
"""

import base64
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def http_get(url, auth=None, timeout=5.0):
    """Returns (status, body bytes); status 0 when the request did not complete."""
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, ValueError):
        return 0, b""


def http_post_json(url, obj, timeout=10.0):
    """POSTs obj as JSON; returns the status (0 when the request did not complete)."""
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_ready(url, seconds):
    deadline = time.monotonic() + seconds
    status = 0
    while time.monotonic() < deadline:
        status, _ = http_get(url.rstrip("/") + "/health/ready")
        if status == 200:
            print("ready: %s/health/ready 200" % url)
            return 0
        time.sleep(1)
    print("FAIL: %s/health/ready not 200 after %ss (last %s)" % (url, seconds, status))
    return 1


def queue_consumers(mgmt, queue, want, seconds):
    deadline = time.monotonic() + seconds
    got = None
    while time.monotonic() < deadline:
        status, body = http_get("%s/api/queues/%%2F/%s" % (mgmt.rstrip("/"),
                                                           urllib.parse.quote(queue)),
                                auth="guest:guest")
        try:  # a 200 whose body is not JSON (the API under load) is asked again
            got = json.loads(body).get("consumers") if status == 200 else got
        except (ValueError, AttributeError):
            pass
        if status == 200:
            if got == want:
                print("rabbitmq: %s has %d consumers (management API)" % (queue, got))
                return 0
        time.sleep(1)
    print("FAIL: %s consumers %r, want %d" % (queue, got, want))
    return 1


def replica_consumed(container):
    """messages_consumed_total of one consumer replica, read inside its container."""
    out = subprocess.run(["docker", "exec", container, "curl", "-fsS",
                          "http://127.0.0.1:8000/metrics"],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    total = 0.0
    for line in out.splitlines():
        m = re.match(r"^messages_consumed_total(\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
        if m:
            total += float(m.group(2))
    return total


def spread(url, messages, seconds, containers):
    before = {c: replica_consumed(c) for c in containers}
    run = "%d" % time.time()
    bad = 0
    for i in range(messages):
        s = http_post_json(url.rstrip("/") + "/produce",
                           {"payload": "compose spread %s %d" % (run, i)})
        if s not in (200, 201, 202):
            bad += 1
    if bad:
        print("FAIL: %d of %d produces not accepted" % (bad, messages))
        return 1
    deadline = time.monotonic() + seconds
    delta = {}
    while time.monotonic() < deadline:
        delta = {c: replica_consumed(c) - before[c] for c in containers}
        if sum(delta.values()) >= messages:
            break
        time.sleep(1)
    line = ", ".join("%s=%d" % (c, delta.get(c, 0)) for c in containers)
    print("spread of %d messages over %d replicas: %s" % (messages, len(containers), line))
    if sum(delta.values()) < messages:
        print("FAIL: only %d of %d consumed within %ss" % (sum(delta.values()), messages, seconds))
        return 1
    if any(v <= 0 for v in delta.values()):
        print("FAIL: a replica consumed nothing")
        return 1
    return 0


def prom_targets(prom, job, want, seconds):
    deadline = time.monotonic() + seconds
    seen = []
    while time.monotonic() < deadline:
        status, body = http_get(prom.rstrip("/") + "/api/v1/targets?state=active")
        if status == 200:
            active = json.loads(body)["data"]["activeTargets"]
            seen = [(t["labels"].get("instance"), t["health"]) for t in active
                    if t["labels"].get("job") == job]
            if len(seen) == want and all(h == "up" for _, h in seen):
                print("prometheus: job %s has %d targets up: %s" %
                      (job, want, " ".join(i for i, _ in sorted(seen))))
                return 0
        time.sleep(2)
    print("FAIL: prometheus job %s targets %r, want %d up" % (job, seen, want))
    return 1


def logs_show(logfile, containers):
    text = open(logfile, encoding="utf-8", errors="replace").read()
    missing = []
    for c in containers:
        # v1 prefixes lines with the service and number (consumer_1), v2 with the container
        # name (project-consumer-1); accept the container name with or without the project.
        names = {c, re.sub(r"^[^_]*_", "", c), re.sub(r"^[^-]*-", "", c)}
        n = sum(1 for line in text.splitlines()
                if any(line.startswith(x + " ") or line.startswith(x + "|") for x in names))
        print("logs: %s %d lines" % (c, n))
        if n == 0:
            missing.append(c)
    if missing:
        print("FAIL: no log lines from %s" % " ".join(missing))
        return 1
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, a = argv[1], argv[2:]
    if cmd == "wait-ready":
        return wait_ready(a[0], float(a[1]))
    if cmd == "queue-consumers":
        return queue_consumers(a[0], a[1], int(a[2]), float(a[3]))
    if cmd == "spread":
        return spread(a[0], int(a[1]), float(a[2]), a[3:])
    if cmd == "prom-targets":
        return prom_targets(a[0], a[1], int(a[2]), float(a[3]))
    if cmd == "logs-show":
        return logs_show(a[0], a[1:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
