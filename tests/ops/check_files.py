#!/usr/bin/python3
"""Checks relayq's operations files: every JSON and YAML file parses, and the compose file,
Dockerfile, Prometheus configuration and alerts, Grafana provisioning and dashboards, and the
Kubernetes manifests name what they must (probes, ports, kinds, quorum queues, autoscaling...).

Standard library plus PyYAML (Debian python3-yaml; run with /usr/bin/python3). Dashboard
PromQL is syntax-checked with promtool (Debian package prometheus). Exit 1 on any failure.
"""

import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("check_files: PyYAML missing: install python3-yaml (make deps) and run with /usr/bin/python3")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP_DIRS = {".git", "run", "node_modules", "__pycache__"}

passed, failed = 0, 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)
    return cond


def rel(p):
    return os.path.relpath(p, ROOT)


def walk(exts):
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.startswith("build")]
        for f in files:
            if f.endswith(exts):
                yield os.path.join(d, f)


def load_yaml_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---------------------------------------------------------------- every file parses
def check_parse_all():
    n_json = n_yaml = 0
    for p in walk((".json",)):
        n_json += 1
        try:
            with open(p) as f:
                json.load(f)
            check(True, "")
        except ValueError as e:
            check(False, "%s: invalid JSON: %s" % (rel(p), e))
    for p in walk((".yml", ".yaml")):
        n_yaml += 1
        try:
            load_yaml_all(p)
            check(True, "")
        except yaml.YAMLError as e:
            check(False, "%s: invalid YAML: %s" % (rel(p), e))
    check(n_json >= 1, "no JSON file found (the Grafana dashboards are JSON)")
    check(n_yaml >= 10, "expected at least 10 YAML files, found %d" % n_yaml)
    print("parsed %d JSON and %d YAML files" % (n_json, n_yaml))


# ---------------------------------------------------------------- configuration names
def known_settings():
    """Names the services accept: from .env.example (generated from the config table) when
    present, else every upper-case string literal of common/config.c."""
    names = set()
    ex = os.path.join(ROOT, ".env.example")
    if os.path.exists(ex):
        with open(ex) as f:
            for line in f:
                m = re.match(r"^\s*#?\s*(?:export\s+)?([A-Z][A-Z0-9_]+)=", line)
                if m:
                    names.add(m.group(1))
    src = os.path.join(ROOT, "common", "config.c")
    if not names and os.path.exists(src):
        with open(src) as f:
            names = set(re.findall(r'"([A-Z][A-Z0-9_]{3,})"', f.read()))
    return names


