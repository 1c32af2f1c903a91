"""deploy/docker/image_smoke_test.py, the image's smoke test, run on this environment (installed from
the same runtime lock as the image): it passes for the CPU variant, and its GPU check is real."""

from __future__ import annotations

import subprocess
import sys

from tests.deploy.kube import DEPLOY_DIR, REPO_ROOT

SMOKE_TEST = DEPLOY_DIR / "docker" / "image_smoke_test.py"


def _smoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SMOKE_TEST), *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=300)  # fmt: skip


def test_smoke_test_passes_on_the_locked_environment():
    result = _smoke("--variant", "cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("image smoke test passed: imported cv2, insightface, onnxruntime, torch, open_clip, ray")
    assert "(headless," in summary and "none GUI" in summary  # cv2's extension links no libGL / X11
    assert "tiny detector scored one crop" in summary


def test_gpu_variant_check_fails_where_the_gpu_layer_is_not_installed():
    result = _smoke("--variant", "cuda")  # the dev machine has no PyNvVideoCodec (requirements/gpu.lock)
    assert result.returncode != 0
    assert "PyNvVideoCodec is not installed" in result.stderr
