#!/usr/bin/python3
"""The live viewer (GET /viewer) and the API docs (GET /docs) in a real browser (issue 18).

Starts a broker (scripts/broker.sh, free ports, 127.0.0.1; or --amqp-port/--mgmt-port to
use one) and a producer, then drives headless Chromium (selenium + chromedriver):
  - /viewer, topic over SSE (filled in through the form, bind "viewer.*"): the page says
    "open", messages published with POST /topics/{name}/messages appear newest first with
    their payload pretty-printed, the count follows, and a message whose routing key the
    binding does not match is not shown;
  - the same over WebSocket (the form prefilled from the query string, connect=1);
  - an unknown topic: the page shows the error (the HTTP status and the server's message);
  - /docs: Swagger UI renders one block per operation of docs/openapi.json, /produce among
    them.
Screenshots go to the build directory (their paths are printed).

Needs Debian's chromium, chromium-driver and python3-selenium: installed with apt-get when
missing and running as root, else a FAIL saying so.

Usage: test_rt_viewer.py [--build-dir build] [--amqp-port P --mgmt-port M] [--work DIR]
Prints PASS/FAIL lines and `N passed, M failed`; exit 1 on any failure. Every wait is
bounded; only the processes it started are stopped, by PID.
"""
import argparse
import http.client
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_reliability import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEBS = {"chromium": "/usr/bin/chromium", "chromium-driver": "/usr/bin/chromedriver"}

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS  {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL  {name}{': ' + str(detail)[:600] if detail else ''}", flush=True)
    return ok


def log(msg):
    print(f"[rt-viewer {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_browser():
    """Installs the missing Debian packages (root only). Returns an error text, or ''."""
    missing = [p for p, path in DEBS.items() if not os.path.exists(path)]
    if importlib.util.find_spec("selenium") is None:
        missing.append("python3-selenium")
    if not missing:
        return ""
    if os.geteuid() != 0:
        return "missing " + " ".join(missing) + ": apt-get install -y chromium chromium-driver python3-selenium"
    log("installing " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env,
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        return "apt-get install failed: " + r.stderr[-400:]
    return ""


def call(port, method, path, body=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = conn.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException) as e:
        return 0, str(e).encode()
    finally:
        conn.close()


class Stack:
    def __init__(self, args, tmp):
        self.tmp, self.args = tmp, args
        self.own = args.amqp_port is None
        self.amqp = args.amqp_port or free_port()
        self.mgmt = args.mgmt_port or (free_port() if self.own else None)
        self.broker_dir = os.path.join(tmp, "broker")
        self.port = free_port()
        self.proc = None

    def start(self):
        if self.own:
            with open(os.path.join(self.tmp, "broker.out"), "w") as out:
                rc = subprocess.run(["bash", os.path.join(ROOT, "scripts/broker.sh"), "start", self.broker_dir,
                                     str(self.amqp), str(self.mgmt)], stdout=out, stderr=subprocess.STDOUT,
                                    timeout=150).returncode
            if rc != 0:
                raise RuntimeError(f"broker start failed (see {self.tmp}/broker.out)")
        env = dict(os.environ, RABBITMQ_HOST="127.0.0.1", RABBITMQ_PORT=str(self.amqp), LOG_LEVEL="info",
                   REQUEST_QUEUE="rq_viewer_" + uuid.uuid4().hex[:8], PRODUCER_BIND="127.0.0.1",
                   PRODUCER_PORT=str(self.port),
                   RABBITMQ_MANAGEMENT_URL=f"http://127.0.0.1:{self.mgmt}" if self.mgmt else "off")
        if self.args.docs_ui_dir:
            env["DOCS_UI_DIR"] = self.args.docs_ui_dir
        logf = open(os.path.join(self.tmp, "producer.log"), "w")
        self.proc = subprocess.Popen([os.path.join(self.args.build_dir, "bin", "producer")], env=env,
                                     stdout=logf, stderr=logf)
        logf.close()
        deadline = time.monotonic() + 30
        while call(self.port, "GET", "/health/ready", timeout=2)[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"producer not ready (see {self.tmp}/producer.log)")
            time.sleep(0.1)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.own:
            subprocess.run(["bash", os.path.join(ROOT, "scripts/broker.sh"), "stop", self.broker_dir],
                           capture_output=True, timeout=60)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = DEBS["chromium"]
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(DEBS["chromium-driver"]), options=opts)
    d.set_page_load_timeout(20)
    d.set_script_timeout(20)
    return d


def wait_for(fn, timeout=10.0, step=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the page is still changing
            last = e
        time.sleep(step)
    return None


def text(d, element_id):
    return d.find_element("id", element_id).text


def publish(port, topic, routing_key, payload):
    st, body = call(port, "POST", f"/topics/{topic}/messages", {"payload": payload, "routing_key": routing_key})
    return st == 201, f"{st} {body[:200]!r}"


def viewer_round(d, st, topic, transport, use_form):
    base = f"http://127.0.0.1:{st.port}/viewer"
    if use_form:
        d.get(base)
        d.find_element("id", "name").send_keys(topic)
        d.find_element("id", "bind").send_keys("viewer.*")
        from selenium.webdriver.support.ui import Select
        Select(d.find_element("id", "transport")).select_by_value(transport)
        d.find_element("id", "connect").click()
    else:
        d.get(f"{base}?topic={topic}&bind=viewer.*&transport={transport}&connect=1")
    opened = wait_for(lambda: text(d, "state") == "open", 10)
    check(f"{transport}: the viewer says open", opened, f"state {text(d, 'state')!r}, error {text(d, 'error')!r}")
    if not opened:
        return
    ok = True
    for i in range(3):
        good, why = publish(st.port, topic, "viewer.test", {"n": i, "transport": transport, "nested": {"k": [1, 2]}})
        ok = ok and good
    good, why2 = publish(st.port, topic, "other.test", {"n": 99})  # not matched by viewer.*
    check(f"{transport}: 4 messages published (201)", ok and good, why + " " + why2)
    good, why = publish(st.port, topic, "viewer.last", {"n": 3, "transport": transport})
    got = wait_for(lambda: text(d, "count") == "4", 10)
    check(f"{transport}: the 4 matching messages appear, the count says 4", got, f"count {text(d, 'count')!r}")
    items = d.find_elements("css selector", "#messages li")
    first = items[0].find_element("css selector", "pre").text if items else ""
    check(f"{transport}: newest first, payload pretty-printed", len(items) == 4 and '"n": 3' in first and
          "\n" in first, f"{len(items)} items, first {first!r}")
    shown = " ".join(i.text for i in items)
    check(f"{transport}: the message the binding does not match is not shown", '"n": 99' not in shown, shown[:300])
    check(f"{transport}: the routing key is shown", "viewer.last" in items[0].text if items else False,
          items[0].text if items else "")


def unknown_topic(d, st):
    d.get(f"http://127.0.0.1:{st.port}/viewer?topic=no-such-topic-{uuid.uuid4().hex[:6]}&connect=1")
    got = wait_for(lambda: "404" in text(d, "error"), 10)
    check("an unknown topic: the page shows the HTTP 404 and the server's error", got,
          f"state {text(d, 'state')!r}, error {text(d, 'error')!r}")


def docs(d, st, shots):
    with open(os.path.join(ROOT, "docs", "openapi.json")) as f:
        spec = json.load(f)
    # Swagger UI shows an operation once under each of its tags
    nops = sum(len(op.get("tags", [None])) for item in spec["paths"].values() for m, op in item.items()
               if m in ("get", "post", "delete", "head", "put", "patch"))
    d.get(f"http://127.0.0.1:{st.port}/docs")
    blocks = wait_for(lambda: len(d.find_elements("css selector", ".opblock")) >= nops, 20)
    n = len(d.find_elements("css selector", ".opblock"))
    check(f"/docs: Swagger UI renders one block per operation ({n} of {nops})", blocks,
          d.find_element("tag name", "body").text[:300])
    paths = [e.text for e in d.find_elements("css selector", ".opblock-summary-path")]
    check("/docs: the /produce operation is shown", any(p.replace("\u200b", "") == "/produce" for p in paths),
          paths[:10])
    path = os.path.join(shots, "rt_docs.png")
    d.save_screenshot(path)
    log(f"screenshot: {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--amqp-port", type=int)
    ap.add_argument("--mgmt-port", type=int)
    ap.add_argument("--docs-ui-dir", help="DOCS_UI_DIR for the producer (default: its own lookup)")
    ap.add_argument("--work", help="scratch directory (default: a new temporary one)")
    args = ap.parse_args()
    args.build_dir = os.path.abspath(args.build_dir)
    why = ensure_browser()
    if not check("chromium, chromedriver and selenium are installed", not why, why):
        print(f"{passed} passed, {failed} failed")
        return 1
    tmp = args.work or tempfile.mkdtemp(prefix="rq_viewer_")
    os.makedirs(tmp, exist_ok=True)
    os.chmod(tmp, 0o755)  # the broker (user rabbitmq) must reach its folder inside
    st, d = Stack(args, tmp), None
    try:
        st.start()
        topic = "viewer-" + uuid.uuid4().hex[:8]
        deadline = time.monotonic() + 20  # the hub connects to the broker on its own
        while True:
            code, body = call(st.port, "POST", "/topics", {"name": topic})
            if code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        check("POST /topics creates the topic", code == 201, f"{code} {body[:200]!r}")
        d = browser()
        viewer_round(d, st, topic, "sse", use_form=True)
        path = os.path.join(args.build_dir, "rt_viewer.png")
        d.save_screenshot(path)
        log(f"screenshot: {path}")
        viewer_round(d, st, topic, "ws", use_form=False)
        unknown_topic(d, st)
        docs(d, st, args.build_dir)
        code, body = call(st.port, "DELETE", f"/topics/{topic}")
        check("DELETE /topics/{name} removes the topic", code == 200, f"{code} {body[:200]!r}")
    except Exception as e:  # noqa: BLE001 - report it, then clean up
        check("run", False, repr(e))
    finally:
        if d is not None:
            d.quit()
        st.close()
        if failed:
            print(f"logs kept in {tmp}")
        elif not args.work:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
