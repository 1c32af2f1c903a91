"""The one-way layers (pyproject.toml [tool.importlinter]): clipguard < workers < pipeline | training."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from clipguard.assets import REPO_ROOT

PACKAGES = ("clipguard", "workers", "pipeline", "training")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # cwd first on sys.path: the packages under `root` are the ones analysed.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_layers_contract_holds():
    done = lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def _copy_tree(dest: Path) -> None:
    shutil.copy(REPO_ROOT / "pyproject.toml", dest / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.json"))


def test_an_upward_import_breaks_the_contract(tmp_path):
    _copy_tree(tmp_path)
    contracts = tmp_path / "clipguard" / "contracts.py"
    contracts.write_text(contracts.read_text() + "\nfrom workers import face_cropper  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and "clipguard.contracts -> workers.face_cropper" in done.stdout


def test_training_importing_the_stream_breaks_the_contract(tmp_path):
    _copy_tree(tmp_path)
    losses = tmp_path / "training" / "losses.py"
    losses.write_text(losses.read_text() + "\nimport pipeline.verdict_store  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "training.losses -> pipeline.verdict_store" in done.stdout
