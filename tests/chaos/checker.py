#!/usr/bin/python3
"""The invariant checker of the chaos campaign (issue 13): a history against what landed.

Pure functions over plain data, so tests/chaos/test_checker.py can feed it planted bugs.

History: a list of request records (dicts):
  kind      "single" | "batch" | "wait1" | "waitb" | "bad" | "heal"
  t0, t1    start and end (monotonic seconds); t1 None when no answer came
  status    HTTP status, 0 when the connection failed (no answer)
  ids       the message ids sent (each message's payload is its id: its output line)
  deadline  seconds within which the producer promised an answer
  body      the parsed answer (dict or None)

What the services promise (README "API", "File tailing and the exactly-once output file"):
  201/200          stored: the id is in the output exactly once
  400/413/415      nothing published: the id is never in the output
  503, 504, no answer: not a promise of storage: the id is in the output at most once
                   (504 and a batch's 503 "stored" list do say "stored": reported as the
                   extra check 1b, a warning, not as a violation of invariant 1)
  tailed bytes     every byte written to INPUT_FILE in the output once, in order
                   (with several consumers: once each, order per line not checked)

Output: the bytes of every output file in rotation order (oldest first), concatenated.
A line that is a known API id is an API message; every other line is a tailed line.
"""
import collections


def _answer_ids(body, key):
    if isinstance(body, dict) and isinstance(body.get(key), list):
        return [x for x in body[key] if isinstance(x, str)]
    return []


