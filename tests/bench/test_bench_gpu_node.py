"""The GPU node benchmark runs end to end as a 2-video smoke test on the CPU (no Kafka, Redis or Ray)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import bench_gpu_node
from bench.gpu_clips import load_clip_set


@pytest.mark.timeout(300)
def test_smoke_run_makes_clips_and_writes_every_table(tmp_path):
    out = tmp_path / "gpu_node.md"
    assert bench_gpu_node.main(["--smoke", "--make-clips", str(tmp_path / "clips"), "--out", str(out)]) == 0
    clips = load_clip_set(tmp_path / "clips")  # the recorded probes load back
    assert len(clips.names) == 2 and clips.probes[clips.names[0]].info.codec == "h264"
    text = out.read_text()
    for title in ("Decode alone", "Faces on cpu", "Detector alone", "Today's CPU face stage", "Whole path on cpu",
                  "Targets (issue 13)"):  # fmt: skip
        assert f"### {title}" in text
    assert "**failed**" not in text and "| failed |" not in text
    whole = next(line for line in text.splitlines() if line.startswith("| 2 decode workers"))
    assert float(whole.split("|")[2]) > 0  # videos/s
    assert "n/a (not a GPU run)" in text  # no GPU target is claimed from a CPU run


def test_device_run_preparation_pins_every_wheel_from_the_locks():
    """prepare_gpu_run.sh downloads exact versions from requirements/*.lock (nothing resolved there)."""
    script = Path(__file__).resolve().parents[2] / "bench" / "prepare_gpu_run.sh"
    pins = subprocess.run(["bash", str(script), "--pins"], capture_output=True, text=True, check=True).stdout.split()
    names = {pin.split("==")[0].lower() for pin in pins}
    assert all("==" in pin and pin.split("==")[1] for pin in pins)
    assert {"open-clip-torch", "onnx2torch", "insightface", "pynvvideocodec", "pydantic-core"} <= names