# ---------------------------------------------------------------- docker compose
def check_compose(settings):
    c = load_yaml_all(os.path.join(ROOT, "docker-compose.yml"))[0]
    svc = c.get("services", {})
    for name in ("rabbitmq", "producer", "consumer", "prometheus", "grafana"):
        check(name in svc, "compose: service %s missing" % name)
    if not all(n in svc for n in ("rabbitmq", "producer", "consumer", "prometheus", "grafana")):
        return
    rmq = svc["rabbitmq"]
    check(str(rmq.get("image", "")).startswith("rabbitmq:3-management"), "compose: rabbitmq image is not rabbitmq:3-management")
    test = rmq.get("healthcheck", {}).get("test", [])
    test = " ".join(test) if isinstance(test, list) else str(test)
    check("rabbitmq-diagnostics" in test and "-q" in test and "ping" in test,
          "compose: rabbitmq healthcheck is not `rabbitmq-diagnostics -q ping`")
    named = set((c.get("volumes") or {}).keys())
    rvols = [str(v).split(":")[0] for v in rmq.get("volumes", [])]
    check(any(v in named for v in rvols), "compose: rabbitmq has no named volume")

    def env_of(s):
        e = s.get("environment", {})
        if isinstance(e, list):
            e = dict(x.split("=", 1) for x in e)
        return e

    for name, port in (("producer", 5000), ("consumer", 8000)):
        s = svc[name]
        dep = s.get("depends_on", {})
        check(isinstance(dep, dict) and dep.get("rabbitmq", {}).get("condition") == "service_healthy",
              "compose: %s does not wait for rabbitmq service_healthy" % name)
        check(s.get("restart") == "unless-stopped", "compose: %s restart is not unless-stopped" % name)
        ef = s.get("env_file")
        ef_paths = [x if isinstance(x, str) else x.get("path") for x in (ef if isinstance(ef, list) else [ef])]
        check(".env" in ef_paths, "compose: %s does not read .env" % name)
        env = env_of(s)
        check(str(env.get("HEALTH_PORT")) == str(port), "compose: %s HEALTH_PORT is not %d" % (name, port))
        check(env.get("RABBITMQ_HOST") == "rabbitmq", "compose: %s RABBITMQ_HOST is not rabbitmq" % name)
        for k in env:
            check(k == "HEALTH_PORT" or not settings or k in settings,
                  "compose: %s sets %s, which the services do not know" % (name, k))
        vols = [str(v) for v in s.get("volumes", [])]
        check(any(v.split(":")[0] in named and v.split(":")[1] == "/data" for v in vols),
              "compose: %s lacks the shared named volume on /data" % name)
    prod = svc["producer"]
    check(any(str(p) in ("127.0.0.1:5000:5000", "127.0.0.1:${RQ_COMPOSE_PRODUCER_PORT:-5000}:5000")
              for p in prod.get("ports", [])), "compose: producer does not publish 127.0.0.1:5000")
    for name, one in svc.items():
        for p in one.get("ports", []):
            check(str(p).startswith("127.0.0.1:"), "compose: %s publishes %s beyond 127.0.0.1" % (name, p))
    check(str(env_of(prod).get("PRODUCER_PORT")) == "5000", "compose: PRODUCER_PORT is not 5000")
    cons = svc["consumer"]
    check("container_name" not in cons, "compose: consumer has a container_name (breaks --scale)")
    check("ports" not in cons, "compose: consumer publishes a host port (breaks --scale)")
    check(str(env_of(cons).get("CONSUMER_PORT")) == "8000", "compose: CONSUMER_PORT is not 8000")
    check(cons.get("command") == ["consumer"] and prod.get("command") == ["producer"],
          "compose: producer/consumer commands do not choose the program")
    graf = [str(v) for v in svc["grafana"].get("volumes", [])]
    check(any(v.startswith("./grafana/provisioning:/etc/grafana/provisioning") for v in graf),
          "compose: grafana provisioning not mounted")
    check(any(v.startswith("./grafana/dashboards:") for v in graf), "compose: grafana dashboards not mounted")
    prom = [str(v) for v in svc["prometheus"].get("volumes", [])]
    check(any(v.startswith("./prometheus:/etc/prometheus") for v in prom), "compose: prometheus config not mounted")
    # the dashboards provider path is where compose mounts the dashboards
    dmount = [v.split(":")[1] for v in graf if v.startswith("./grafana/dashboards:")]
    prov = load_yaml_all(os.path.join(ROOT, "grafana/provisioning/dashboards/relayq.yml"))[0]
    paths = [p.get("options", {}).get("path") for p in prov.get("providers", [])]
    check(dmount and dmount[0] in paths, "grafana: dashboard provider path %s != compose mount %s" % (paths, dmount))


# ---------------------------------------------------------------- Dockerfile
def check_dockerfile():
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read()
    stages = re.split(r"(?im)^FROM\s+", text)[1:]
    check(len(stages) >= 2, "Dockerfile: not multi-stage")
    if len(stages) < 2:
        return
    build, runtime = stages[0], stages[-1]
    check(build.startswith("debian:bookworm"), "Dockerfile: build stage is not debian:bookworm")
    for p in ("librabbitmq-dev", "libmicrohttpd-dev", "libjansson-dev", "uuid-dev", "cmake"):
        check(p in build, "Dockerfile: build stage lacks %s" % p)
    check("cmake --build" in build, "Dockerfile: build stage does not run cmake --build")
    check(runtime.startswith("debian:bookworm-slim"), "Dockerfile: runtime stage is not bookworm-slim")
    for p in ("librabbitmq4", "libmicrohttpd12", "libjansson4", "libuuid1"):
        check(p in runtime, "Dockerfile: runtime stage lacks %s" % p)
    check(not re.search(r"\S+-dev\b", runtime), "Dockerfile: runtime stage installs a -dev package")
    users = re.findall(r"(?m)^USER\s+(\S+)", runtime)
    check(users and users[-1].split(":")[0] not in ("0", "root"), "Dockerfile: runtime does not run as a non-root USER")
    check(re.search(r"(?m)^HEALTHCHECK\b.*(\n.*)*?/health/live", runtime) is not None,
          "Dockerfile: no HEALTHCHECK on /health/live")
    check("/usr/local/bin/" in runtime and "producer" in runtime and "consumer" in runtime,
          "Dockerfile: runtime image lacks a binary")


