#!/usr/bin/env python3
"""report.py - helpers for scripts/bench.sh and the summary of a bench run (stdlib only).

  report.py freeport                          print a free TCP port on 127.0.0.1
  report.py portfree PORT...                  exit 0 when every PORT can be bound on 127.0.0.1
  report.py settle --facts F --prefix P URL NAME=SPEC...
        poll the Prometheus endpoint URL until the selected values stop changing (1 s), then
        append "P.NAME<TAB>value" to F. SPEC is a metric name with optional label matchers,
        e.g. 'http_request_duration_seconds_count{path="/produce",status="201"}' (matching
        series are summed), or 'http_status:/produce': one fact P.NAME.<code> per status.
  report.py wait-metric URL SPEC TARGET TIMEOUT
        poll URL every 50 ms until SPEC >= TARGET; print the wall time (epoch seconds) when it
        was first seen; exit 1 (printing the last value) on timeout.
  report.py wait-size FILE SIZE TIMEOUT
        poll FILE's size every 20 ms until it is >= SIZE; print the epoch time; exit 1 on
        timeout (printing the last size).
  report.py tool-rate FILE                    print the msg/s of the rq_amqp_tool runs in FILE
  report.py gen-lines FILE N                  write N log-like lines (deterministic) to FILE
  report.py summarize DIR                     read DIR/facts.tsv, write DIR/bench-results.json
        and DIR/bench-table.txt, print the table; exit 1 when a check found a MISMATCH.

facts.tsv holds one "key<TAB>value" per line, written by bench.sh (and `settle`); dotted keys
nest (produce_c64.server_status.201). Values that name wrk outputs (*.wrk) are parsed here.
"""

import json
import os
import re
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rq_ports import free_port, port_free  # noqa: E402  (below the ephemeral range)

# ---------------------------------------------------------------------------- metrics


