#!/usr/bin/python3
"""Writes deploy/base/prometheusrule.yaml from prometheus/alerts.yml (the one source of the
alert rules), so Kubernetes (Prometheus Operator) and compose alert on the same rules.
tests/ops/check_files.py fails when the two differ. Needs python3-yaml (/usr/bin/python3)."""
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "prometheus", "alerts.yml")
DST = os.path.join(ROOT, "deploy", "base", "prometheusrule.yaml")


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, s):
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


Dumper.add_representer(str, _str)


def render():
    with open(SRC) as f:
        rules = yaml.safe_load(f)
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "relayq", "labels": {"app.kubernetes.io/name": "relayq"}},
        "spec": rules,
    }
    head = ("# GENERATED from prometheus/alerts.yml by scripts/gen-prometheusrule.py: edit that file,\n"
            "# then run `make prometheusrule`. tests/ops/check_files.py fails when they differ.\n")
    return head + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=100, default_flow_style=False)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        with open(DST) as f:
            sys.exit(0 if f.read() == text else 1)
    with open(DST, "w") as f:
        f.write(text)
    print("wrote", os.path.relpath(DST, ROOT))
