#!/usr/bin/python3
"""OAuth2 bearer tokens (issue 16): JWTs signed RS256 and ES256 against a JWKS file.

Makes a throw-away RSA key and EC P-256 key with the `openssl` CLI, writes their JWKS, signs
tokens with `openssl dgst -sha256 -sign` (ES256: the DER signature converted to raw r||s
here), starts a private broker (scripts/broker.sh on a free port; or uses --amqp-port) and a
producer with JWKS_FILE, JWT_ISSUER, JWT_AUDIENCE and an API key, and checks:
  /produce with a good RS256 token and a good ES256 token: 201
  expired, not yet valid, wrong issuer, wrong audience, bad signature, tampered payload,
  alg none, alg HS256 keyed with the RSA public key, unknown kid: 401 with
  WWW-Authenticate error="invalid_token" and an error_description naming the check, the
  token never echoed
  a token whose scope lacks produce: 403; the API key still works beside the JWKS
  110 tokens of distinct subjects: producer_requests_total{key} stays bounded (100 + overflow)
  SIGHUP after replacing the JWKS (rotation): the old key's tokens 401, the new key's 201
  QUEUE_RATE_LIMIT_RPS/BURST (a second producer): one bucket per queue shared by every key,
  429 + Retry-After naming the queue, counted in producer_queue_rate_limited_total{queue};
  acks, nacks and lease extensions are not charged to the queue's bucket
  the queue routes (only when they answer): consume permission on a pattern, 403 naming
  the permission for another queue
The producer must exit 0 on SIGTERM and its log must hold no token.

Standard library only. Prints one line per check and `N passed, N failed`; exit 1 on failure.
"""

import argparse
import base64
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import test_system as ts  # noqa: E402  (Checker)
from rq_ports import free_port  # noqa: E402  (below the ephemeral range)

HOST = "127.0.0.1"
ISS = "https://idp.test.invalid"
AUD = "relayq-test"


def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def openssl(*args, data=None):
    p = subprocess.run(["openssl"] + list(args), input=data, capture_output=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), p.stderr.decode()[-300:]))
    return p.stdout


