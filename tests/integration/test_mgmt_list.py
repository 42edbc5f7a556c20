#!/usr/bin/python3
"""The tests' management-API queue listing against a management API that answers badly for a
while (CI: GET /api/queues answered without a JSON list while queues were being deleted under
load, and test_queues_r2's delete-race crashed with "'NoneType' object is not iterable").

A local HTTP server stands in for the management API's listing only (the broker's own answer
is not the subject): it answers 500 with an empty body, then 200 with a body that is not
JSON, then the list. Both helpers must return the names; against a server that never
answers well they must return None, not raise. Standard library only; 127.0.0.1.
"""
import http.server
import json
import os
import sys
import threading
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_queues_admin  # noqa: E402
import test_queues_r2  # noqa: E402

QUEUES = [{"name": "q.dlq"}, {"name": "q.retry.1"}, {"name": "other"}]


def serve(bad_answers):
    """A server whose first bad_answers GETs answer badly (-1: all of them)."""
    state = {"n": 0}

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            state["n"] += 1
            n = state["n"]
            bad = bad_answers < 0 or n <= bad_answers
            if bad and n % 2 == 1:
                status, body = 500, b""
            elif bad:
                status, body = 200, b"<html>busy</html>"
            else:
                status, body = 200, json.dumps(QUEUES).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, state


def main():
    failed = 0
    for bad, want in ((2, ["q.dlq", "q.retry.1"]), (-1, None)):
        for label, call in (
                ("test_queues_r2.mgmt_queue_names",
                 lambda port: test_queues_r2.mgmt_queue_names(
                     types.SimpleNamespace(args=types.SimpleNamespace(mgmt_port=port)), "q.")),
                ("test_queues_admin.mgmt_names",
                 lambda port: test_queues_admin.mgmt_names(
                     types.SimpleNamespace(mgmt_port=port), "q."))):
            srv, state = serve(bad)
            try:
                got = call(srv.server_address[1])
                ok = got == want
            except Exception as e:  # noqa: BLE001
                got, ok = "raised %r" % e, False
            finally:
                srv.shutdown()
                srv.server_close()
            print("%s %s, %s bad answers first: %r (%d requests)"
                  % ("PASS" if ok else "FAIL", label, "all" if bad < 0 else bad, got, state["n"]))
            failed += not ok
    print("%d failed" % failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
