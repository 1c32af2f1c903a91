"""Write prometheusrule.yaml (Prometheus Operator) from alerts.yml, so the two never drift.

Run from the repository root: ``python deploy/prometheus/make_prometheusrule.py``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
HEADER = """\
# GENERATED from alerts.yml by make_prometheusrule.py - edit alerts.yml, then rerun
#   python deploy/prometheus/make_prometheusrule.py
# (tests/deploy fail while the two differ). The Prometheus Operator form of the same
# rules; the `release` label must match your Prometheus' ruleSelector.
"""


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, as written by hand."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def render() -> str:
    groups = yaml.safe_load((HERE / "alerts.yml").read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "clipguard",
            "namespace": "clipguard",
            "labels": {"app.kubernetes.io/name": "clipguard", "release": "kube-prometheus-stack"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(rule, Dumper=_BlockDumper, sort_keys=False, width=100, allow_unicode=True)


def main() -> None:
    (HERE / "prometheusrule.yaml").write_text(render())


if __name__ == "__main__":
    main()
