"""Which Prometheus metric names exist, and which ones a PromQL expression uses.

The app's names come from ``clipguard/prometheus.py`` itself (read with ``ast``, no Ray
needed): Ray exports ``ray_<name>``, counters with a ``_total`` suffix, histograms as
``_bucket``/``_sum``/``_count``. Ray's own node metrics used by the dashboard are listed
here and checked against Ray's reporter in the tests.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.deploy.kube import REPO_ROOT

METRICS_MODULE = REPO_ROOT / "clipguard" / "prometheus.py"
RAY_NODE_METRICS = {"ray_node_gpus_utilization": "node_gpus_utilization", "ray_node_gram_used": "node_gram_used"}

# Grafana's built-in variables, replaced by something PromQL accepts before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def declared_app_metrics(module: Path = METRICS_MODULE) -> dict[str, str]:
    """``{name given to ray.util.metrics: "Counter" | "Gauge" | "Histogram"}``."""
    tree = ast.parse(module.read_text())
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            kind = node.func.id
            if kind in {"Counter", "Gauge", "Histogram"} and node.args and isinstance(node.args[0], ast.Constant):
                found[node.args[0].value] = kind
    return found


def exported_names(name: str, kind: str) -> set[str]:
    """The series names Ray's Prometheus endpoint shows for one metric."""
    if kind == "Counter":
        return {f"ray_{name.removesuffix('_total')}_total"}
    if kind == "Histogram":
        return {f"ray_{name}_bucket", f"ray_{name}_sum", f"ray_{name}_count"}
    return {f"ray_{name}"}


def known_metric_names() -> set[str]:
    names = set(RAY_NODE_METRICS)
    for name, kind in declared_app_metrics().items():
        names |= exported_names(name, kind)
    return names


def substitute_grafana_variables(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


_NAME = re.compile(r"(?<![\w:\"'])(ray_[A-Za-z0-9_]+|[a-z_]+:[A-Za-z0-9_:]+)(?![\w\"'])")


def metric_names_in(expr: str) -> set[str]:
    """Metric names an expression selects: ``ray_*`` series and ``level:metric:ops`` rules.

    Every name this project queries has one of those two shapes, so a name outside the
    known list shows up here; :func:`parsed_metric_names` double-checks with a real parser.
    """
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(_NAME.findall(without_strings))


def parsed_metric_names(expr: str) -> set[str]:
    """Names of every vector selector, by the promql_parser package (raises if it is absent)."""
    import promql_parser

    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
            return
        for attr in ("args", "expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attr, None)
            for item in child if isinstance(child, list) else [child]:
                if item is not None and not isinstance(item, str | int | float):
                    walk(item)

    walk(promql_parser.parse(expr))
    return names
