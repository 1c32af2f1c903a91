"""`clipguard train --submit`, what is decided before anything is uploaded (the job itself: test_train_ray.py)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from clipguard.errors import ConfigError
from training.cli import train_command
from training.job_submit import JobRequest, check_submittable, default_python, entrypoint, passthrough_args

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "training" / "configs" / "tiny-cpu.yaml"


def request(tmp_path: Path, *overrides: str, config: Path = TINY, **changes) -> JobRequest:
    absolute = (f"data.crops={tmp_path / 'crops.csv'}", f"run.storage_path={tmp_path / 'runs'}")
    fields = {"address": None, "python": "/opt/env/bin/python", "working_dir": REPO, "config": config,
              "overrides": (*absolute, *overrides), **changes}  # fmt: skip
    return JobRequest(**fields)


def test_the_entrypoint_names_the_interpreter_and_keeps_every_argument(tmp_path):
    job = request(tmp_path, "optim.lr=3e-2", extra_args=passthrough_args(True, "json", "DEBUG"))
    assert check_submittable(job).optim.lr == 3e-2
    args = shlex.split(entrypoint(job))
    assert args[:4] == ["/opt/env/bin/python", "training/train.py", "--config", "training/configs/tiny-cpu.yaml"]
    sets = [f"data.crops={tmp_path / 'crops.csv'}", f"run.storage_path={tmp_path / 'runs'}", "optim.lr=3e-2"]
    assert args[4:10] == [part for value in sets for part in ("--set", value)]
    assert args[10:] == ["--resume", "--log-format", "json", "--log-level", "DEBUG"]
    assert default_python() == sys.executable  # this environment's interpreter, unless --python names another


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("data.crops=data/crops.csv",), r"data.crops=data/crops.csv"),
        (("run.storage_path=runs",), r"run.storage_path=runs"),
        (("run.export_dir=export",), r"run.export_dir=export"),
        (("optim.lr_mx=1",), r"optim.lr_mx"),
    ],
)
def test_what_a_job_cannot_use_is_refused_before_upload(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_submittable(request(tmp_path, *overrides))


def test_a_config_outside_the_uploaded_folder_is_refused(tmp_path):
    outside = tmp_path / "mine.yaml"
    outside.write_text(TINY.read_text())
    with pytest.raises(ConfigError, match="outside the uploaded working directory"):
        check_submittable(request(tmp_path, config=outside))


def test_submit_only_options_without_submit_are_a_usage_error():
    result = CliRunner().invoke(train_command, ["--python", "/usr/bin/python3"])
    assert result.exit_code == 2 and "only apply with --submit" in result.output
