#!/usr/bin/env python3
"""Regenerate k8s/monitoring/operator/prometheusrule.yaml from k8s/monitoring/wardgate-rules.yaml.

The plain rule file is the source (promtool checks and tests it); the PrometheusRule carries the
same groups for the Prometheus Operator. `--check` exits 1 if the committed file is stale.
"""
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "k8s/monitoring/wardgate-rules.yaml"
DST = ROOT / "k8s/monitoring/operator/prometheusrule.yaml"

HEADER = """\
# Prometheus Operator form of ../wardgate-rules.yaml: spec.groups MUST equal that file's groups
# (.ci/validate-deploy.sh fails otherwise). Edit the rule file, then regenerate this one:
#   python3 .ci/gen-prometheusrule.py
# `release: prometheus`: EDIT to match your Prometheus' ruleSelector.
"""


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


Dumper.add_representer(str, _str)


def render() -> str:
    rules = yaml.safe_load(SRC.read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "wardgate",
            "namespace": "wardgate",
            "labels": {
                "app.kubernetes.io/name": "wardgate",
                "app.kubernetes.io/part-of": "wardgate",
                "release": "prometheus",
            },
        },
        "spec": rules,
    }
    return HEADER + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=200)


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        have = yaml.safe_load(DST.read_text())
        if have.get("spec") != yaml.safe_load(SRC.read_text()):
            print(f"{DST.relative_to(ROOT)} is stale: run python3 .ci/gen-prometheusrule.py", file=sys.stderr)
            return 1
        return 0
    DST.write_text(text)
    print(f"wrote {DST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
