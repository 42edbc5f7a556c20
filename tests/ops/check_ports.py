#!/usr/bin/python3
"""Checks how the test and bench scripts pick TCP ports for the services and brokers they start.

A port the kernel hands out (bind to port 0, read it, close the socket) lies in the ephemeral
range, where any outgoing connection of a test running alongside can take it before the
service binds it: CI saw "Address already in use" from a consumer given such a port (50747)
and from a broker (44947). So:

1. scripts/rq_ports.py's free_port() returns ports in [10000, ephemeral low - 1000): below the
   range, and clear of the 1000 ports under it where scripts/broker.sh puts Erlang
   distribution. Checked over many calls, and through its command line.
2. No script under tests/ or scripts/ binds to port 0 and lets the socket go (probe and
   release); a socket bound to port 0 that keeps listening (a test's own server) is fine and
   says so on the line with "# listens". Nor does one pick ports from a range of its own
   (random.randint(20000, 45000) reached into the ephemeral range); scripts/broker.sh's
   distribution ports are the one exception.

Exit 1 on any failure. Standard library only.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "rq_ports.py")
BIND0 = re.compile(r"""bind\(\(\s*(?:["'][^"']*["']|\w+)\s*,\s*0\s*\)\)""")
RANGE = re.compile(r"rand(?:int|range)\(\s*[1-6]\d{4}\s*,")  # a hand-rolled port range

failed = 0


def check(cond, what):
    global failed
    if not cond:
        failed += 1
        print("FAIL:", what)
    return cond


def check_helper():
    if not check(os.path.exists(SCRIPT), "scripts/rq_ports.py exists"):
        return
    # a folder of reservations of its own: the many picks below take no port from the tests
    os.environ["RQ_PORTS_DIR"] = tempfile.mkdtemp(prefix="rq-ports-check-")
    sys.path.insert(0, os.path.dirname(SCRIPT))
    import rq_ports

    # read here, not through the helper: the oracle must not share its mistakes
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        top = int(f.read().split()[0]) - 1000
    ports = [rq_ports.free_port() for _ in range(1000)]
    bad = [p for p in ports if not 10000 <= p < top]
    check(not bad, "free_port() in [10000, %d): %s" % (top, bad[:5]))
    # a port is probed free and released: the caller binds it later. Two picks of one test
    # (a broker's and a producer's, CI: both 21264) or of two tests running side by side must
    # not be the same port, or the second service finds it taken.
    check(len(set(ports)) == len(ports), "1000 picks in one process, all distinct (%d)"
          % len(set(ports)))
    procs = [subprocess.Popen([sys.executable, SCRIPT, "200"], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    other = [int(x) for pr in procs for x in pr.communicate(timeout=60)[0].split()]
    every = ports + other
    check(len(other) == 800 and len(set(every)) == len(every),
          "4 processes side by side, 200 picks each, none taken twice (%d distinct of %d)"
          % (len(set(every)), len(every)))
    sp = rq_ports.free_port(span=5)
    check(not set(range(sp, sp + 5)) & set(every), "a span of 5 overlaps no port handed out")
    out = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=30)
    line = out.stdout.strip()
    check(out.returncode == 0 and line.isdigit() and 10000 <= int(line) < top,
          "python3 scripts/rq_ports.py prints one such port (rc %d, %r)" % (out.returncode, line))
    shutil.rmtree(os.environ.pop("RQ_PORTS_DIR"), ignore_errors=True)


def check_sources():
    for base in ("tests", "scripts"):
        for d, dirs, files in os.walk(os.path.join(ROOT, base)):
            dirs[:] = [x for x in dirs if x not in ("__pycache__", "node_modules")]
            for name in files:
                if not name.endswith((".py", ".sh")):
                    continue
                path = os.path.join(d, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for n, line in enumerate(f, 1):
                        where = "%s:%d" % (os.path.relpath(path, ROOT), n)
                        if BIND0.search(line) and "# listens" not in line:
                            check(False, "%s binds port 0 and releases it (use scripts/rq_ports.py): %s"
                                  % (where, line.strip()))
                        if RANGE.search(line) and not path.endswith(("rq_ports.py", "broker.sh", "check_ports.py")):
                            check(False, "%s picks a port range of its own (use scripts/rq_ports.py): %s"
                                  % (where, line.strip()))


def main():
    check_helper()
    check_sources()
    print("check_ports: %s" % ("OK" if not failed else "%d failure(s)" % failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