# ---------------------------------------------------------------- Prometheus
def check_prometheus():
    cfg = load_yaml_all(os.path.join(ROOT, "prometheus/prometheus.yml"))[0]
    check("alerts.yml" in cfg.get("rule_files", []), "prometheus.yml: alerts.yml not loaded")
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs", [])}
    p = jobs.get("relayq-producer", {})
    check(any("producer:5000" in sc.get("targets", []) for sc in p.get("static_configs", [])),
          "prometheus.yml: producer:5000 not scraped")
    c = jobs.get("relayq-consumer", {})
    dns = c.get("dns_sd_configs", [])
    check(any("consumer" in d.get("names", []) and d.get("port") == 8000 for d in dns),
          "prometheus.yml: consumers not found through DNS on port 8000")
    r = jobs.get("rabbitmq", {})
    check(any("rabbitmq:15692" in sc.get("targets", []) for sc in r.get("static_configs", [])),
          "prometheus.yml: rabbitmq:15692 not scraped")

    alerts = load_yaml_all(os.path.join(ROOT, "prometheus/alerts.yml"))[0]
    rules = [r for g in alerts.get("groups", []) for r in g.get("rules", [])]
    by_name = {r.get("alert"): r for r in rules}
    want = {
        "RelayqQueueDepthGrowing": "rabbitmq_queue_messages",
        "RelayqNoConsumers": "rabbitmq_queue_consumers",
        "RelayqDeadLettersWaiting": "dlq",
        "RelayqPublishErrors": "producer_publish_errors_total",
        "RelayqProducerNotReady": "producer_broker_connected",
    }
    for name, needle in want.items():
        r = by_name.get(name)
        if check(r is not None, "alerts.yml: alert %s missing" % name):
            check(needle in r.get("expr", ""), "alerts.yml: %s does not use %s" % (name, needle))
    for r in rules:
        check(r.get("labels", {}).get("severity") in ("warning", "critical"),
              "alerts.yml: %s has no severity warning|critical" % r.get("alert"))
        a = r.get("annotations", {})
        check(a.get("summary") and a.get("description"), "alerts.yml: %s lacks summary/description" % r.get("alert"))
    # the Kubernetes PrometheusRule is generated from alerts.yml and must not drift
    spec = importlib.util.spec_from_file_location("genrule", os.path.join(ROOT, "scripts/gen-prometheusrule.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(os.path.join(ROOT, "deploy/base/prometheusrule.yaml")) as f:
        check(f.read() == mod.render(), "deploy/base/prometheusrule.yaml differs from prometheus/alerts.yml: run make prometheusrule")


# ---------------------------------------------------------------- Grafana
DASH_METRICS = [
    "messages_produced_total",
    "http_request_duration_seconds",
    "producer_queue_publish_latency_seconds",
    "consumer_queue_consume_latency_seconds",
    "message_processing_duration_seconds",
    "message_processing_errors_total",
    "rabbitmq_queue_messages",
    "producer_tail_bytes_behind",
]


def check_grafana():
    ds = load_yaml_all(os.path.join(ROOT, "grafana/provisioning/datasources/prometheus.yml"))[0]
    uids = {d.get("uid") for d in ds.get("datasources", [])}
    check("prometheus" in uids, "grafana: no datasource with uid prometheus")
    check(any(d.get("url") == "http://prometheus:9090" for d in ds.get("datasources", [])),
          "grafana: datasource does not point at http://prometheus:9090")
    exprs = []
    files = sorted(glob.glob(os.path.join(ROOT, "grafana/dashboards/*.json")))
    check(files, "grafana: no dashboard JSON")
    for path in files:
        with open(path) as f:
            d = json.load(f)
        check(d.get("uid") and d.get("title"), "%s: dashboard without uid/title" % rel(path))
        ids = [p.get("id") for p in d.get("panels", [])]
        check(len(ids) == len(set(ids)), "%s: duplicate panel ids" % rel(path))
        for p in d.get("panels", []):
            check("gridPos" in p, "%s: panel %s without gridPos" % (rel(path), p.get("title")))
            for t in p.get("targets", []):
                dsu = (t.get("datasource") or p.get("datasource") or {}).get("uid")
                check(dsu in uids, "%s: panel %s uses unknown datasource %s" % (rel(path), p.get("title"), dsu))
                if t.get("expr"):
                    exprs.append((rel(path), p.get("title"), t["expr"]))
    alltext = "\n".join(e for _, _, e in exprs)
    for m in DASH_METRICS:
        check(m in alltext, "grafana: no panel charts %s" % m)
    check(re.search(r"dlq", alltext) is not None, "grafana: no DLQ panel")
    check_promql(exprs)


def check_promql(exprs):
    """Syntax-checks every dashboard query with promtool, as recording rules."""
    promtool = shutil.which("promtool")
    if not check(promtool is not None, "promtool not found (Debian package prometheus; make deps)"):
        return
    rules = [{"record": "relayq:dashboard_query_%d" % i,
              "expr": e.replace("$__rate_interval", "5m").replace("$__interval", "1m")}
             for i, (_, _, e) in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        tmp = f.name
    try:
        r = subprocess.run([promtool, "check", "rules", tmp], capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, "grafana: a dashboard query is not valid PromQL:\n%s%s" % (r.stdout, r.stderr))
    finally:
        os.unlink(tmp)
    print("promtool accepted %d dashboard queries" % len(exprs))


# ---------------------------------------------------------------- Kubernetes
def check_kubernetes(settings):
    docs = []
    for p in sorted(walk((".yaml", ".yml"))):
        if rel(p).startswith("deploy" + os.sep):
            for d in load_yaml_all(p):
                docs.append((rel(p), d))
    objs = [(f, d) for f, d in docs if isinstance(d, dict) and "kind" in d and d.get("kind") != "Kustomization"]
    kinds = {}
    for f, d in objs:
        check(d.get("apiVersion") and d.get("metadata", {}).get("name"), "%s: %s without apiVersion/name" % (f, d.get("kind")))
        kinds.setdefault(d["kind"], []).append(d)

    def one(kind, name):
        for d in kinds.get(kind, []):
            if d["metadata"]["name"] == name:
                return d
        return None

    for kind, n in (("Deployment", 2), ("Service", 2), ("ConfigMap", 1), ("Secret", 1), ("ScaledObject", 1),
                    ("TriggerAuthentication", 1), ("HorizontalPodAutoscaler", 1), ("RabbitmqCluster", 1),
                    ("ServiceMonitor", 3), ("PrometheusRule", 1), ("Namespace", 1)):
        check(len(kinds.get(kind, [])) >= n, "deploy: want %d %s, found %d" % (n, kind, len(kinds.get(kind, []))))

    cm = one("ConfigMap", "relayq-config") or {}
    data = cm.get("data", {})
    check(data.get("QUEUE_TYPE") == "quorum", "deploy: ConfigMap QUEUE_TYPE is not quorum")
    for k in data:
        check(not settings or k in settings, "deploy: ConfigMap key %s is not a relayq setting" % k)
    check(data.get("RABBITMQ_HOST") == "relayq-rabbitmq", "deploy: RABBITMQ_HOST is not the RabbitmqCluster service")
    addrs = [a.strip() for a in data.get("RABBITMQ_ADDRESSES", "").split(",") if a.strip()]
    want = ["relayq-rabbitmq-server-%d.relayq-rabbitmq-nodes.relayq.svc:5672" % i for i in range(3)]
    check(addrs == want, "deploy: RABBITMQ_ADDRESSES does not list the 3 RabbitmqCluster pods: %s" % addrs)
    check(data.get("RABBITMQ_ADDRESS_ORDER") == "shuffle", "deploy: RABBITMQ_ADDRESS_ORDER is not shuffle")
    secret = one("Secret", "relayq-rabbitmq-credentials") or {}
    skeys = set((secret.get("stringData") or {}).keys()) | set((secret.get("data") or {}).keys())
    check({"username", "password", "amqp-uri"} <= skeys, "deploy: Secret lacks username/password/amqp-uri")

    rc = (kinds.get("RabbitmqCluster") or [{}])[0]
    check(rc.get("spec", {}).get("replicas") == 3, "deploy: RabbitmqCluster replicas is not 3")
    check(rc.get("metadata", {}).get("name") == "relayq-rabbitmq", "deploy: RabbitmqCluster is not named relayq-rabbitmq")

    services = {d["metadata"]["name"]: d for d in kinds.get("Service", [])}
    for name, port, pname in (("relayq-producer", 5000, "http"), ("relayq-consumer", 8000, "metrics")):
        dep = one("Deployment", name)
        if not check(dep is not None, "deploy: Deployment %s missing" % name):
            continue
        spec = dep["spec"]
        tpl = spec["template"]
        check(spec["selector"]["matchLabels"].items() <= tpl["metadata"]["labels"].items(),
              "deploy: %s selector does not match its pod labels" % name)
        psc = tpl["spec"].get("securityContext", {})
        check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0,
              "deploy: %s pod securityContext is not non-root" % name)
        if name == "relayq-consumer":
            # exec handlers: a command's orphaned grandchildren go to PID 1, which the consumer
            # must not be (it reaps only its own children); compose has init: true for it
            check(tpl["spec"].get("shareProcessNamespace") is True,
                  "deploy: relayq-consumer would be PID 1 (no shareProcessNamespace): an exec "
                  "handler's orphans would stay zombies")
        cs = tpl["spec"]["containers"]
        check(len(cs) == 1, "deploy: %s has %d containers" % (name, len(cs)))
        c = cs[0]
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
        check(ports.get(pname) == port, "deploy: %s does not expose %s %d" % (name, pname, port))
        lp = c.get("livenessProbe", {}).get("httpGet", {})
        rp = c.get("readinessProbe", {}).get("httpGet", {})
        check(lp.get("path") == "/health/live" and lp.get("port") in (pname, port),
              "deploy: %s livenessProbe is not /health/live on its port" % name)
        check(rp.get("path") == "/health/ready" and rp.get("port") in (pname, port),
              "deploy: %s readinessProbe is not /health/ready on its port" % name)
        res = c.get("resources", {})
        check(res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory")
              and res.get("limits", {}).get("memory"), "deploy: %s lacks resource requests/limits" % name)
        csc = c.get("securityContext", {})
        check(csc.get("allowPrivilegeEscalation") is False and "ALL" in csc.get("capabilities", {}).get("drop", []),
              "deploy: %s container securityContext allows escalation or keeps capabilities" % name)
        check(any(e.get("configMapRef", {}).get("name") == "relayq-config" for e in c.get("envFrom", [])),
              "deploy: %s does not read the ConfigMap" % name)
        secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c.get("env", [])
                      if "secretKeyRef" in e.get("valueFrom", {})}
        check(set(secret_env) >= {"RABBITMQ_USER", "RABBITMQ_PASS"}, "deploy: %s takes no credentials from the Secret" % name)
        for ref in secret_env.values():
            check(ref.get("name") == "relayq-rabbitmq-credentials" and ref.get("key") in skeys,
                  "deploy: %s refers to a missing secret key %s" % (name, ref))
        svc = services.get(name)
        if check(svc is not None, "deploy: Service %s missing" % name):
            sel = svc["spec"]["selector"]
            check(sel.items() <= tpl["metadata"]["labels"].items(), "deploy: Service %s selects no pod" % name)
            check(any(p.get("port") == port for p in svc["spec"]["ports"]), "deploy: Service %s lacks port %d" % (name, port))
    cons = one("Deployment", "relayq-consumer") or {}
    aff = cons.get("spec", {}).get("template", {}).get("spec", {}).get("affinity", {})
    terms = aff.get("podAntiAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])
    check(any(t.get("podAffinityTerm", {}).get("topologyKey") == "kubernetes.io/hostname" and
              t["podAffinityTerm"].get("labelSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
              == "relayq-consumer" for t in terms),
          "deploy: consumer pods have no anti-affinity by host")
    pdbs = {d["metadata"]["name"]: d for d in kinds.get("PodDisruptionBudget", [])}
    pdb = pdbs.get("relayq-consumer", {}).get("spec", {})
    check(pdb.get("maxUnavailable") == 1 and pdb.get("selector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
          == "relayq-consumer", "deploy: no PodDisruptionBudget (maxUnavailable 1) for the consumers")
    prod = one("Deployment", "relayq-producer")
    if prod:
        check(prod["spec"].get("replicas") == 1, "deploy: producer replicas is not 1 (a tailed file is not shareable)")
        check(prod["spec"].get("strategy", {}).get("type") == "Recreate", "deploy: producer strategy is not Recreate")

    so = (kinds.get("ScaledObject") or [{}])[0].get("spec", {})
    check(so.get("scaleTargetRef", {}).get("name") == "relayq-consumer", "deploy: ScaledObject does not scale relayq-consumer")
    trig = [t for t in so.get("triggers", []) if t.get("type") == "rabbitmq"]
    if check(trig, "deploy: ScaledObject has no rabbitmq trigger"):
        md = trig[0].get("metadata", {})
        check(md.get("queueName") == data.get("REQUEST_QUEUE", "request_queue"), "deploy: KEDA trigger watches another queue")
        check(md.get("mode") == "QueueLength" and str(md.get("value", "")).isdigit(), "deploy: KEDA trigger is not QueueLength")
        ta = one("TriggerAuthentication", trig[0].get("authenticationRef", {}).get("name", ""))
        if check(ta is not None, "deploy: KEDA authenticationRef names no TriggerAuthentication"):
            for ref in ta["spec"].get("secretTargetRef", []):
                check(ref.get("name") == "relayq-rabbitmq-credentials" and ref.get("key") in skeys,
                      "deploy: TriggerAuthentication refers to a missing secret key")
    hpa = (kinds.get("HorizontalPodAutoscaler") or [{}])[0].get("spec", {})
    check(hpa.get("scaleTargetRef", {}).get("name") == "relayq-consumer", "deploy: HPA does not scale relayq-consumer")
    check(any(m.get("resource", {}).get("name") == "cpu" for m in hpa.get("metrics", [])), "deploy: HPA is not on CPU")

    sm_ports = {}
    for sm in kinds.get("ServiceMonitor", []):
        for ep in sm["spec"].get("endpoints", []):
            sm_ports[sm["metadata"]["name"]] = (sm["spec"]["selector"].get("matchLabels", {}), ep.get("port"), ep.get("path"))
    for name in ("relayq-producer", "relayq-consumer"):
        labels, port, path = sm_ports.get(name, ({}, None, None))
        svc = services.get(name, {})
        check(labels and labels.items() <= svc.get("metadata", {}).get("labels", {}).items(),
              "deploy: ServiceMonitor %s selects no Service" % name)
        check(port in [p.get("name") for p in svc.get("spec", {}).get("ports", [])] and path == "/metrics",
              "deploy: ServiceMonitor %s scrapes no named port's /metrics" % name)
    labels, port, path = sm_ports.get("relayq-rabbitmq", ({}, None, None))
    check(port == "prometheus" and labels.get("app.kubernetes.io/name") == "relayq-rabbitmq",
          "deploy: ServiceMonitor for RabbitMQ does not scrape the operator's prometheus port")

    # kustomizations refer to files and folders that exist
    for f, d in docs:
        if isinstance(d, dict) and d.get("kind") == "Kustomization":
            for r in d.get("resources", []):
                check(os.path.exists(os.path.join(ROOT, os.path.dirname(f), r)), "%s: resource %s does not exist" % (f, r))


def main():
    os.chdir(ROOT)
    settings = known_settings()
    for fn in (check_parse_all, lambda: check_compose(settings), check_dockerfile, check_prometheus, check_grafana,
               lambda: check_kubernetes(settings)):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a missing key is a failed check, not a crash
            check(False, "%s: %s: %s" % (getattr(fn, "__name__", "check"), type(e).__name__, e))
    print("check_files: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
