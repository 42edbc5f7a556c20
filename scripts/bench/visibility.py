#!/usr/bin/python3
"""How soon another producer replica sees a message (issue 17): POST /produce on replica A,
then GET /messages/{id} on replica B every millisecond until 200; N messages one after the
other. Prints one line: "visibility: n=N p50=X ms p99=Y ms max=Z ms missing=M" (M: not seen
within 5 s). Standard library only.

    visibility.py A_URL B_URL [--count N]
"""
import argparse
import http.client
import json
import time
import urllib.parse


def conn(url):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--count", type=int, default=300)
    args = ap.parse_args()
    ca, cb = conn(args.a), conn(args.b)
    lat, missing = [], 0
    for i in range(args.count):
        ca.request("POST", "/produce", body=json.dumps({"payload": "vis-%d" % i}),
                   headers={"Content-Type": "application/json"})
        r = ca.getresponse()
        body = r.read()
        if r.status != 201:
            missing += 1
            continue
        mid = json.loads(body)["message_id"]
        t0 = time.monotonic()
        while True:
            cb.request("GET", "/messages/" + mid)
            g = cb.getresponse()
            g.read()
            if g.status == 200:
                lat.append((time.monotonic() - t0) * 1e3)
                break
            if time.monotonic() - t0 > 5:
                missing += 1
                break
            time.sleep(0.001)
    lat.sort()

    def q(p):
        return lat[min(len(lat) - 1, int(len(lat) * p))] if lat else -1
    print("visibility: n=%d p50=%.2f ms p99=%.2f ms max=%.2f ms missing=%d" %
          (len(lat), q(0.5), q(0.99), lat[-1] if lat else -1, missing))
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
