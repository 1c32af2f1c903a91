"""The names the dashboard and alerts query are the names Ray really exports.

Starts a one-CPU local Ray in a subprocess with a metrics export port, records every
metric of ``clipguard.prometheus.StreamMetrics`` once from inside an actor, scrapes Ray's
Prometheus endpoint and compares. Catches a renamed metric, a counter named without
Ray's ``_total`` convention in mind, or a change of Ray's prefixing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap

from tests.deploy.kube import REPO_ROOT
from tests.deploy.metric_names import declared_app_metrics, exported_names

SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, sys, time, urllib.request
    import ray
    from ray.util.metrics import Counter, Gauge, Histogram

    port, expected = int(sys.argv[1]), set(json.loads(sys.argv[2]))
    ray.init(num_cpus=1, include_dashboard=False, _metrics_export_port=port, log_to_driver=False)

    @ray.remote(num_cpus=0)
    class Recorder:
        def __init__(self):
            from clipguard.prometheus import StreamMetrics
            self.metrics = StreamMetrics.create()

        def record(self):
            for field in dataclasses.fields(self.metrics):
                metric = getattr(self.metrics, field.name)
                tags = {key: "x" for key in getattr(metric, "_tag_keys", ())}
                if isinstance(metric, Counter):
                    metric.inc(tags=tags)
                elif isinstance(metric, Gauge):
                    metric.set(1, tags=tags)
                elif isinstance(metric, Histogram):
                    metric.observe(0.5, tags=tags)

    recorder = Recorder.remote()
    names = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not expected <= names:
        ray.get(recorder.record.remote())
        time.sleep(2)
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            continue
        names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("ray_clipguard")}
    print(json.dumps(sorted(names)))
    ray.shutdown()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_exports_the_app_metrics_under_the_names_we_query():
    expected = set()
    for name, kind in declared_app_metrics().items():
        expected |= exported_names(name, kind)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    # Its own temp dir: no clash with another Ray here. Short, since Ray's socket paths live
    # under it and AF_UNIX paths are limited to 107 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="cgray", dir="/tmp")
    env["RAY_TMPDIR"] = ray_tmp
    try:
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(free_port()), json.dumps(sorted(expected))],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=REPO_ROOT,
            env=env,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    exported = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert expected <= exported, f"missing {sorted(expected - exported)}; Ray exported {sorted(exported)}"