def fetch(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8", "replace")


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Returns [(name, {label: value}, float)] for every sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = dict(LABEL.findall(m.group(3) or ""))
        try:
            v = float(m.group(4))
        except ValueError:
            continue
        out.append((m.group(1), labels, v))
    return out


def parse_spec(spec):
    m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$', spec)
    if not m:
        raise SystemExit("report.py: bad metric spec: %s" % spec)
    return m.group(1), dict(LABEL.findall(m.group(2) or ""))


def select(samples, spec):
    """Sum of the samples matching spec, or None when no series matches."""
    name, want = parse_spec(spec)
    total, found = 0.0, False
    for n, labels, v in samples:
        if n == name and all(labels.get(k) == val for k, val in want.items()):
            total += v
            found = True
    return total if found else None


def http_statuses(samples, path):
    out = {}
    for n, labels, v in samples:
        if n == "http_request_duration_seconds_count" and labels.get("path") == path:
            out[labels.get("status", "?")] = out.get(labels.get("status", "?"), 0) + v
    return out


def num(v):
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def cmd_settle(args):
    facts = prefix = None
    rest = []
    i = 0
    while i < len(args):
        if args[i] == "--facts":
            facts = args[i + 1]
            i += 2
        elif args[i] == "--prefix":
            prefix = args[i + 1]
            i += 2
        else:
            rest.append(args[i])
            i += 1
    if not facts or not prefix or len(rest) < 2:
        raise SystemExit("usage: report.py settle --facts F --prefix P URL NAME=SPEC...")
    url, pairs = rest[0], [p.split("=", 1) for p in rest[1:]]

    def snapshot():
        samples = parse_metrics(fetch(url))
        snap = {}
        for name, spec in pairs:
            if spec.startswith("http_status:"):
                for code, v in http_statuses(samples, spec[len("http_status:"):]).items():
                    snap["%s.%s" % (name, code)] = v
            else:
                snap[name] = select(samples, spec)
        return snap

    deadline = time.monotonic() + 20
    last, stable_since = snapshot(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        cur = snapshot()
        if cur != last:
            last, stable_since = cur, time.monotonic()
        elif time.monotonic() - stable_since >= 1.0:
            break
    with open(facts, "a") as f:
        for k in sorted(last):
            f.write("%s.%s\t%s\n" % (prefix, k, num(last[k]) if last[k] is not None else "absent"))


def cmd_wait_metric(url, spec, target, timeout):
    target, deadline = float(target), time.monotonic() + float(timeout)
    last = None
    while True:
        try:
            last = select(parse_metrics(fetch(url, 1.0)), spec)
        except OSError:
            pass
        if last is not None and last >= target:
            print("%.6f" % time.time())
            return 0
        if time.monotonic() > deadline:
            print("timeout last=%s" % num(last))
            return 1
        time.sleep(0.05)


def cmd_wait_size(path, size, timeout):
    size, deadline = int(size), time.monotonic() + float(timeout)
    last = -1
    while True:
        try:
            last = os.stat(path).st_size
        except FileNotFoundError:
            pass
        if last >= size:
            print("%.6f" % time.time())
            return 0
        if time.monotonic() > deadline:
            print("timeout last=%d" % last)
            return 1
        time.sleep(0.02)


def cmd_gen_lines(path, n):
    words = ["GET", "POST", "/api/orders", "/health", "user=alice", "user=bob", "ok", "retry",
             "latency_ms=12", "latency_ms=230", "status=200", "status=503"]
    with open(path, "w", encoding="ascii", newline="\n") as f:
        buf = []
        for i in range(int(n)):
            w = [words[(i * 7 + k * 3) % len(words)] for k in range(4)]
            buf.append("2024-05-01T12:%02d:%02d.%03dZ INFO relayq-bench line=%07d %s\tpad=%s\n"
                       % ((i // 60000) % 60, (i // 1000) % 60, i % 1000, i, " ".join(w),
                          "x" * (i % 23)))
            if len(buf) == 10000:
                f.write("".join(buf))
                buf = []
        f.write("".join(buf))


# ---------------------------------------------------------------------------- summary


def load_facts(d):
    facts = {}
    with open(os.path.join(d, "facts.tsv")) as f:
        for line in f:
            line = line.rstrip("\n")
            if "\t" not in line:
                continue
            k, v = line.split("\t", 1)
            facts[k] = v
    return facts


def tofloat(v, default=None):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def step_facts(facts, step):
    p = step + "."
    return {k[len(p):]: v for k, v in facts.items() if k.startswith(p)}


def read_wrk(path):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("WRKJSON "):
                    return json.loads(line[len("WRKJSON "):])
    except OSError:
        pass
    return None


TOOL_LINE = re.compile(r"published=(\d+) confirmed=(\d+) nacked=(\d+) returned=(\d+) "
                       r"seconds=([\d.]+) rate=(\d+)")


def read_tool(path):
    """Sums every summary line of rq_amqp_tool publish in path (one per chunk)."""
    try:
        with open(path) as f:
            found = TOOL_LINE.findall(f.read())
    except OSError:
        return None
    if not found:
        return None
    r = {"published": 0, "confirmed": 0, "nacked": 0, "returned": 0, "seconds": 0.0,
         "runs": len(found)}
    for m in found:
        r["published"] += int(m[0])
        r["confirmed"] += int(m[1])
        r["nacked"] += int(m[2])
        r["returned"] += int(m[3])
        r["seconds"] += float(m[4])
    r["seconds"] = round(r["seconds"], 3)
    r["msgs_per_s"] = round(r["confirmed"] / r["seconds"], 1) if r["seconds"] > 0 else 0.0
    return r


def cpu_of(sf, clk):
    """CPU seconds by process role over a step, from <role>.cpu_ticks facts and wrk time."""
    out = {}
    for k, v in sf.items():
        if k.startswith("cpu_ticks."):
            out[k[len("cpu_ticks."):]] = round(tofloat(v, 0) / clk, 2)
    if "loadgen_time" in sf:
        try:
            with open(sf["loadgen_time"]) as f:
                words = f.read().split()  # "user sys" per run of the load generator
            out["loadgen"] = round(sum(float(w) for w in words), 2)
        except (OSError, ValueError):
            pass
    return out


def ms(us):
    return None if us is None else round(us / 1000.0, 3)


def wrk_step(facts, step, per_request, ok_status, clk):
    sf = step_facts(facts, step)
    if not sf:
        return None
    w = read_wrk(sf.get("wrk", ""))
    r = {"connections": int(tofloat(sf.get("connections"), 0)),
         "threads": int(tofloat(sf.get("threads"), 0))}
    if w is None:
        r["error"] = "no wrk summary (see %s)" % sf.get("wrk")
        return r
    dur = w["duration_us"] / 1e6
    status = {k: int(v) for k, v in w["status"].items()}
    ok = status.get(str(ok_status), 0)
    r.update({
        "seconds": round(dur, 3),
        "requests": w["requests"],
        "status": status,
        "ok_per_s": round(ok / dur, 1) if dur > 0 else 0.0,
        "msgs_per_s": round(ok * per_request / dur, 1) if dur > 0 else 0.0,
        "socket_errors": {k: v for k, v in w["errors"].items() if k != "status"},
        "latency_ms": {"p50": ms(w["latency_us"]["p"]["50"]), "p90": ms(w["latency_us"]["p"]["90"]),
                       "p99": ms(w["latency_us"]["p"]["99"]),
                       "p99.9": ms(w["latency_us"]["p"]["99.9"]),
                       "mean": ms(w["latency_us"]["mean"]), "max": ms(w["latency_us"]["max"])},
        "server_status": {k[len("server_status."):]: int(tofloat(v, 0)) for k, v in sf.items()
                          if k.startswith("server_status.")},
        "cpu_s": cpu_of(sf, clk),
        "wall_s": round(tofloat(sf.get("wall_s"), 0), 2),
    })
    for k in ("produced", "depth", "replies_received", "consumed", "replies_sent"):
        if k in sf:
            r[k] = int(tofloat(sf[k], -1)) if sf[k] != "absent" else None
    return r


def run_steps(facts, base):
    """The step names of a step and its repeats (BASE, BASE_r2, BASE_r3...) that ran."""
    names = [base]
    k = 2
    while step_facts(facts, "%s_r%d" % (base, k)):
        names.append("%s_r%d" % (base, k))
        k += 1
    return names


def median(vals):
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2


def combine_runs(runs, rate_key):
    """One record for repeated runs of a step: the run with the median rate (its CPU, counts
    and checks), with every rate, ratio and latency figure replaced by the median over the
    runs, and the runs themselves under "runs". A single run is returned as it is."""
    good = [r for r in runs if "error" not in r]
    if len(good) < 2:
        return good[0] if good else runs[0]
    by_rate = sorted(good, key=lambda r: r.get(rate_key) or 0)
    out = dict(by_rate[len(by_rate) // 2])
    out["runs"] = [{"ok_per_s": r.get("ok_per_s"), "msgs_per_s": r.get("msgs_per_s"),
                    "ratio": r.get("ratio"), "latency_ms": r.get("latency_ms")} for r in good]
    for k in ("ok_per_s", "msgs_per_s", "ratio"):
        out[k] = median(r.get(k) for r in good)
    out["latency_ms"] = {k: median(r["latency_ms"].get(k) for r in good)
                         for k in good[0]["latency_ms"]}
    out["median_of"] = len(good)
    return out


def runs_note(label, r, rate_key, unit):
    """"label: a / b / c unit, p99 x / y / z ms" for a combined record, else None."""
    if not r or "runs" not in r:
        return None
    rates = " / ".join(fmt_rate(x.get(rate_key), "") for x in r["runs"])
    p99s = " / ".join(fmt_ms(x["latency_ms"].get("p99")) for x in r["runs"])
    return "%s: %s%s, p99 %s" % (label, rates, unit, p99s)


def check_produce(name, r, per_request):
    """201s answered == messages confirmed == queue depth (see bench.sh)."""
    if r is None:
        return None
    if "error" in r:
        return {"step": name, "result": "MISMATCH", "detail": r["error"]}
    client = r["status"].get("201", 0)
    srv = r["server_status"]
    s201, s499 = srv.get("201", 0), srv.get("499", 0)
    produced, depth, conns = r.get("produced"), r.get("depth"), r["connections"]
    problems = []
    if produced is None or depth is None:
        problems.append("missing figures (produced=%s depth=%s)" % (produced, depth))
    else:
        if (s201 + s499) * per_request != produced or produced != depth:
            problems.append("the producer sent %d x 201 and %d answers to callers wrk had "
                            "dropped (499), x%d = %d; it counted %d confirmed; the queue holds %d"
                            % (s201, s499, per_request, (s201 + s499) * per_request, produced,
                               depth))
        if not (client <= s201 <= client + conns):
            problems.append("wrk saw %d x 201, the producer sent %d (more than %d in flight)"
                            % (client, s201, conns))
    detail = ("wrk 201s %d; producer 201s %d + %d dropped by wrk's stop (499)%s = confirmed "
              "%s = queue depth %s" % (client, s201, s499,
                                       "" if per_request == 1 else " x%d" % per_request,
                                       produced, depth))
    return {"step": name, "result": "MISMATCH" if problems else "OK",
            "detail": "; ".join(problems) if problems else detail}


def fmt_rate(v, unit="/s"):
    return "-" if v is None else "{:,.0f}{}".format(v, unit)


def fmt_ms(v):
    if v is None:
        return "-"
    return ("%.2f ms" % v) if v < 10 else ("%.1f ms" % v) if v < 100 else ("%.0f ms" % v)


def fmt_pct(v):
    return "-" if v is None else "%.0f%%" % (v * 100)


def conc_section(facts, clk, base, kind, res, checks, targets, rows, notes):
    """Step 8's steady state (bench.sh step_conc): the runs of BASE (conc: callers starting
    at random moments within one processing time; conc_lock: all in the same millisecond),
    their checks, the median record in res, one target and one table row."""
    runs = [x for x in (wrk_step(facts, st, 1, 200, clk) for st in run_steps(facts, base))
            if x is not None]
    for i, x in enumerate(runs):
        sf = step_facts(facts, base if i == 0 else "%s_r%d" % (base, i + 1))
        x["prefetch"] = int(tofloat(sf.get("prefetch"), 0))
        x["processing_time_s"] = tofloat(sf.get("processing_time_s"), 0)
        label = "8 %s callers%s" % (kind, " run %d" % (i + 1) if len(runs) > 1 else "")
        if "error" in x:
            checks.append({"step": label, "result": "MISMATCH", "detail": x["error"]})
            continue
        warm = int(tofloat(sf.get("warmup.server_status.200"), 0))
        client = x["status"].get("200", 0)
        s200 = x["server_status"].get("200", 0) - warm
        lines = int(tofloat(sf.get("output_lines"), -1))
        written = int(tofloat(sf.get("lines_written"), -2))
        okk = (x.get("depth") == 0 and client <= s200 <= client + x["connections"]
               and lines == written == x.get("consumed"))
        checks.append({"step": label, "result": "OK" if okk else "MISMATCH",
                       "detail": "wrk 200s %d, producer 200s %d (after the warm-up), consumed %s,"
                       " output lines %d, lines written %d, queue depth after %s"
                       % (client, s200, x.get("consumed"), lines, written, x.get("depth"))})
    r = combine_runs(runs, "ok_per_s") if runs else None
    if r is not None:
        res["concurrency_" + kind] = r
        notes.append(runs_note("%s callers" % kind, r, "ok_per_s", " rt/s"))
        if "error" not in r:
            pf, pt = runs[0]["prefetch"], runs[0]["processing_time_s"]
            want_rt = 0.75 * pf / pt if pt else 0
            want_p99 = pt * 1000 + 20
            p99 = r["latency_ms"]["p99"]
            okt = r["ok_per_s"] >= want_rt and p99 <= want_p99
            tgt = ">=%s rt/s (75%% of %d/%g s), p99<=%g ms" % (fmt_rate(want_rt, ""), pf, pt,
                                                               want_p99)
            targets.append({"name": "%d %s closed-loop callers x %g s, one consumer"
                            % (r["connections"], kind, pt), "target": tgt,
                            "value": "%s, p99 %s" % (fmt_rate(r["ok_per_s"], " rt/s"),
                                                     fmt_ms(p99)),
                            "result": "PASS" if okt else "MISS"})
            lat = r["latency_ms"]
            rows.append(("8", "%s: %d callers x %g s, prefetch %d" % (kind, r["connections"], pt,
                                                                    pf),
                         fmt_rate(r["ok_per_s"], " rt/s"), "-", lat["p50"], lat["p99"],
                         lat["p99.9"], errors_of(r, 200), ">=75%%, p99<=%g ms" % want_p99,
                         "PASS" if okt else "MISS"))


def status_section(facts, res, checks, targets, rows, ratio, clk):
    """11. the status stream (issue 17): /produce at 64 connections with STATUS_STREAM off and
    on (target: on >= 85% of off), and how soon a second replica sees a message."""
    both = {}
    for mode in ("off", "on"):
        runs = [x for x in (wrk_step(facts, st, 1, 201, clk)
                            for st in run_steps(facts, "status_" + mode)) if x is not None]
        for i, x in enumerate(runs):
            x["ratio"] = ratio(x.get("msgs_per_s"))
            checks.append(check_produce("11 /produce status %s run %d" % (mode, i + 1), x, 1))
        if runs:
            both[mode] = combine_runs(runs, "ok_per_s")
    if not both:
        return
    res["status_stream"] = dict(both)
    off, on = (both.get("off") or {}).get("ok_per_s"), (both.get("on") or {}).get("ok_per_s")
    share = on / off if (on and off) else None
    for mode in ("off", "on"):
        r = both.get(mode) or {}
        lat = r.get("latency_ms", {})
        last = mode == "on"
        rows.append(("11", "POST /produce c=64, status stream %s" % mode,
                     fmt_rate(r.get("ok_per_s"), " req/s"), fmt_pct(r.get("ratio")),
                     lat.get("p50"), lat.get("p99"), lat.get("p99.9"), errors_of(r, 201) if r else "-",
                     ">=85% of off" if last else "",
                     ("PASS" if share is not None and share >= 0.85 else "MISS") if last else ""))
    if share is not None:
        res["status_stream"]["on_vs_off"] = share
        targets.append({"name": "/produce with the status stream", "target": ">=85% of without",
                        "value": "%.0f%% (%s vs %s req/s)" % (100 * share, fmt_rate(on, ""),
                                                              fmt_rate(off, "")),
                        "result": "PASS" if share >= 0.85 else "MISS"})
    p50, p99 = tofloat(facts.get("status.visibility_p50_ms")), tofloat(facts.get("status.visibility_p99_ms"))
    if p50 is not None:
        res["status_stream"]["visibility_ms"] = {"p50": p50, "p99": p99,
                                                 "line": facts.get("status.visibility")}
        rows.append(("11", "another replica sees a confirmed message (polled every 1 ms)", "-",
                     "-", p50, p99, None, "-", "", ""))


def step_json(facts, key, step, checks):
    """The JSON a step's script wrote (its path is the fact `key`): None when the step did not
    run, or when the file is missing or unreadable (then a MISMATCH check for `step`)."""
    path = facts.get(key)
    if not path:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        checks.append({"step": step, "result": "MISMATCH",
                       "detail": "no figures (see %s)" % path.replace(".json", ".log")})
        return None


def pull_section(facts, res, checks, targets, rows, ratio):
    """10. pull consumption (scripts/bench/pull.py's JSON): the broker's own consume rate, the
    pull rate against it (target >= 50 %), the batch ack's latency (target p99 <= 10 ms)."""
    pr = step_json(facts, "pull.out", "10 pull", checks)
    if pr is None:
        return
    res["pull"] = pr
    bc = (pr.get("broker_consume") or {}).get("rate")
    rate, share = pr.get("pull_rate"), pr.get("pull_vs_consume")
    lat = pr.get("ack_latency_ms") or {}
    w = pr.get("pull") or {}
    errs = (w.get("other") or 0) + (w.get("ack_failures") or 0) + (lat.get("errors") or 0)
    okr = share is not None and share >= 0.5
    okl = lat.get("p99") is not None and lat["p99"] <= 10.0
    targets.append({"name": "pull consumption (100 per GET, batch acks)",
                    "target": ">=50% of the broker's consume rate",
                    "value": "%s msg/s = %.0f%% of %s msg/s" % (rate, 100 * (share or 0), bc),
                    "result": "PASS" if okr else "MISS"})
    targets.append({"name": "batch ack latency (100 acks a request)", "target": "p99<=10 ms",
                    "value": "p50 %s ms, p99 %s ms" % (lat.get("p50"), lat.get("p99")),
                    "result": "PASS" if okl else "MISS"})
    rows.append(("10", "broker's own consume rate (basic.consume, prefetch 1000)",
                 fmt_rate(bc, " msg/s"), fmt_pct(ratio(bc)) if ratio(bc) else "-", None, None,
                 None, "-", "", ""))
    rows.append(("10", "pull: GET max=100 + batch ack, c=%s (%s of consume)"
                 % (pr.get("connections"), fmt_pct(share) if share is not None else "-"),
                 fmt_rate(rate, " msg/s"), fmt_pct(ratio(rate)) if ratio(rate) else "-",
                 w.get("latency_p50_ms"), w.get("latency_p99_ms"), None, "%d" % errs,
                 ">=50% of consume", "PASS" if okr else "MISS"))
    srv = pr.get("ack_latency_server") or {}
    rows.append(("10", "batch ack of 100 (probe, %s samples; server: p50<=%s ms, p99<=%s ms)"
                 % (lat.get("samples"), srv.get("p50_le_ms"), srv.get("p99_le_ms")), "-", "-",
                 lat.get("p50"), lat.get("p99"), None, "%d" % (lat.get("errors") or 0),
                 "p99<=10 ms", "PASS" if okl else "MISS"))
    ok = w.get("other", 1) == 0 and w.get("ack_failures", 1) == 0
    checks.append({"step": "10 pull", "result": "OK" if ok else "MISMATCH",
                   "detail": "%s messages acked in %s batch acks, %s failed, %s other statuses"
                   % (w.get("acks"), w.get("ack_requests"), w.get("ack_failures"), w.get("other"))})


def rt_section(facts, res, checks, targets, rows):
    """12. real-time delivery (scripts/bench/rt.py's JSON): SSE fan-out latency (target p99
    <= 50 ms) and the producer's peak RSS (target <= 64 MB), WebSocket queue consumption beside
    the broker's own consume rate."""
    rt = step_json(facts, "rt.out", "12 real-time", checks)
    if rt is None:
        return
    res["rt"] = rt
    sse = rt.get("sse")
    if sse:
        lat = sse.get("latency_ms") or {}
        n = len(rt.get("sse_runs") or [sse])
        okl = lat.get("p99") is not None and lat["p99"] <= 50.0
        rss = (sse.get("producer_rss_peak_kb") or 0) / 1024.0
        okr = 0 < rss <= 64.0
        targets.append({"name": "SSE fan-out latency", "target": "p99<=50 ms",
                        "value": "p50 %s ms, p99 %s ms" % (lat.get("p50"), lat.get("p99")),
                        "result": "PASS" if okl else "MISS"})
        targets.append({"name": "producer peak RSS with the SSE subscribers", "target": "<=64 MB",
                        "value": "%.1f MB" % rss, "result": "PASS" if okr else "MISS"})
        rows.append(("12", "SSE: %s subscribers x %s msg/s, %s s (median p99 of %d runs)"
                     % (sse.get("subscribers"), sse.get("rate"), sse.get("seconds"), n),
                     fmt_rate((sse.get("received") or 0) / float(sse.get("seconds") or 1),
                              " ev/s"), "-",
                     lat.get("p50"), lat.get("p99"), None, "%d" % (sse.get("lost") or 0),
                     "p99<=50 ms", "PASS" if okl else "MISS"))
        rows.append(("12", "peak RSS producer (VmHWM, with the SSE subscribers)",
                     "%.1f MB" % rss, "-", None, None, None, "-", "<=64 MB",
                     "PASS" if okr else "MISS"))
        checks.append({"step": "12 SSE", "result": "OK" if sse.get("lost") == 0 else "MISMATCH",
                       "detail": "%s events lost over %d runs" % (sse.get("lost"), n)})
    ws = rt.get("ws")
    if ws:
        bc = (rt.get("broker_consume") or {}).get("rate")
        rows.append(("12", "broker's own consume rate (basic.consume, prefetch 1000)",
                     fmt_rate(bc, " msg/s"), "-", None, None, None, "-", "", ""))
        rows.append(("12", "WebSocket queue consumption, %s clients (%s of consume)"
                     % (ws.get("clients"), fmt_pct(ws.get("vs_broker_consume"))),
                     fmt_rate(ws.get("rate"), " msg/s"), "-", None, None, None,
                     "%d" % len(ws.get("errors") or []), "", ""))


def summarize(d):
    facts = load_facts(d)
    clk = tofloat(facts.get("meta.clk_tck"), 100.0)
    res = {"meta": {}}
    for k, v in facts.items():
        if k.startswith("meta."):
            res["meta"][k[5:]] = int(v) if re.fullmatch(r"-?[0-9]+", v) else v
    checks, targets, rows = [], [], []

    # 1. broker limit (and again at the end, as a measure of the drift during the run)
    limit = None
    for step, label in (("limit", "1 broker limit"), ("limit_end", "1 broker limit, at the end"),
                        ("limit_single", "1 broker limit, one node beside the cluster")):
        lf = step_facts(facts, step)
        if not lf:
            continue
        tool = read_tool(lf.get("out", ""))
        key = {"limit": "broker_limit", "limit_end": "broker_limit_at_end",
               "limit_single": "broker_limit_single_node"}[step]
        res[key] = dict(tool or {"error": "no figure (see %s)" % lf.get("out")},
                        window=int(tofloat(lf.get("window"), 0)),
                        cpu_s=cpu_of(lf, clk), wall_s=tofloat(lf.get("wall_s")))
        if tool:
            depth = int(tofloat(lf.get("depth"), -1))
            ok = tool["confirmed"] == tool["published"] and depth == tool["confirmed"]
            checks.append({"step": label, "result": "OK" if ok else "MISMATCH",
                           "detail": "published %d, confirmed %d, queue depth %d"
                           % (tool["published"], tool["confirmed"], depth)})
        else:
            checks.append({"step": label, "result": "MISMATCH",
                           "detail": "the publish tool gave no figure"})
        rate = tool["msgs_per_s"] if tool else None
        nodes = int(tofloat(facts.get("meta.cluster_nodes"), 1))
        if step == "limit":
            limit = rate
            rows.append(("1", "broker limit: confirmed publish (window %s)%s"
                         % (lf.get("window", "?"), ", %d-node cluster" % nodes if nodes > 1 else ""),
                         fmt_rate(rate, " msg/s"), "100%" if rate else "-", None, None, None,
                         "-", "", ""))
        elif step == "limit_single":
            single_row = ("1", "broker limit on one node beside it", fmt_rate(rate, " msg/s"),
                          fmt_pct(rate / limit) if (rate and limit) else "-", None, None, None,
                          "-", "", "")
        else:
            end_row = ("1", "broker limit again at the end (drift)", fmt_rate(rate, " msg/s"),
                       fmt_pct(rate / limit) if (rate and limit) else "-", None, None, None,
                       "-", "", "")

    def ratio(v):
        return None if (v is None or not limit) else v / limit

    # 2. /produce
    res["produce"] = []
    conns = [c for c in facts.get("meta.produce_connections", "").split() if c]
    notes = []
    for c in conns:
        steps = run_steps(facts, "produce_c%s" % c)
        runs = [x for x in (wrk_step(facts, st, 1, 201, clk) for st in steps) if x is not None]
        if not runs:
            continue
        for i, x in enumerate(runs):
            x["ratio"] = ratio(x.get("msgs_per_s"))
            checks.append(check_produce("2 /produce c=%s%s" % (c, " run %d" % (i + 1)
                                                               if len(runs) > 1 else ""), x, 1))
        r = combine_runs(runs, "ok_per_s")
        res["produce"].append(r)
        notes.append(runs_note("/produce c=%s" % c, r, "ok_per_s", " req/s"))
        tgt, result = "", ""
        if c == "64" and "error" not in r:
            p99 = r["latency_ms"]["p99"]
            okk = r["ratio"] is not None and r["ratio"] >= 0.5 and p99 <= 20
            tgt, result = ">=50% and p99<=20 ms", "PASS" if okk else "MISS"
            targets.append({"name": "/produce at 64 connections", "target": tgt,
                            "value": "%s of the limit, p99 %s" % (fmt_pct(r["ratio"]),
                                                                  fmt_ms(p99)),
                            "result": result})
        lat = r.get("latency_ms", {})
        rows.append(("2", "POST /produce, %s connection%s" % (c, "" if c == "1" else "s"),
                     fmt_rate(r.get("ok_per_s"), " req/s"), fmt_pct(r.get("ratio")),
                     lat.get("p50"), lat.get("p99"), lat.get("p99.9"), errors_of(r, 201), tgt,
                     result))

    # 3. /batch-produce
    bsize = int(tofloat(facts.get("batch.batch_size"), 100))
    runs = [x for x in (wrk_step(facts, st, bsize, 201, clk)
                        for st in run_steps(facts, "batch")) if x is not None]
    for i, x in enumerate(runs):
        x["batch_size"] = bsize
        x["ratio"] = ratio(x.get("msgs_per_s"))
        checks.append(check_produce("3 /batch-produce%s" % (" run %d" % (i + 1)
                                                           if len(runs) > 1 else ""), x, bsize))
    r = combine_runs(runs, "msgs_per_s") if runs else None
    if r is not None:
        res["batch"] = r
        notes.append(runs_note("/batch-produce", r, "msgs_per_s", " msg/s"))
        okk = r.get("ratio") is not None and r["ratio"] >= 0.8
        targets.append({"name": "/batch-produce", "target": ">=80% of the limit",
                        "value": fmt_pct(r.get("ratio")), "result": "PASS" if okk else "MISS"})
        lat = r.get("latency_ms", {})
        rows.append(("3", "POST /batch-produce x%d, %d connections" % (bsize, r["connections"]),
                     fmt_rate(r.get("msgs_per_s"), " msg/s"), fmt_pct(r.get("ratio")),
                     lat.get("p50"), lat.get("p99"), lat.get("p99.9"), errors_of(r, 201),
                     ">=80%", "PASS" if okk else "MISS"))

    # 4. request/reply
    runs = [x for x in (wrk_step(facts, st, 1, 200, clk) for st in run_steps(facts, "rr"))
            if x is not None]
    for i, x in enumerate(runs):
        x["ratio"] = ratio(x.get("ok_per_s"))
        label = "4 request/reply%s" % (" run %d" % (i + 1) if len(runs) > 1 else "")
        if "error" in x:
            checks.append({"step": label, "result": "MISMATCH", "detail": x["error"]})
            continue
        client, s200 = x["status"].get("200", 0), x["server_status"].get("200", 0)
        depth, rep = x.get("depth"), x.get("replies_received")
        sent = x.get("replies_sent")
        okk = (depth == 0 and client <= s200 <= client + x["connections"]
               and rep is not None and sent is not None and s200 <= rep <= sent)
        checks.append({"step": label, "result": "OK" if okk else "MISMATCH",
                       "detail": "wrk 200s %d, producer 200s %d, replies received %s, "
                       "consumer replies sent %s, queue depth after %s"
                       % (client, s200, rep, sent, depth)})
    r = combine_runs(runs, "ok_per_s") if runs else None
    if r is not None:
        res["request_reply"] = r
        notes.append(runs_note("request/reply", r, "ok_per_s", " rt/s"))
        if "error" not in r:
            p99 = r["latency_ms"]["p99"]
            okt = r["ok_per_s"] >= 3000 and p99 <= 10
            targets.append({"name": "request/reply at 16 callers",
                            "target": ">=3,000 rt/s and p99<=10 ms",
                            "value": "%s, p99 %s" % (fmt_rate(r["ok_per_s"], " rt/s"),
                                                     fmt_ms(p99)),
                            "result": "PASS" if okt else "MISS"})
            lat = r["latency_ms"]
            rows.append(("4", "request/reply (wait), %d callers" % r["connections"],
                         fmt_rate(r["ok_per_s"], " rt/s"), fmt_pct(r["ratio"]), lat["p50"],
                         lat["p99"], lat["p99.9"], errors_of(r, 200), ">=3,000/s, p99<=10 ms",
                         "PASS" if okt else "MISS"))

    # 5. tail
    tf = step_facts(facts, "tail")
    tail = {"status": tf.get("status", "not run")}
    if tail["status"] == "ran":
        lines = int(tofloat(tf.get("lines"), 0))
        secs = tofloat(tf.get("t_end"), 0) - tofloat(tf.get("t_start"), 0) \
            if tf.get("t_end") else None
        tail.update({"lines": lines, "bytes": int(tofloat(tf.get("bytes"), 0)),
                     "seconds": round(secs, 3) if secs else None,
                     "lines_per_s": round(lines / secs, 1) if secs else None,
                     "output_lines": int(tofloat(tf.get("output_lines"), -1)),
                     "cmp": tf.get("cmp"), "cpu_s": cpu_of(tf, clk)})
        tail["ratio"] = ratio(tail["lines_per_s"])
        okc = tf.get("cmp") == "identical" and secs
        checks.append({"step": "5 file tail", "result": "OK" if okc else "MISMATCH",
                       "detail": "%d lines in, %s lines out, cmp: %s%s"
                       % (lines, tail["output_lines"], tf.get("cmp"),
                          "" if secs else " (timed out: %s)" % tf.get("timeout", "?"))})
        okt = bool(secs) and tail["lines_per_s"] >= 10000
        targets.append({"name": "file tail end to end", "target": ">=10,000 lines/s",
                        "value": fmt_rate(tail["lines_per_s"], " lines/s"),
                        "result": "PASS" if okt else "MISS"})
        rows.append(("5", "file tail end to end, {:,} lines".format(lines),
                     fmt_rate(tail["lines_per_s"], " lines/s"), fmt_pct(tail["ratio"]), None,
                     None, None, "-", ">=10,000/s", "PASS" if okt else "MISS"))
    else:
        why = tf.get("why", "not in BENCH_STEPS")
        tail["why"] = why
        shown = "skipped (%s)" % why if tf else "not run"
        targets.append({"name": "file tail end to end", "target": ">=10,000 lines/s",
                        "value": shown, "result": "n/a"})
        rows.append(("5", "file tail end to end", shown, "-", None, None, None,
                     "-", ">=10,000/s", "n/a"))
    res["tail"] = tail

    # 6. peak RSS (VmHWM, kB) over every instance of each service
    rss = {"producer": {}, "consumer": {}}
    for k, v in facts.items():
        m = re.match(r"^([a-z0-9_]+)\.rss_kb\.(producer|consumer)$", k)
        if m and tofloat(v) is not None:
            rss[m.group(2)][m.group(1)] = int(tofloat(v))
    res["peak_rss"] = {}
    rss_notes = []
    for role, limit_mb in (("producer", 20), ("consumer", 10)):
        per = rss[role]
        peak = max(per.values()) if per else None
        mb = None if peak is None else peak * 1024 / 1e6
        where = max(per, key=per.get) if per else None
        anon = tofloat(facts.get("%s.rss_anon_kb.%s" % (where, role))) if where else None
        files = tofloat(facts.get("%s.rss_file_kb.%s" % (where, role))) if where else None
        res["peak_rss"][role] = {
            "peak_mb": round(mb, 2) if mb else None, "during": where, "per_step_kb": per,
            "at_stop_anon_kb": anon, "at_stop_file_kb": files}
        okk = mb is not None and mb <= limit_mb
        targets.append({"name": "%s peak RSS" % role, "target": "<=%d MB" % limit_mb,
                        "value": "-" if mb is None else "%.1f MB (%s)" % (mb, where),
                        "result": "PASS" if okk else ("n/a" if mb is None else "MISS")})
        if anon is not None and files is not None:
            rss_notes.append("%s %.1f MB private + %.1f MB mapped files (shared libraries)"
                             % (role, anon * 1024 / 1e6, files * 1024 / 1e6))
        rows.append(("6", "peak RSS %s (VmHWM, in %s)" % (role, where or "-"),
                     "-" if mb is None else "%.1f MB" % mb, "-", None, None, None, "-",
                     "<=%d MB" % limit_mb, "PASS" if okk else ("n/a" if mb is None else "MISS")))

    # 7. drain
    res["drain"] = []
    for mode, label in (("file", "with OUTPUT_FILE"), ("plain", "no output file")):
        df = step_facts(facts, "drain_" + mode)
        if not df:
            continue
        n = int(tofloat(df.get("count"), 0))
        secs = (tofloat(df.get("t_end"), 0) - tofloat(df.get("t_start"), 0)
                if df.get("t_end") else None)
        pre = read_tool(df.get("prefill_out", ""))
        dr = {"output_file": mode == "file", "count": n,
              "seconds": round(secs, 3) if secs else None,
              "msgs_per_s": round(n / secs, 1) if secs else None,
              "consumed": int(tofloat(df.get("consumed"), -1)),
              "depth_after": int(tofloat(df.get("depth"), -1)),
              "prefill_msgs_per_s": pre["msgs_per_s"] if pre else None,
              "cpu_s": cpu_of(df, clk)}
        if mode == "file":
            dr["output_lines"] = int(tofloat(df.get("output_lines"), -1))
        dr["ratio"] = ratio(dr["msgs_per_s"])
        res["drain"].append(dr)
        okc = (secs is not None and dr["consumed"] == n and dr["depth_after"] == 0
               and (mode != "file" or dr["output_lines"] == n))
        checks.append({"step": "7 drain %s" % label, "result": "OK" if okc else "MISMATCH",
                       "detail": "pre-filled %d, consumed %d, queue depth after %d%s%s"
                       % (n, dr["consumed"], dr["depth_after"],
                          ", output lines %d" % dr["output_lines"] if mode == "file" else "",
                          "" if secs else " (timed out: %s)" % df.get("timeout", "?"))})
        rows.append(("7", "consumer drains {:,} queued, {}".format(n, label),
                     fmt_rate(dr["msgs_per_s"], " msg/s"), fmt_pct(dr["ratio"]), None, None,
                     None, "-", "", ""))

    # 8. consumer concurrency: the burst (test_consumer_concurrency.py bench) and the steady
    # state (wrk closed loop, step_conc)
    burst = {}
    for n in ("40", "200"):
        rts = tofloat(facts.get("concurrency.callers_%s.round_trips_per_s" % n))
        p99 = tofloat(facts.get("concurrency.callers_%s.p99_s" % n))
        if rts is None:
            continue
        burst[n] = {"round_trips_per_s": rts, "p99_s": p99}
        pt = 1.0 if n == "40" else 0.1
        label = "burst: %s callers x %g s at once, prefetch 50" % (n, pt)
        if n == "40":
            okt = p99 is not None and p99 <= 1.1
            targets.append({"name": "40 waiting callers x 1 s through one consumer",
                            "target": "answered in about 1 s (p99<=1.1 s)",
                            "value": "p99 %.3f s" % p99, "result": "PASS" if okt else "MISS"})
            rows.append(("8", label, fmt_rate(rts, " rt/s"), "-", None, p99 * 1000, None, "0",
                         "p99<=1.1 s", "PASS" if okt else "MISS"))
        else:
            rows.append(("8", label, fmt_rate(rts, " rt/s"), "-", None, p99 * 1000, None, "0",
                         "", ""))
    if burst:
        res["concurrency_burst"] = burst
    for base, kind in (("conc", "independent"), ("conc_lock", "lockstep")):
        conc_section(facts, clk, base, kind, res, checks, targets, rows, notes)

    res["peak_rss"]["notes"] = rss_notes
    res["repeat_notes"] = [n for n in notes if n]
    if "end_row" in locals():
        rows.insert(1, end_row)
    if "single_row" in locals():
        rows.insert(1, single_row)
    fo50, fomax = tofloat(facts.get("failover.p50_s")), tofloat(facts.get("failover.max_s"))
    if fomax is not None:
        res["failover"] = {"kills": int(tofloat(facts.get("failover.kills"), 0)),
                           "p50_s": fo50, "max_s": fomax}
        okf = fomax <= 5.0
        targets.append({"name": "failover: next 201 after kill -9 of the producer's node",
                        "target": "<=5 s (max)", "value": "p50 %.2f s, max %.2f s" % (fo50, fomax),
                        "result": "PASS" if okf else "MISS"})
        rows.append(("9", "failover: kill -9 the producer's node x%d, next 201"
                     % res["failover"]["kills"], "-", "-", fo50 * 1000, fomax * 1000, None, "-",
                     "max<=5 s", "PASS" if okf else "MISS"))
    pull_section(facts, res, checks, targets, rows, ratio)
    rt_section(facts, res, checks, targets, rows)
    status_section(facts, res, checks, targets, rows, ratio, clk)
    res["targets"] = targets
    res["checks"] = checks
    res["cpu_by_step"] = cpu_table(res)
    ncpu = tofloat(res["meta"].get("nproc"), 2) or 2
    timed = [r for r in res["cpu_by_step"] if "machine" in r["cpu_s"]]
    avail = sum(ncpu * (r["wall_s"] or 0) for r in timed)
    others = sum(r["cpu_s"]["machine"] - sum(v for k, v in r["cpu_s"].items() if k in
                                             ("producer", "consumer", "broker", "loadgen"))
                 for r in timed)
    res["meta"]["others_cpu_share"] = round(max(others, 0) / avail, 3) if avail else None

    with open(os.path.join(d, "bench-results.json"), "w") as f:
        json.dump(res, f, indent=2, sort_keys=False)
        f.write("\n")
    text = render(res, rows)
    with open(os.path.join(d, "bench-table.txt"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    return 1 if any(c["result"] != "OK" for c in checks) else 0


def errors_of(r, ok_status):
    if "status" not in r:
        return "?"
    bad = sum(v for k, v in r["status"].items() if k != str(ok_status))
    sock = sum(r.get("socket_errors", {}).values())
    return "%d" % (bad + sock)


def cpu_table(res):
    out = []

    def add(name, r, msgs):
        if not r or "cpu_s" not in r:
            return
        wall = r.get("wall_s") or r.get("seconds")
        row = {"step": name, "wall_s": wall, "cpu_s": r["cpu_s"]}
        if msgs:
            row["cpu_us_per_msg"] = {k: round(v * 1e6 / msgs, 1) for k, v in r["cpu_s"].items()}
        out.append(row)

    bl = res.get("broker_limit", {})
    add("1 broker limit", bl, bl.get("confirmed"))
    bl = res.get("broker_limit_at_end", {})
    add("1 limit at the end", bl, bl.get("confirmed"))
    for r in res.get("produce", []):
        if "error" not in r:
            add("2 /produce c=%d" % r["connections"], r, r["server_status"].get("201", 0)
                + r["server_status"].get("499", 0))
    b = res.get("batch")
    if b and "error" not in b:
        add("3 /batch-produce", b, b.get("produced"))
    rr = res.get("request_reply")
    if rr and "error" not in rr:
        add("4 request/reply", rr, rr["server_status"].get("200", 0))
    for kind in ("independent", "lockstep"):
        cs = res.get("concurrency_" + kind)
        if cs and "error" not in cs:
            add("8 %s callers" % kind, cs, cs["status"].get("200", 0))
    t = res.get("tail", {})
    if t.get("status") == "ran":
        add("5 file tail", dict(t, wall_s=t.get("seconds")), t.get("lines"))
    pr = res.get("pull")
    if pr and "cpu_s" in pr:
        add("10 pull", pr, pr.get("acked_total"))
    for dr in res.get("drain", []):
        add("7 drain %s" % ("file" if dr["output_file"] else "plain"),
            dict(dr, wall_s=dr.get("seconds")), dr.get("count"))
    return out


def render(res, rows):
    m = res["meta"]
    lines = []
    lines.append("relayq bench  %s  %s  %s cores  %s build %s  %s s per step  load avg %s -> %s"
                 % (m.get("date", "?"), m.get("host", "?"), m.get("nproc", "?"),
                    m.get("build_type", "?"), m.get("git", "?"), m.get("bench_seconds", "?"),
                    m.get("loadavg_start", "?"), m.get("loadavg_end", "?")))
    if m.get("others_cpu_share") is not None:
        share = m["others_cpu_share"]
        lines.append("other work on the host took %.0f%% of the CPU during the steps%s"
                     % (share * 100, " (a noisy run: figures are low)" if share > 0.1 else
                        " (a quiet run)"))
    if m.get("queue_type"):
        lines.append("%s; every queue is a %s queue (QUEUE_TYPE), the broker limit's too"
                     % (m.get("broker", "RabbitMQ"), m["queue_type"]))
    if m.get("services_env", "").strip():
        lines.append("service settings: %s" % m["services_env"].strip())
    lines.append("")
    hdr = ("#", "measure", "rate", "vs limit", "p50", "p99", "p99.9", "errors", "target",
           "result")
    table = [hdr] + [tuple(fmt_cell(c, i) for i, c in enumerate(r)) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(hdr))]
    right = {2, 3, 4, 5, 6, 7}
    for r in table:
        cells = [(c.rjust(widths[i]) if i in right else c.ljust(widths[i]))
                 for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    lines.append("vs limit: the rate as a share of the broker's own confirmed-publish rate "
                 "(row 1, same run). errors: non-2xx answers plus socket errors seen by wrk.")
    if res.get("repeat_notes"):
        lines.append("steps with a target ran several times; the table shows the median of "
                     "each figure, the runs were:")
        for n in res["repeat_notes"]:
            lines.append("  " + n)
    if res.get("peak_rss", {}).get("notes"):
        lines.append("peak RSS, made of (at the end of that step): %s."
                     % "; ".join(res["peak_rss"]["notes"]))
    lines.append("")
    lines.append("checks (what was measured reached the queue):")
    for c in res["checks"]:
        lines.append("  %-8s %-28s %s" % (c["result"], c["step"], c["detail"]))
    if res.get("cpu_by_step"):
        lines.append("")
        lines.append("CPU seconds by process during each step (%s cores = %s s of CPU per wall second):"
                 % (m.get("nproc", "?"), m.get("nproc", "?")))
        roles = ["producer", "consumer", "broker", "loadgen"]
        hdr2 = (["step", "wall s"] + roles + ["others", "steal"]
                + ["producer us/msg", "consumer us/msg", "broker us/msg"])
        t2 = [hdr2]
        for row in res["cpu_by_step"]:
            c = row["cpu_s"]
            per = row.get("cpu_us_per_msg", {})
            others = None
            if "machine" in c:
                others = c["machine"] - sum(c.get(r, 0) for r in roles)
            t2.append([row["step"], "%.1f" % (row["wall_s"] or 0)]
                      + [("%.1f" % c[r]) if r in c else "-" for r in roles]
                      + ["-" if others is None else "%.1f" % max(others, 0.0),
                         ("%.1f" % c["steal"]) if "steal" in c else "-"]
                      + [("%.0f" % per[r]) if r in per else "-"
                         for r in ("producer", "consumer", "broker")])
        w2 = [max(len(r[i]) for r in t2) for i in range(len(hdr2))]
        for r in t2:
            lines.append("  " + "  ".join(c.ljust(w2[0]) if i == 0 else c.rjust(w2[i])
                                          for i, c in enumerate(r)))
        lines.append("  loadgen: wrk, or rq_amqp_tool for the broker limit. others: CPU the machine spent "
                     "outside these processes (other work on the host: noise). steal: time the "
                     "hypervisor withheld.")
    mism = [c for c in res["checks"] if c["result"] != "OK"]
    lines.append("")
    lines.append("targets: %d PASS, %d MISS, %d n/a; checks: %s"
                 % (sum(t["result"] == "PASS" for t in res["targets"]),
                    sum(t["result"] == "MISS" for t in res["targets"]),
                    sum(t["result"] == "n/a" for t in res["targets"]),
                    "all OK" if not mism else "%d MISMATCH" % len(mism)))
    return "\n".join(lines) + "\n"


def fmt_cell(c, i):
    if i in (4, 5, 6):
        return fmt_ms(c)
    return "" if c is None else str(c)


# ---------------------------------------------------------------------------- main


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "freeport":
        print(free_port())
        return 0
    if cmd == "portfree":
        return 0 if all(port_free(int(p)) for p in args) else 1
    if cmd == "settle":
        cmd_settle(args)
        return 0
    if cmd == "wait-metric" and len(args) == 4:
        return cmd_wait_metric(*args)
    if cmd == "wait-size" and len(args) == 3:
        return cmd_wait_size(*args)
    if cmd == "gen-lines" and len(args) == 2:
        cmd_gen_lines(*args)
        return 0
    if cmd == "tool-rate" and len(args) == 1:
        r = read_tool(args[0])
        print("%.0f" % r["msgs_per_s"] if r else "no figure")
        return 0
    if cmd == "summarize" and len(args) == 1:
        return summarize(args[0])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
