#!/usr/bin/python3
"""check-function-length.py - no C function over MAX lines (issue 12: long loops as named
phases). Counts the body lines of every function defined at column 0 (`{` and `}` alone on
their lines, the committed .clang-format's style) in common/, producer/, consumer/ and
tools/. Prints each offender; exit 1 when there is one. Usage: [--max N]"""
import argparse
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def long_functions(path, limit):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        if lines[i] == "{" and i > 0:
            j = i
            while j < len(lines) and lines[j] != "}":
                j += 1
            k = i - 1
            while k > 0 and "(" not in lines[k]:
                k -= 1
            m = re.search(r"(\w+)\s*\(", lines[k])
            if j - i - 1 > limit:
                yield i + 1, m.group(1) if m else "?", j - i - 1
            i = j
        i += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=int, default=80)
    args = ap.parse_args()
    bad = 0
    for d in ("common", "producer", "consumer", "tools"):
        for path in sorted(glob.glob(os.path.join(ROOT, d, "**", "*.c"), recursive=True)):
            for line, name, n in long_functions(path, args.max):
                print("%s:%d: %s is %d lines (max %d)" % (os.path.relpath(path, ROOT), line,
                                                          name, n, args.max))
                bad += 1
    print("%d function(s) over %d lines" % (bad, args.max))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
