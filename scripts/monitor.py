#!/usr/bin/env python3
"""relayq terminal monitor (Python standard library only).

Shows, refreshed every --interval seconds (default 2): the health of the producer and of each
consumer (/health/live, /health/ready), their message counters and rates (/metrics), and from
the RabbitMQ management API: the request queue's depth (ready/unacked), its consumers, publish
and deliver rates, and the dead-letter queue's depth.

    scripts/monitor.py                  live view (Ctrl-C quits)
    scripts/monitor.py --once           one frame, then exit: 0 when the broker answers and every
                                        service is ready, 1 otherwise (usable as a smoke check)

Where to look: --run-dir (default run/) for the local mode's pidfiles and ports; otherwise
--producer / --consumer URLs (repeatable) or PRODUCER_PORT / CONSUMER_PORT, and --mgmt
(default http://127.0.0.1:$MGMT_PORT, 15672) with RABBITMQ_USER / RABBITMQ_PASS (guest/guest).
Under docker compose the consumers publish no port: --prometheus URL (http://127.0.0.1:9090)
lists every consumer replica Prometheus scrapes, with its counters, instead.
"""

import argparse
import base64
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 1.5


def http_get(url, auth=None):
    """GET url; returns (status, body text) or (None, error text). Never raises."""
    req = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(("%s:%s" % auth).encode()).decode()
        req.add_header("Authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        try:
            body = e.read().decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - best effort body of an error answer
            body = ""
        return e.code, body
    except Exception as e:  # noqa: BLE001 - connection refused, timeout, reset...
        reason = getattr(e, "reason", e)
        return None, str(reason)


SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text):
    """Prometheus text format -> {metric name: sum of its samples over all label sets}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            continue
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        out[m.group(1)] = out.get(m.group(1), 0.0) + v
    return out


def discover(args):
    """Returns [(name, base URL)] for the producer and the consumers."""
    services = []
    run_dir = args.run_dir
    if args.producer:
        services.append(("producer", args.producer.rstrip("/")))
    elif run_dir and os.path.exists(os.path.join(run_dir, "producer.port")):
        with open(os.path.join(run_dir, "producer.port")) as f:
            services.append(("producer", "http://127.0.0.1:%s" % f.read().strip()))
    else:
        services.append(("producer", "http://127.0.0.1:%s" % os.environ.get("PRODUCER_PORT", "5000")))

    if args.prometheus:
        return services
    if args.consumer:
        for i, url in enumerate(args.consumer, 1):
            services.append(("consumer-%d" % i, url.rstrip("/")))
        return services
    found = []
    if run_dir and os.path.isdir(run_dir):
        for fn in os.listdir(run_dir):
            m = re.match(r"^consumer-(\d+)\.port$", fn)
            if m:
                with open(os.path.join(run_dir, fn)) as f:
                    found.append((int(m.group(1)), f.read().strip()))
    if found:
        for i, port in sorted(found):
            services.append(("consumer-%d" % i, "http://127.0.0.1:%s" % port))
    else:
        services.append(("consumer-1", "http://127.0.0.1:%s" % os.environ.get("CONSUMER_PORT", "8000")))
    return services


# Counters shown per service: (label, metric name).
COUNTERS = {
    "producer": [("produced", "messages_produced_total"), ("publish_err", "producer_publish_errors_total")],
    "consumer": [("consumed", "messages_consumed_total"), ("proc_err", "message_processing_errors_total")],
}


class Monitor:
    def __init__(self, args):
        self.args = args
        self.prev = {}  # service name -> (time, {metric: value})
        self.auth = (args.user, args.password)

    def service_rows(self):
        rows, all_ready = [], True
        for name, base in discover(self.args):
            kind = "producer" if name == "producer" else "consumer"
            live_s, _ = http_get(base + "/health/live")
            ready_s, ready_body = http_get(base + "/health/ready")
            reason = ""
            if ready_s != 200:
                all_ready = False
                if ready_s is None:
                    reason = "unreachable"
                else:
                    try:
                        reason = json.loads(ready_body).get("reason", "") or ""
                    except (ValueError, AttributeError):
                        reason = ready_body.strip()[:40]
            stats = []
            met_s, met_body = http_get(base + "/metrics")
            if met_s == 200:
                now, vals = time.monotonic(), parse_metrics(met_body)
                prev = self.prev.get(name)
                for label, metric in COUNTERS[kind]:
                    v = vals.get(metric)
                    if v is None:
                        continue
                    cell = "%s=%d" % (label, v)
                    if prev and metric in prev[1] and now > prev[0] and label in ("produced", "consumed"):
                        cell += " (%.1f/s)" % max(0.0, (v - prev[1][metric]) / (now - prev[0]))
                    stats.append(cell)
                self.prev[name] = (now, vals)
            rows.append((name, base, fmt_status(live_s), fmt_status(ready_s), reason, "  ".join(stats)))
        return rows, all_ready

    def prometheus_consumer_rows(self):
        """Consumer replicas as Prometheus sees them (job relayq-consumer): up, counters, rate."""
        base = self.args.prometheus.rstrip("/")

        def query(q):
            s, body = http_get(base + "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
            if s != 200:
                raise OSError("Prometheus %s: %s" % (base, fmt_status(s) if s else body))
            res = json.loads(body).get("data", {}).get("result", [])
            return {r["metric"].get("instance", "?"): float(r["value"][1]) for r in res}

        try:
            up = query('up{job="relayq-consumer"}')
            consumed = query('sum by (instance) (messages_consumed_total{job="relayq-consumer"})')
            rate = query('sum by (instance) (rate(messages_consumed_total{job="relayq-consumer"}[1m]))')
            errs = query('sum by (instance) (message_processing_errors_total{job="relayq-consumer"})')
        except (OSError, ValueError) as e:
            return [("consumers", base, "?", "?", str(e), "")], False
        rows, ok = [], bool(up)
        for i, inst in enumerate(sorted(up), 1):
            live = "ok" if up[inst] == 1 else "DOWN"
            ok = ok and live == "ok"
            stats = []
            if inst in consumed:
                stats.append("consumed=%d (%.1f/s)" % (consumed[inst], rate.get(inst, 0.0)))
            if inst in errs:
                stats.append("proc_err=%d" % errs[inst])
            rows.append(("consumer-%d" % i, inst, live, "-", "", "  ".join(stats)))
        if not rows:
            rows.append(("consumers", base, "-", "-", "Prometheus scrapes no consumer", ""))
        return rows, ok

    def broker_lines(self):
        a = self.args
        vhost = urllib.parse.quote(a.vhost, safe="")
        lines = []
        s, body = http_get(a.mgmt + "/api/overview", self.auth)
        if s != 200:
            return ["broker      management API %s: %s" % (a.mgmt, fmt_status(s) if s else body)], False
        try:
            ov = json.loads(body)
        except ValueError:
            return ["broker      management API answered non-JSON"], False
        totals = ov.get("object_totals", {})
        lines.append(
            "broker      RabbitMQ %s  node %s  connections %s  channels %s  queues %s"
            % (ov.get("rabbitmq_version", "?"), ov.get("node", "?"), totals.get("connections", "?"),
               totals.get("channels", "?"), totals.get("queues", "?"))
        )
        for label, qname in (("queue", a.queue), ("dlq", a.dlq)):
            s, body = http_get("%s/api/queues/%s/%s" % (a.mgmt, vhost, urllib.parse.quote(qname, safe="")), self.auth)
            if s == 404:
                lines.append("%-11s %-22s (not declared yet)" % (label, qname))
                continue
            if s != 200:
                lines.append("%-11s %-22s %s" % (label, qname, fmt_status(s) if s else body))
                continue
            try:
                q = json.loads(body)
            except ValueError:
                lines.append("%-11s %-22s non-JSON answer" % (label, qname))
                continue
            ms = q.get("message_stats", {}) or {}
            pub = (ms.get("publish_details") or {}).get("rate", 0.0)
            dlv = (ms.get("deliver_get_details") or {}).get("rate", 0.0)
            ack = (ms.get("ack_details") or {}).get("rate", 0.0)
            if label == "queue":
                lines.append(
                    "%-11s %-22s depth %-7s ready %-7s unacked %-6s consumers %-3s publish %.1f/s  deliver %.1f/s  ack %.1f/s"
                    % (label, qname, q.get("messages", 0), q.get("messages_ready", 0),
                       q.get("messages_unacknowledged", 0), q.get("consumers", 0), pub, dlv, ack)
                )
            else:
                depth = q.get("messages", 0)
                lines.append("%-11s %-22s depth %s%s" % (label, qname, depth, "   <-- dead letters waiting" if depth else ""))
        return lines, True

    def frame(self):
        rows, all_ready = self.service_rows()
        if self.args.prometheus:
            prows, pok = self.prometheus_consumer_rows()
            rows += prows
            all_ready = all_ready and pok
        blines, broker_ok = self.broker_lines()
        out = ["relayq monitor  %s  (every %gs, Ctrl-C quits)" % (time.strftime("%Y-%m-%d %H:%M:%S"), self.args.interval), ""]
        out.append("%-11s %-24s %-6s %-6s %s" % ("service", "url", "live", "ready", "metrics"))
        for name, base, live, ready, reason, stats in rows:
            ready_txt = ready if not reason else "%s (%s)" % (ready, reason)
            out.append("%-11s %-24s %-6s %-6s %s" % (name, base, live, ready_txt, stats))
        out.append("")
        out.extend(blines)
        return "\n".join(out), (all_ready and broker_ok)


def fmt_status(s):
    if s is None:
        return "DOWN"
    return "ok" if s == 200 else str(s)


def main():
    p = argparse.ArgumentParser(description="relayq terminal monitor")
    p.add_argument("--once", action="store_true", help="print one frame and exit (0 = all ready)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between frames (default 2)")
    p.add_argument("--run-dir", default="run", help="local mode run folder (pidfiles, ports)")
    p.add_argument("--producer", help="producer base URL (default from --run-dir or PRODUCER_PORT)")
    p.add_argument("--consumer", action="append", help="consumer base URL (repeatable)")
    p.add_argument("--prometheus", help="list consumers from this Prometheus (compose mode)")
    p.add_argument("--mgmt", default="http://127.0.0.1:%s" % os.environ.get("MGMT_PORT", "15672"),
                   help="RabbitMQ management API base URL")
    p.add_argument("--user", default=os.environ.get("RABBITMQ_USER", "guest"))
    p.add_argument("--password", default=os.environ.get("RABBITMQ_PASS", "guest"))
    p.add_argument("--vhost", default=os.environ.get("RABBITMQ_VHOST", "/"))
    p.add_argument("--queue", default=os.environ.get("REQUEST_QUEUE", "request_queue"))
    p.add_argument("--dlq", help="dead-letter queue name (default <queue>.dlq)")
    args = p.parse_args()
    args.mgmt = args.mgmt.rstrip("/")
    if not args.dlq:
        args.dlq = args.queue + ".dlq"
    if args.interval <= 0:
        p.error("--interval must be > 0")

    mon = Monitor(args)
    if args.once:
        text, ok = mon.frame()
        print(text)
        return 0 if ok else 1
    tty = sys.stdout.isatty()
    try:
        while True:
            text, _ = mon.frame()
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J")
            else:
                sys.stdout.write("\n")
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # the reader went away (| head): quit quietly
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
