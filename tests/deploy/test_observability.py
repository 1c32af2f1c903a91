"""Prometheus scrape config, alert rules and the Grafana dashboard: well-formed, and they
query only metrics that exist (the app's, as declared in clipguard/prometheus.py, and Ray's)."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import yaml

from tests.deploy.kube import DEPLOY_DIR, KUBERAY_DIR, load_documents
from tests.deploy.metric_names import (
    RAY_NODE_METRICS,
    declared_app_metrics,
    known_metric_names,
    metric_names_in,
    parsed_metric_names,
    substitute_grafana_variables,
)

DASHBOARD = DEPLOY_DIR / "grafana" / "clipguard-dashboard.json"
PROM_DIR = DEPLOY_DIR / "prometheus"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"] for rule in group["rules"]
    ]


def recorded_names() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def test_app_metrics_declared_in_pipeline_metrics():
    declared = declared_app_metrics()
    assert declared, "clipguard/prometheus.py declares no ray.util.metrics metric"
    assert all(name.startswith("clipguard_") for name in declared)


def test_ray_reports_the_node_gpu_metrics_the_dashboard_uses():
    from ray.dashboard.consts import GPU_TAG_KEYS
    from ray.dashboard.modules.reporter.reporter_agent import METRICS_GAUGES

    assert set(RAY_NODE_METRICS.values()) <= set(METRICS_GAUGES)
    assert "GpuIndex" in GPU_TAG_KEYS  # the dashboard groups GPUs by it


# --- Grafana ---------------------------------------------------------------------------------------


def test_dashboard_is_a_well_formed_grafana_dashboard():
    dash = dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        covered = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize(("title", "expr"), dashboard_exprs(), ids=lambda v: v if len(v) < 40 else None)
def test_dashboard_queries_only_known_metrics(title, expr):
    used = metric_names_in(expr)
    assert used, f"{title}: no metric in {expr}"
    assert used <= known_metric_names(), f"{title}: unknown {used - known_metric_names()}"


def test_dashboard_queries_parse_as_promql():
    import promql_parser  # noqa: F401 - a dev dependency: PromQL syntax is always checked

    for title, expr in dashboard_exprs():
        names = parsed_metric_names(substitute_grafana_variables(expr))
        assert names <= known_metric_names(), f"{title}: {names - known_metric_names()}"


@pytest.mark.parametrize(
    ("what", "pattern"),
    [
        ("throughput by status", r"sum by \(status\) \(rate\(ray_clipguard_videos_out_total"),
        *[
            (f"latency p{q}", rf"histogram_quantile\(0\.{q}, sum by \(le, stage\) \(rate\(ray_clipguard_stage_latency")
            for q in ("5", "95", "99")
        ],
        ("batch fill", r"ray_clipguard_batch_fill_ratio_bucket"),
        ("consumer lag", r"ray_clipguard_consumer_lag"),
        ("queue depth", r"ray_clipguard_queue_depth"),
        ("errors by kind", r"sum by \(kind\) \(rate\(ray_clipguard_errors_total"),
        ("GPU utilisation", r"ray_node_gpus_utilization"),
        ("pool sizes", r"by \(stage\) \(ray_clipguard_pool_size"),
    ],
)
def test_dashboard_charts(what, pattern):
    assert any(re.search(pattern, expr) for _, expr in dashboard_exprs()), what


# --- alert and recording rules -----------------------------------------------------------------------


def test_rule_file_is_well_formed():
    groups = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    assert len({g["name"] for g in groups}) == len(groups)
    for group in groups:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group["name"]
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "record" in rule:
                assert set(rule) <= {"record", "expr", "labels"}, rule
                assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]
            else:
                assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
                assert re.fullmatch(r"Clipguard[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
                assert DURATION.match(rule["for"]), rule["alert"]
                assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
                assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    alerts = [r["alert"] for r in rules() if "alert" in r]
    assert len(alerts) == len(set(alerts))


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r.get("alert") or r.get("record"))
def test_rules_query_only_known_metrics(rule):
    allowed = known_metric_names() | recorded_names()
    used = metric_names_in(rule["expr"])
    assert used and used <= allowed, used - allowed
    try:
        parsed = parsed_metric_names(rule["expr"])
    except ImportError:
        return
    assert parsed <= allowed, parsed - allowed


@pytest.mark.parametrize(
    ("alert", "must_use"),
    [
        ("ClipguardConsumerLagGrowing", {"deriv(", "clipguard:consumer_lag:sum"}),
        ("ClipguardErrorRateHigh", {'status="error"'}),
        ("ClipguardNoVerdicts", {"ray_clipguard_videos_out_total[10m]", "clipguard:consumer_lag:sum"}),
        ("ClipguardDetectorsSaturated", {"ray_clipguard_pool_size", "deriv("}),
        ("ClipguardStreamDown", {"absent_over_time("}),
    ],
)
def test_required_alerts_exist(alert, must_use):
    (rule,) = [r for r in rules() if r.get("alert") == alert]
    for fragment in must_use:
        assert fragment in rule["expr"], (alert, fragment)


def test_detector_saturation_threshold_is_the_gpu_groups_max():
    (rule,) = [r for r in rules() if r.get("alert") == "ClipguardDetectorsSaturated"]
    threshold = int(re.search(r"ray_clipguard_pool_size\{[^}]*\}\) >= (\d+)", rule["expr"]).group(1))
    (cluster,) = [d for d in load_documents(KUBERAY_DIR / "raycluster.yaml") if d["kind"] == "RayCluster"]
    (gpu,) = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu-workers"]
    assert threshold == gpu["maxReplicas"] * int(gpu["rayStartParams"]["num-gpus"])


def test_prometheusrule_is_generated_from_alerts_yml():
    spec = importlib.util.spec_from_file_location("make_prometheusrule", PROM_DIR / "make_prometheusrule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (PROM_DIR / "prometheusrule.yaml").read_text() == module.render(), "rerun make_prometheusrule.py"
    (doc,) = load_documents(PROM_DIR / "prometheusrule.yaml")
    assert (
        doc["kind"] == "PrometheusRule"
        and doc["spec"]["groups"] == yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    )


# --- scraping ------------------------------------------------------------------------------------------


def test_prometheus_config_scrapes_ray_nodes_and_loads_the_rules():
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (PROM_DIR / rule_file).is_file()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    k8s = jobs["clipguard-ray"]
    keeps = {(tuple(r["source_labels"]), r["regex"]) for r in k8s["relabel_configs"] if r.get("action") == "keep"}
    assert (("__meta_kubernetes_pod_label_ray_io_is_ray_node",), "yes") in keeps
    assert (("__meta_kubernetes_pod_container_port_name",), "metrics") in keeps
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    (files,) = [sd["files"] for sd in jobs["clipguard-ray-vm"]["file_sd_configs"]]
    assert files == [f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]


def test_podmonitor_selects_the_ray_pods_on_their_metrics_port():
    (monitor,) = load_documents(PROM_DIR / "podmonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.pop("ray.io/is-ray-node") == "yes"  # set by KubeRay on every Ray pod
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    for path in ("raycluster.yaml", "rayjob-train.yaml"):
        for doc in load_documents(KUBERAY_DIR / path):
            spec = doc["spec"].get("rayClusterSpec", doc["spec"])
            groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
            for group in groups:
                labels = group["template"]["metadata"]["labels"]
                assert selector.items() <= labels.items(), (path, labels)
                ports = {p["name"]: p["containerPort"] for p in group["template"]["spec"]["containers"][0]["ports"]}
                assert ports["metrics"] == int(group["rayStartParams"]["metrics-export-port"])


def test_unknown_metric_or_broken_promql_is_caught():
    known = known_metric_names()
    assert not metric_names_in("sum(rate(ray_clipguard_verdicts_writen_total[5m]))") <= known
    assert not metric_names_in("clipguard:lag:sum > 0") <= known | recorded_names()
    import promql_parser

    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(ray_clipguard_videos_in_total[5m])")
