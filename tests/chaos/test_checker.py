#!/usr/bin/python3
"""Planted-bug tests of tests/chaos/checker.py: a clean history passes; a missing 201, a
duplicated message, a published 4xx, tailed bytes out of order, a late answer, an unplanned
death, a bad heal and a wrong DLQ each make it FAIL the right invariant.

The history has the shape run.py records (kind, t0, t1, status, ids, deadline, body).
Run: /usr/bin/python3 tests/chaos/test_checker.py  (stdlib unittest, well under a second).
With CHAOS_DUMP=DIR (a folder written by `run.py --dump DIR`), the recorded history of a real
campaign is checked too: clean, then with one 201 message removed, one duplicated, and one
4xx message added to the output.
"""
import copy
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checker  # noqa: E402


def rec(kind, status, ids, t0=0.0, dt=0.1, deadline=3.0, body=None):
    return {"kind": kind, "t0": t0, "t1": None if status == 0 else t0 + dt, "status": status,
            "ids": ids, "deadline": deadline, "body": body}


TAIL = [b"L1 plain\n", b"\n", b"L3 NUL \x00 and CR\r\n", b"L4 \xff\xfe\n", b"\r\n"]


def clean():
    hist = [
        rec("single", 201, ["a1"]),
        rec("batch", 201, ["b1", "b2", "b3"]),
        rec("wait1", 200, ["w1"], deadline=5.0),
        rec("waitb", 504, ["w2", "w3"], deadline=5.0,
            body={"status": "queued", "message_ids": ["w2", "w3"]}),
        rec("single", 503, ["u1"], body={"message_id": "u1", "stored": "unknown"}),
        rec("bad", 400, ["x1"]),
        rec("bad", 413, ["x2", "x3"]),
        rec("single", 0, ["k1"], t0=10.0),  # no answer: the producer was killed meanwhile
    ]
    out = [b"a1\n", TAIL[0], b"b1\n", b"b2\n", TAIL[1], b"b3\n", b"w1\n", TAIL[2], b"w2\n",
           b"w3\n", TAIL[3], b"k1\n", TAIL[4]]
    kw = dict(dlq=[{"message_id": "h-0", "reason": "undecodable: invalid JSON"},
                   {"message_id": "h-1", "reason": "undecodable: x-offset"}],
              hostile=["h-0", "h-1"], deaths=[], sanitizer=[],
              heal={"ready_s": {"producer": 0.3, "consumer0": 0.1}, "statuses": [201] * 5},
              excused=[(9.5, 11.0)])
    return hist, out, b"".join(TAIL), kw


def verdict(results):
    """{invariant number: ok} (ok None: a warning)."""
    return {r[0].split()[0]: r[1] for r in results}


