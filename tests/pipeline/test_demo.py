"""`make demo` (README's main-job command): the whole stream on embedded services, a quiet console."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clipguard.assets import REPO_ROOT


@pytest.mark.slow
def test_demo_prints_progress_and_verdicts_and_sends_logs_to_the_file_it_names(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}  # demo videos and demo.log under ~/.cache/clipguard
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    table = proc.stdout.split("\n\nvideo ", 1)[1]
    for video, status in [("demo/astronaut_zoom.mp4", "done"), ("demo/sky_no_face.mp4", "no_face"),
                          ("demo/not_a_video.mp4", "error"), ("demo/../../etc/passwd", "error")]:  # fmt: skip
        assert any(line.startswith(video) and f" {status} " in line for line in table.splitlines()), table
    assert "dead letters: ['bad_message" in proc.stdout
    # Only the demo's own lines on the console: no log records (Ray's, Kafka's, ours) at INFO or WARNING.
    noise = [
        line for line in out.splitlines() if not line.startswith("[demo]") and (" INFO " in line or " WARNING " in line)
    ]
    assert not noise, noise
    log_file = tmp_path / ".cache" / "clipguard" / "demo.log"
    assert f"full logs: {log_file}" in proc.stdout
    assert "stream up: model" in log_file.read_text()