def der_ints(der):
    """The INTEGERs of a DER SEQUENCE (an ECDSA-Sig-Value: r and s)."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = []
    while i < len(der):
        assert der[i] == 0x02
        n = der[i + 1]
        out.append(int.from_bytes(der[i + 2:i + 2 + n], "big"))
        i += 2 + n
    return out


class Key:
    """A throw-away private key (PEM file) with its JWK."""

    def __init__(self, work, kind, kid):
        self.kind, self.kid = kind, kid
        self.path = os.path.join(work, "%s.pem" % kid)
        if kind == "RSA":
            openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", self.path)
        else:
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", self.path)
        self.pub_pem = openssl("pkey", "-in", self.path, "-pubout")
        text = openssl("pkey", "-in", self.path, "-pubout", "-text", "-noout",
                       data=None).decode()
        self.jwk = {"kid": kid, "use": "sig"}
        if kind == "RSA":
            mod = self._hex_block(text, "Modulus:")
            exp = int(text.split("Exponent:")[1].split()[0])
            self.jwk.update({"kty": "RSA", "alg": "RS256",
                             "n": b64u(mod.lstrip(b"\0")),
                             "e": b64u(exp.to_bytes((exp.bit_length() + 7) // 8, "big"))})
        else:
            pub = self._hex_block(text, "pub:")
            assert pub[0] == 4 and len(pub) == 65
            self.jwk.update({"kty": "EC", "crv": "P-256", "x": b64u(pub[1:33]),
                             "y": b64u(pub[33:])})

    @staticmethod
    def _hex_block(text, label):
        lines = text.split(label, 1)[1].splitlines()[1:]
        hexs = ""
        for ln in lines:
            ln = ln.strip()
            if not ln or not all(c in "0123456789abcdef:" for c in ln):
                break
            hexs += ln
        return bytes.fromhex(hexs.replace(":", ""))

    @property
    def alg(self):
        return "RS256" if self.kind == "RSA" else "ES256"

    def sign(self, signing_input):
        sig = openssl("dgst", "-sha256", "-sign", self.path, data=signing_input.encode())
        if self.kind == "EC":
            r, s = der_ints(sig)
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return sig

    def token(self, claims=None, header=None, **over):
        now = int(time.time())
        c = {"iss": ISS, "aud": AUD, "sub": "svc-test", "iat": now, "nbf": now - 5,
             "exp": now + 300, "scope": "produce consume:jwt.*"}
        c.update(claims or {})
        for k, v in over.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        h = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        h.update(header or {})
        si = b64u(json.dumps(h)) + "." + b64u(json.dumps(c))
        return si + "." + b64u(self.sign(si))


def hs256(secret, header, claims):
    import hashlib
    import hmac
    si = b64u(json.dumps(header)) + "." + b64u(json.dumps(claims))
    return si + "." + b64u(hmac.new(secret, si.encode(), hashlib.sha256).digest())


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def __repr__(self):
        return "%s %r %r" % (self.status, self.headers.get("www-authenticate"), self.body[:200])


def request(port, method, path, body=None, token=None, timeout=15.0):
    hdrs = {}
    if body is not None:
        body = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        c.close()


class Test:
    def __init__(self, args):
        self.args = args
        self.ck = ts.Checker()
        self.broker_dir = None
        self.proc = None
        self.tokens = []

    # ---- services ----

    def broker(self, cmd):
        a = ["bash", os.path.join(ROOT, "scripts/broker.sh"), cmd, self.broker_dir]
        if cmd == "start":
            a.append(str(self.amqp))
        with open(os.path.join(self.args.work, "broker.out"), "a") as out:
            return subprocess.run(a, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=150).returncode

    def start_producer(self, env=None, name="producer"):
        self.port = free_port()
        self.log = os.path.join(self.args.work, "%s.log" % name)
        self.queue = "relayq_jwt_%s" % secrets.token_hex(3)
        e = dict(os.environ)
        e.update({"RABBITMQ_HOST": HOST, "RABBITMQ_PORT": str(self.amqp),
                  "PRODUCER_BIND": HOST, "PRODUCER_PORT": str(self.port),
                  "REQUEST_QUEUE": self.queue, "LOG_LEVEL": "info"})
        e.update(env if env is not None else {
            "JWKS_FILE": self.jwks, "JWT_ISSUER": ISS, "JWT_AUDIENCE": AUD,
            "JWT_LEEWAY_S": "30", "API_KEYS": "ops:%s:dlq" % self.key_secret})
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen([os.path.join(self.args.bin, "producer")], env=e,
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if request(self.port, "GET", "/health/ready", timeout=2).status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def log_text(self):
        self.logf.flush()
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def write_jwks(self, *keys):
        tmp = self.jwks + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"keys": [k.jwk for k in keys]}, f)
        os.replace(tmp, self.jwks)

    # ---- checks ----

    def produce(self, token):
        self.tokens.append(token)
        return request(self.port, "POST", "/produce", {"payload": "jwt"}, token)

    def expect_401(self, name, token, needle):
        r = self.produce(token)
        wa = r.headers.get("www-authenticate", "")
        self.ck.check("%s: 401 invalid_token naming '%s'" % (name, needle),
                      r.status == 401 and 'error="invalid_token"' in wa and needle in wa and
                      needle.encode() in r.body and token.encode() not in r.body, r)

    def tokens_checks(self, rsa, ec):
        now = int(time.time())
        r = self.produce(rsa.token())
        self.ck.check("good RS256 token: POST /produce 201", r.status == 201, r)
        r = self.produce(ec.token())
        self.ck.check("good ES256 token: POST /produce 201", r.status == 201, r)
        r = self.produce(rsa.token(exp=now - 10))
        self.ck.check("expired 10 s ago, within JWT_LEEWAY_S 30: 201", r.status == 201, r)
        self.expect_401("expired", rsa.token(exp=now - 120), "expired")
        self.expect_401("not yet valid", ec.token(nbf=now + 600), "not yet valid")
        self.expect_401("wrong issuer", rsa.token(iss="https://evil.invalid"), "wrong issuer")
        self.expect_401("wrong audience", rsa.token(aud=["other", "x"]), "wrong audience")
        r = self.produce(rsa.token(aud=["other", AUD]))
        self.ck.check("aud array holding the audience: 201", r.status == 201, r)
        t = rsa.token()
        h, p, s = t.split(".")
        sig = bytearray(b64u_dec(s))
        sig[10] ^= 1
        self.expect_401("bad signature", "%s.%s.%s" % (h, p, b64u(bytes(sig))), "bad signature")
        claims = json.loads(b64u_dec(p))
        claims["scope"] = "*"
        self.expect_401("tampered payload", "%s.%s.%s" % (h, b64u(json.dumps(claims)), s),
                        "bad signature")
        none = b64u(json.dumps({"alg": "none", "typ": "JWT"})) + "." + p + "."
        self.expect_401("alg none", none, "unsupported alg")
        self.expect_401("alg HS256 keyed with the RSA public key",
                        hs256(rsa.pub_pem, {"alg": "HS256", "kid": rsa.kid}, claims),
                        "unsupported alg")
        self.expect_401("unknown kid", rsa.token(header={"kid": "nope"}), "no matching key")
        r = self.produce(rsa.token(scope="consume:jwt.* openid"))
        self.ck.check("a token whose scope lacks produce: 403", r.status == 403, r)
        r = request(self.port, "GET", "/dlq", token=self.key_secret)
        self.ck.check("the API key works beside the JWKS (GET /dlq not 401/403)",
                      r.status not in (401, 403), r)
        r = request(self.port, "POST", "/produce", {"payload": "x"})
        self.ck.check("no token: 401", r.status == 401, r)

    def subject_labels(self, ec, n=110):
        """Every JWT subject is a label value of producer_requests_total{key}: an IdP with many
        users must not grow /metrics (and the registry) without bound."""
        for i in range(n):
            r = self.produce(ec.token(sub="user-%d" % i))
            if r.status != 201:
                self.ck.check("token of subject user-%d: 201" % i, False, r)
                return
        m = request(self.port, "GET", "/metrics").body.decode()
        keys = [ln for ln in m.splitlines() if ln.startswith("producer_requests_total{")]
        self.ck.check("%d JWT subjects: producer_requests_total keeps at most 100 subject labels "
                      "+ an overflow label (%d series)" % (n, len(keys)),
                      len(keys) <= 102 and any('key="_jwt_other"' in ln for ln in keys),
                      keys[-3:])

    def queue_routes(self, rsa):
        tok = rsa.token(scope="consume:jwt.* produce:jwt.eu")
        self.tokens.append(tok)
        r = request(self.port, "GET", "/queues/other.q/messages?max=1&wait_s=0", token=tok)
        if r.status in (404, 501) or (r.status == 503 and b"not implemented" in r.body):
            self.ck.info("queue routes do not answer yet (%d): skipped" % r.status)
            return
        self.ck.check("GET /queues/other.q/messages without consume on it: 403 naming it",
                      r.status == 403 and
                      b"this credential may not consume from queue 'other.q'" in r.body, r)
        r = request(self.port, "POST", "/queues/jwt.us/messages", {"payload": "x"}, token=tok)
        self.ck.check("POST /queues/jwt.us/messages with produce on jwt.eu only: 403",
                      r.status == 403 and b"produce" in r.body, r)
        r = request(self.port, "DELETE", "/queues/jwt.eu", token=tok)
        self.ck.check("DELETE /queues/jwt.eu without admin: 403 'may not administer'",
                      r.status == 403 and b"may not administer queue 'jwt.eu'" in r.body, r)
        r = request(self.port, "GET", "/queues/jwt.eu/messages?max=1&wait_s=0", token=tok)
        self.ck.check("GET /queues/jwt.eu/messages with consume:jwt.*: admitted (not 401/403)",
                      r.status not in (401, 403), r)

    def rotation(self, rsa, ec):
        new = Key(self.args.work, "RSA", "rsa-2")
        self.write_jwks(new, ec)
        old_tok, new_tok = rsa.token(), new.token()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        r = None
        while time.monotonic() < deadline:
            r = self.produce(old_tok)
            if r.status == 401:
                break
            time.sleep(0.2)
        self.ck.check("SIGHUP after rotating the JWKS: the old key's token 401",
                      r is not None and r.status == 401, r)
        r = self.produce(new_tok)
        self.ck.check("SIGHUP after rotating the JWKS: the new key's token 201", r.status == 201, r)
        self.ck.check("the reload is logged", "API keys reloaded" in self.log_text())
        # a broken JWKS on SIGHUP keeps the current keys
        with open(self.jwks, "w") as f:
            f.write("{\"keys\": []}")
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        r = self.produce(new.token())
        self.ck.check("a broken JWKS on SIGHUP keeps the current keys: 201", r.status == 201, r)
        self.ck.check("the failed reload is logged", "not reloaded" in self.log_text())

    def stop_producer(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.logf.close()
        self.ck.check("producer exits 0 on SIGTERM", rc == 0, rc)
        self.proc = None

    def queue_rate_limit(self):
        """QUEUE_RATE_LIMIT_*: one bucket per queue shared by every key."""
        k1, k2 = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        ok = self.start_producer({"API_KEYS": "a:%s,b:%s" % (k1, k2),
                                  "QUEUE_RATE_LIMIT_RPS": "0.2", "QUEUE_RATE_LIMIT_BURST": "2"},
                                 name="producer-qrl")
        if not self.ck.check("producer with QUEUE_RATE_LIMIT_RPS 0.2, burst 2 ready", ok,
                             self.log_text()[-500:] if not ok else ""):
            return
        st = [request(self.port, "POST", "/produce", {"payload": "q"}, k1).status
              for _ in range(2)]
        r = request(self.port, "POST", "/produce", {"payload": "q"}, k2)
        self.ck.check("the default queue's bucket is shared: 201, 201 (key a), then 429 (key b) "
                      "with Retry-After naming the queue",
                      st == [201, 201] and r.status == 429 and
                      int(r.headers.get("retry-after", "0")) >= 1 and
                      self.queue.encode() in r.body, (st, r))
        r = request(self.port, "GET", "/dlq", token=k1)
        self.ck.check("GET /dlq is not charged to the queue bucket", r.status != 429, r)
        m = request(self.port, "GET", "/metrics").body.decode()
        want = 'producer_queue_rate_limited_total{queue="%s"} 1' % self.queue
        self.ck.check("producer_queue_rate_limited_total{queue} counts it", want in m,
                      [ln for ln in m.splitlines() if "queue_rate_limited" in ln])
        st = [request(self.port, "POST", "/queues/other.q/messages", {"payload": "q"},
                      k1 if i % 2 else k2).status for i in range(3)]
        self.ck.check("POST /queues/other.q/messages has a bucket of its own: the third "
                      "request 429, not the first", st[0] != 429 and st[2] == 429, st)
        # the bucket is empty now: an ack (the end of a delivery the pull already paid for)
        # must still get through, or a rate limit turns into lease expiry and redelivery
        r = request(self.port, "POST", "/queues/other.q/messages/%s/ack" % ("0" * 32),
                    {"lease_id": "0" * 32}, k1)
        self.ck.check("an ack on a queue whose bucket is empty is not 429", r.status != 429, r)
        self.stop_producer()

    def execute(self):
        try:
            rsa = Key(self.args.work, "RSA", "rsa-1")
            ec = Key(self.args.work, "EC", "ec-1")
            self.jwks = os.path.join(self.args.work, "jwks.json")
            self.write_jwks(rsa, ec)
            self.key_secret = secrets.token_urlsafe(24)
            if self.args.amqp_port:
                self.amqp = self.args.amqp_port
            else:
                self.amqp = free_port()
                self.broker_dir = os.path.join(self.args.work, "broker")
                if not self.ck.check("private broker started on %d" % self.amqp,
                                     self.broker("start") == 0):
                    return self.ck.summary()
            # fail closed: JWKS_FILE without JWT_ISSUER is a start-up error
            e = dict(os.environ, JWKS_FILE=self.jwks, JWT_AUDIENCE=AUD, PRODUCER_PORT=str(
                free_port()), RABBITMQ_PORT=str(self.amqp), RABBITMQ_HOST=HOST)
            e.pop("JWT_ISSUER", None)
            p = subprocess.run([os.path.join(self.args.bin, "producer")], env=e,
                               capture_output=True, timeout=30)
            self.ck.check("JWKS_FILE without JWT_ISSUER: the producer refuses to start",
                          p.returncode != 0 and b"JWT_ISSUER" in p.stdout + p.stderr,
                          (p.returncode, (p.stdout + p.stderr)[-300:]))
            ok = self.start_producer()
            if not self.ck.check("producer with JWKS_FILE ready on %d" % self.port, ok,
                                 self.log_text()[-500:] if not ok else ""):
                return self.ck.summary()
            self.tokens_checks(rsa, ec)
            self.subject_labels(ec)
            self.queue_routes(rsa)
            self.rotation(rsa, ec)
            text = self.log_text()
            leaked = [t for t in self.tokens if t.split(".")[-1] and t.split(".")[-1] in text]
            self.ck.check("no token (signature) in the producer log", not leaked)
            self.ck.check("no API key secret in the producer log", self.key_secret not in text)
            self.stop_producer()
            self.queue_rate_limit()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.stop_producer()
            if self.broker_dir is not None:
                self.broker("stop")
        return self.ck.summary()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/bin", help="folder of the producer binary")
    ap.add_argument("--amqp-port", type=int, default=0,
                    help="an already running broker's AMQP port (default: start a private one)")
    ap.add_argument("--work", default=None, help="scratch folder (keys, JWKS, logs)")
    args = ap.parse_args(argv)
    if args.work is None:
        args.work = tempfile.mkdtemp(prefix="relayq-jwt-")
    os.makedirs(args.work, exist_ok=True)
    return Test(args).execute()


if __name__ == "__main__":
    sys.exit(main())