class CheckerTest(unittest.TestCase):
    def run_check(self, hist, out, tail, kw):
        return checker.check(hist, b"".join(out), tail, **kw)

    def assertFails(self, results, inv, must_name=None):
        v = verdict(results)
        self.assertIs(v[inv], False, f"invariant {inv} should fail: {results}")
        first = checker.first_violation(results)
        self.assertIsNotNone(first)
        if must_name is not None:
            self.assertIn(must_name, first[3], f"the ids of the violation: {first}")
        others = [k for k, ok in v.items() if ok is False and k != inv]
        self.assertEqual(others, [], f"only invariant {inv} should fail: {results}")

    def test_clean_passes(self):
        res = self.run_check(*clean())
        self.assertIsNone(checker.first_violation(res), res)
        self.assertEqual(verdict(res)["1b"], True)

    def test_missing_201_fails_1(self):
        hist, out, tail, kw = clean()
        out.remove(b"b2\n")
        self.assertFails(self.run_check(hist, out, tail, kw), "1", "b2")

    def test_missing_200_wait_fails_1(self):
        hist, out, tail, kw = clean()
        out.remove(b"w1\n")
        self.assertFails(self.run_check(hist, out, tail, kw), "1", "w1")

    def test_duplicated_201_fails_1(self):
        hist, out, tail, kw = clean()
        out.append(b"a1\n")
        self.assertFails(self.run_check(hist, out, tail, kw), "1", "a1")

    def test_duplicated_unanswered_fails_1(self):
        hist, out, tail, kw = clean()
        out.insert(3, b"k1\n")  # at most once holds for every message, answered or not
        self.assertFails(self.run_check(hist, out, tail, kw), "1", "k1")

    def test_published_4xx_fails_2(self):
        hist, out, tail, kw = clean()
        out.insert(2, b"x3\n")
        self.assertFails(self.run_check(hist, out, tail, kw), "2", "x3")

    def test_tail_reordered_fails_1(self):
        hist, out, tail, kw = clean()
        i, j = out.index(TAIL[2]), out.index(TAIL[3])
        out[i], out[j] = out[j], out[i]
        self.assertFails(self.run_check(hist, out, tail, kw), "1")

    def test_tail_line_lost_fails_1(self):
        hist, out, tail, kw = clean()
        out.remove(TAIL[1])
        self.assertFails(self.run_check(hist, out, tail, kw), "1")

    def test_tail_line_twice_fails_1(self):
        hist, out, tail, kw = clean()
        out.append(TAIL[4])
        self.assertFails(self.run_check(hist, out, tail, kw), "1")

    def test_half_line_fails_1(self):
        hist, out, tail, kw = clean()
        out.append(b"half")
        self.assertFails(self.run_check(hist, out, tail, kw), "1")

    def test_504_lost_is_only_a_warning(self):
        hist, out, tail, kw = clean()
        out.remove(b"w3\n")
        res = self.run_check(hist, out, tail, kw)
        self.assertIsNone(checker.first_violation(res), res)
        self.assertIsNone(verdict(res)["1b"])

    def test_late_answer_fails_3(self):
        hist, out, tail, kw = clean()
        hist[0]["t1"] = hist[0]["t0"] + 4.5  # deadline 3 s + 1 s slack
        self.assertFails(self.run_check(hist, out, tail, kw), "3", "a1")

    def test_no_answer_outside_a_kill_fails_3(self):
        hist, out, tail, kw = clean()
        kw["excused"] = []
        self.assertFails(self.run_check(hist, out, tail, kw), "3", "k1")

    def test_death_fails_4(self):
        hist, out, tail, kw = clean()
        kw["deaths"] = ["consumer0 exited with -6, unplanned"]
        self.assertFails(self.run_check(hist, out, tail, kw), "4")

    def test_sanitizer_report_fails_4(self):
        hist, out, tail, kw = clean()
        kw["sanitizer"] = ["asan.123: ERROR: AddressSanitizer: heap-use-after-free"]
        self.assertFails(self.run_check(hist, out, tail, kw), "4")

    def test_slow_heal_fails_5(self):
        hist, out, tail, kw = clean()
        kw["heal"] = {"ready_s": {"producer": 12.0, "consumer0": 0.1}, "statuses": [201]}
        self.assertFails(self.run_check(hist, out, tail, kw), "5")

    def test_heal_503_fails_5(self):
        hist, out, tail, kw = clean()
        kw["heal"] = {"ready_s": {"producer": 0.1, "consumer0": 0.1}, "statuses": [201, 503]}
        self.assertFails(self.run_check(hist, out, tail, kw), "5")

    def test_dlq_missing_hostile_fails_6(self):
        hist, out, tail, kw = clean()
        kw["dlq"] = kw["dlq"][:1]
        self.assertFails(self.run_check(hist, out, tail, kw), "6", "h-1")

    def test_dlq_extra_message_fails_6(self):
        hist, out, tail, kw = clean()
        kw["dlq"].append({"message_id": "b1", "reason": "delivery limit"})
        self.assertFails(self.run_check(hist, out, tail, kw), "6", "b1")

    def test_dlq_without_reason_fails_6(self):
        hist, out, tail, kw = clean()
        kw["dlq"][0]["reason"] = ""
        self.assertFails(self.run_check(hist, out, tail, kw), "6", "h-0")


@unittest.skipUnless(os.environ.get("CHAOS_DUMP"), "CHAOS_DUMP not set")
class RecordedTest(unittest.TestCase):
    """A real campaign's history (run.py --dump DIR), clean and with planted bugs."""

    def setUp(self):
        d = os.environ["CHAOS_DUMP"]
        with open(os.path.join(d, "history.json")) as f:
            self.dump = json.load(f)
        with open(os.path.join(d, "output.bin"), "rb") as f:
            self.output = f.read()
        with open(os.path.join(d, "expected_tail.bin"), "rb") as f:
            self.tail = f.read()

    def check(self, output):
        kw = copy.deepcopy(self.dump["kwargs"])
        kw["excused"] = [tuple(x) for x in kw["excused"]]
        return checker.check(self.dump["history"], output, self.tail, **kw)

    def test_recorded(self):
        self.assertIsNone(checker.first_violation(self.check(self.output)))
        hist = self.dump["history"]
        ok = [i for r in hist if r["status"] == 201 for i in r["ids"]]
        bad = [i for r in hist if 400 <= r["status"] < 500 for i in r["ids"]]
        victim = ok[len(ok) // 2].encode() + b"\n"
        k = self.output.index(b"\n" + victim) + 1
        missing = self.output[:k] + self.output[k + len(victim):]
        self.assertEqual(verdict(self.check(missing))["1"], False)
        self.assertEqual(verdict(self.check(self.output + victim))["1"], False)
        if bad:
            leaked = self.output + bad[0].encode() + b"\n"
            self.assertEqual(verdict(self.check(leaked))["2"], False)


if __name__ == "__main__":
    unittest.main(verbosity=2)
