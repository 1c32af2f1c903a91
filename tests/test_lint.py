"""The code stays as `ruff` (pinned in the dev extra, configured in pyproject.toml) wants it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clipguard.assets import REPO_ROOT


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["check", "format"])
def test_ruff(args):
    done = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
