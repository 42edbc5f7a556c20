#!/usr/bin/python3
"""The pull bench's rate (scripts/bench/pull.py slope()) measures the pull phase, not the
idle tail after the queue drained (issue 16: the bench reported 14,445 msg/s for a run whose
acked counter rose at about 74,000 msg/s until the queue was empty at 2.8 s of 10).

Each case feeds slope() the producer_lease_acked_total samples of a run, (seconds, value)
every 0.25 s, and checks the rate against the one the samples show. Standard library only.
Prints PASS/FAIL per case and `N passed, M failed`; exit 1 on a failure."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "bench"))
import pull  # noqa: E402

# A real run (make bench step 10, 16 connections, 200,000 messages, 10 s): drained at 2.79 s.
DRAINED = [(0.01, 0), (0.26, 15777), (0.51, 35860), (0.76, 56830), (1.02, 72761),
           (1.28, 91546), (1.53, 110583), (1.78, 130213), (2.03, 147046), (2.29, 165910),
           (2.54, 184306), (2.79, 200000)] + [(3.04 + 0.25 * i, 200000) for i in range(28)]


def steady(rate, secs, start=0.0):
    return [(start + 0.25 * i, rate * 0.25 * i) for i in range(int(secs * 4) + 1)]


def stalled_then_drained():
    """Steady 40k/s for 3 s, a 0.5 s stall (a GC, a broker pause), 40k/s again to a drain at
    6 s, idle to 10 s: the stall is part of the run, the idle tail is not."""
    out, v = [], 0.0
    for i in range(41):
        t = 0.25 * i
        out.append((t, v))
        if t < 3.0 or 3.5 <= t < 6.0:
            v += 10000
    return out


CASES = [
    ("drained at 2.8 s of 10: the rate until the drain", DRAINED, 67000, 76000),
    ("steady to the end (never drained)", steady(50000, 10), 49000, 51000),
    ("a stall inside the run counts, the idle tail does not", stalled_then_drained(), 34000, 37500),
]


def main():
    failed = 0
    for name, samples, lo, hi in CASES:
        rate, secs = pull.slope([(float(t), float(v)) for t, v in samples], 0.0)
        ok = rate is not None and lo <= rate <= hi
        failed += not ok
        print("%s  %s: %s msg/s over %.2f s (want %d..%d)" %
              ("PASS" if ok else "FAIL", name, None if rate is None else round(rate), secs, lo, hi))
    rate, _ = pull.slope([(0.25 * i, 1000.0) for i in range(40)], 0.0)
    ok = rate is None
    failed += not ok
    print("%s  nothing acked after the warm-up: no rate (%s)" % ("PASS" if ok else "FAIL", rate))
    print("%d passed, %d failed" % (len(CASES) + 1 - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
