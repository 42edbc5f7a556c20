#!/usr/bin/python3
"""Free TCP ports on 127.0.0.1 for the services and brokers that tests and benches start.

A port the kernel hands out (bind to 0 and close) lies in the ephemeral range, where another
test's outgoing connection can take it before the service binds it. free_port() picks one at
random in [10000, ephemeral low - 1000) instead: no client socket is ever given such a port, and
the 1000 ports just under the range stay for the Erlang distribution ports scripts/broker.sh
chooses.

A port is probed free and released: its user binds it later. So that no two callers get the
same one meanwhile (a broker's and a producer's port of one test, CI: both 21264; or two tests
running side by side), a port handed out is reserved: in this process, and for RESERVE_S
seconds for every process on the machine (an empty file per port in RESERVE_DIR, created
O_EXCL; an older one is taken over; RQ_PORTS_DIR names another folder).

Import it (sys.path holding scripts/) or run it: `python3 scripts/rq_ports.py [COUNT [SPAN]]`
prints COUNT distinct ports (default 1) on one line; the last starts SPAN free ports.
"""

import os
import secrets
import socket
import sys
import tempfile
import time

FIRST = 10000
RESERVE_DIR = os.environ.get("RQ_PORTS_DIR") or os.path.join(tempfile.gettempdir(), "relayq-ports")
RESERVE_S = 1800  # longer than a test holds a port it may rebind (a broker restart)
_given = set()


def ephemeral_low():
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_free(port, host="127.0.0.1"):
    """True when port can be bound on host right now."""
    s = socket.socket()
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _reserved_elsewhere(port):
    """True when another process reserved port less than RESERVE_S seconds ago."""
    try:
        return time.time() - os.stat(os.path.join(RESERVE_DIR, str(port))).st_mtime < RESERVE_S
    except OSError:
        return False


def _reserve(port):
    """Reserves port for this caller; False when another process got it first."""
    path = os.path.join(RESERVE_DIR, str(port))
    try:
        os.makedirs(RESERVE_DIR, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        if _reserved_elsewhere(port):
            return False
        try:
            os.utime(path)  # a stale reservation: ours now
        except OSError:
            return False
    except OSError:
        pass  # no reservation folder: this process's set still holds
    _given.add(port)
    return True


def free_port(host="127.0.0.1", span=1, avoid=()):
    """A port P in [10000, ephemeral low - 1000) with P .. P + span - 1 all free on host, none
    in avoid and none handed out before (this process, or another in the last RESERVE_S
    seconds); reserves them. Raises RuntimeError after 500 taken picks."""
    span_range = max(1000, ephemeral_low() - 1000 - FIRST - span)
    for _ in range(500):
        port = FIRST + secrets.randbelow(span_range)
        block = range(port, port + span)
        if any(p in avoid or p in _given or _reserved_elsewhere(p) for p in block):
            continue
        if all(port_free(p, host) for p in block) and all(_reserve(p) for p in block):
            return port
    raise RuntimeError("no free port below the ephemeral range")


def free_ports(count, last_span=1, host="127.0.0.1"):
    """count distinct free ports (as free_port); the last one starts last_span free ports."""
    out, taken = [], set()
    for i in range(count):
        span = last_span if i == count - 1 else 1
        p = free_port(host, span, taken)
        out.append(p)
        taken.update(range(p, p + span))
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    print(" ".join(str(p) for p in free_ports(n, int(sys.argv[2]) if len(sys.argv) > 2 else 1)))
