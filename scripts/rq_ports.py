#!/usr/bin/python3
"""Free TCP ports on 127.0.0.1 for the services and brokers that tests and benches start.

A port the kernel hands out (bind to 0 and close) lies in the ephemeral range, where another
test's outgoing connection can take it before the service binds it. free_port() picks one at
random in [10000, ephemeral low - 1000) instead: no client socket is ever given such a port, and
the 1000 ports just under the range stay for the Erlang distribution ports scripts/broker.sh
chooses. Probed free a moment ago; two callers can still race for the same one (1 in ~20,000).

Import it (sys.path holding scripts/) or run it: `python3 scripts/rq_ports.py [COUNT [SPAN]]`
prints COUNT distinct ports (default 1) on one line; the last starts SPAN free ports.
"""

import secrets
import socket
import sys

FIRST = 10000


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


def free_port(host="127.0.0.1", span=1, avoid=()):
    """A port P in [10000, ephemeral low - 1000) with P .. P + span - 1 all free on host and none
    in avoid (ports already handed out); raises RuntimeError after 500 taken picks."""
    span_range = max(1000, ephemeral_low() - 1000 - FIRST - span)
    for _ in range(500):
        port = FIRST + secrets.randbelow(span_range)
        block = range(port, port + span)
        if not any(p in avoid for p in block) and all(port_free(p, host) for p in block):
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