def check(history, output, tail_expected, *, dlq=None, hostile=None, deaths=None,
          sanitizer=None, heal=None, excused=None, consumers=1, slack=1.0):
    """Returns a list of (name, ok, detail, ids) in invariant order; ok None means a warning
    only. `dlq` is a list of {"message_id", "reason"}; `hostile` the ids published straight
    to the queue that must be dead-lettered; `deaths` the unexpected process exits;
    `sanitizer` the sanitizer reports found; `heal` {"ready_s": {name: seconds or None},
    "statuses": [..]}; `excused` a list of (t_from, t_to) windows in which the producer was
    down (a request without an answer that overlaps one is not a deadline violation)."""
    results = []
    lines = output.split(b"\n")
    trailing = lines.pop()  # b"" when the output ends with a newline
    known = {}
    for r in history:
        for i in r["ids"]:
            known[i.encode()] = r
    counts = collections.Counter()
    tail_lines = []
    for ln in lines:
        if ln in known:
            counts[ln.decode()] += 1
        else:
            tail_lines.append(ln)

    # 1. stored messages exactly once, nothing twice; tailed bytes once, in order
    missing, dups, bad = [], [], []
    for r in history:
        if r["status"] in (200, 201):
            missing += [i for i in r["ids"] if counts[i] == 0]
    dups = sorted(i for i, n in counts.items() if n > 1)
    tail_out = b"".join(ln + b"\n" for ln in tail_lines) + trailing
    if consumers == 1:
        tail_ok = tail_out == tail_expected
    else:
        exp = tail_expected.split(b"\n")
        got = tail_out.split(b"\n")
        tail_ok = collections.Counter(exp) == collections.Counter(got)
    detail = []
    if missing:
        detail.append(f"{len(missing)} answered 201/200 missing")
    if dups:
        detail.append(f"{len(dups)} written more than once")
    if trailing:
        detail.append(f"output ends in a partial line {trailing[:60]!r}")
    if not tail_ok:
        n = min(len(tail_out), len(tail_expected))
        at = next((k for k in range(n) if tail_out[k] != tail_expected[k]), n)
        detail.append(f"tailed bytes differ at byte {at} (expected {len(tail_expected)} bytes, "
                      f"got {len(tail_out)}; expected {tail_expected[at:at + 40]!r}, got "
                      f"{tail_out[at:at + 40]!r})")
        bad.append(f"tail@{at}")
    results.append(("1 every 201/200 in the output exactly once; tailed bytes once, in order",
                    not detail, "; ".join(detail), missing[:20] + dups[:20] + bad))

    # 1b. (README) 504 and a batch 503's "stored" ids are stored: a warning when not
    promised = []
    for r in history:
        if r["status"] == 504:
            promised += r["ids"]
        elif r["status"] == 503:
            promised += _answer_ids(r.get("body"), "stored")
            b = r.get("body")
            if isinstance(b, dict) and b.get("stored") is True and isinstance(
                    b.get("message_id"), str):
                promised.append(b["message_id"])
    lost = [i for i in promised if counts[i] == 0]
    results.append(("1b (README) ids answered 504 or 503 \"stored\" are in the output",
                    None if lost else True, f"{len(lost)} of {len(promised)} not in the output"
                    if lost else f"{len(promised)} ids", lost[:20]))

    # 2. nothing of a 4xx request was published
    leaked = [i for r in history if 400 <= r["status"] < 500 for i in r["ids"] if counts[i]]
    results.append(("2 no message that got a 4xx was published", not leaked,
                    f"{len(leaked)} in the output" if leaked else "", leaked[:20]))

    # 3. every request answered within its deadline + slack
    late = []
    for r in history:
        if r["status"] == 0 or r["t1"] is None:
            t1 = r["t1"] if r["t1"] is not None else float("inf")
            if not any(a <= t1 and r["t0"] <= b for a, b in (excused or [])):
                late.append(r)
        elif r["t1"] - r["t0"] > r["deadline"] + slack:
            late.append(r)
    results.append(("3 every request answered within its deadline + 1 s", not late,
                    "; ".join(f"{r['kind']} status {r['status']} after "
                              f"{(r['t1'] or 0) - r['t0']:.2f} s (deadline {r['deadline']} s)"
                              for r in late[:5]),
                    [i for r in late[:5] for i in r["ids"][:3]]))

    # 4. no unexpected death, no sanitizer report
    d = list(deaths or []) + list(sanitizer or [])
    results.append(("4 no process died unless killed, no sanitizer report", not d,
                    "; ".join(str(x)[:300] for x in d[:5]), []))

    # 5. after healing: ready within 10 s, new requests get 201
    if heal is not None:
        slow = {k: v for k, v in heal["ready_s"].items() if v is None or v > 10}
        non201 = [s for s in heal["statuses"] if s != 201]
        results.append(("5 after healing both services ready within 10 s and new requests get "
                        "201", not slow and not non201 and heal["statuses"] != [],
                        f"ready {heal['ready_s']}, statuses {collections.Counter(heal['statuses'])}",
                        []))

    # 6. the DLQ holds exactly the hostile messages, each with a reason
    if dlq is not None:
        got = collections.Counter(m.get("message_id") for m in dlq)
        want = set(hostile or [])
        extra = sorted(str(k) for k in got if k not in want)
        absent = sorted(k for k in want if k not in got)
        noreason = sorted(str(m.get("message_id")) for m in dlq if not m.get("reason"))
        detail = []
        if extra:
            detail.append(f"{len(extra)} not hostile")
        if absent:
            detail.append(f"{len(absent)} hostile missing")
        if noreason:
            detail.append(f"{len(noreason)} without a reason")
        results.append(("6 the DLQ holds exactly the hostile messages, each with a reason",
                        not detail, "; ".join(detail), (extra + absent + noreason)[:20]))
    return results


def first_violation(results):
    for r in results:
        if r[1] is False:
            return r
    return None


def report(results, out=print):
    for name, ok, detail, ids in results:
        tag = "PASS" if ok is True else ("WARN" if ok is None else "FAIL")
        extra = f": {detail}" if detail and ok is not True else (f" ({detail})" if detail else "")
        out(f"{tag}  {name}{extra}" + (f" ids={ids[:10]}" if ids and ok is not True else ""))
