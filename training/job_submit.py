"""``clipguard train --submit``: the training job submitted to a Ray cluster with a named interpreter.

``ray job submit -- python training/train.py`` runs ``python`` from the PATH of the shell
that started the cluster (``ray start``), which is often not the environment that has
Ray, torch and clipguard installed: the job then dies with ``No module named 'ray'``.
Submitting through the job SDK lets the entrypoint name its interpreter: by default this
process's own (``sys.executable``), right for a cluster started from this environment on
this machine; ``--python`` names another (the container image's, on a remote cluster).

What is checked here, before anything is uploaded: the config and ``--set`` overrides
validate; the config file lies inside the uploaded working directory (the job reads it
there); ``data.crops`` and ``run.storage_path`` are absolute (the job's working directory is
a temporary copy of the code, not of the data, and checkpoints written there would vanish).
The job's log is streamed to the console and a failed job is an error.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clipguard.errors import ClipguardError, ConfigError
from training.train_config import TrainConfig, load_train_config

ENTRYPOINT_SCRIPT = "training/train.py"
# Never uploaded (besides what .gitignore excludes, which Ray honours): environments and git history.
UPLOAD_EXCLUDES = [".git", ".venv", "**/__pycache__"]


@dataclass(frozen=True)
class JobRequest:
    """One training job to submit."""

    address: str | None  # dashboard URL (http://head:8265) or a Ray address; None: RAY_ADDRESS, else the local Ray
    python: str  # the interpreter the job's entrypoint runs
    working_dir: Path  # uploaded as the job's working directory
    config: Path | None
    overrides: tuple[str, ...]
    extra_args: tuple[str, ...] = ()  # passed through to train.py (--resume, --log-format ...)
    submission_id: str | None = None


def check_submittable(request: JobRequest) -> TrainConfig:
    """Validate the config as the job will, and the paths a job needs absolute.

    Raises:
        ConfigError: an invalid config, a config file outside the working directory, or a relative path
            the job cannot use.
    """
    cfg = load_train_config(request.config, request.overrides)
    if request.config is not None:
        try:
            request.config.resolve().relative_to(request.working_dir.resolve())
        except ValueError as exc:
            msg = f"--config {request.config} is outside the uploaded working directory {request.working_dir}"
            raise ConfigError(msg) from exc
    paths = {
        "data.crops": cfg.data.crops,
        "run.storage_path": cfg.run.storage_path,
        "run.export_dir": cfg.run.export_dir,
    }
    relative = [f"{name}={path}" for name, path in paths.items() if path is not None and not path.is_absolute()]
    if relative:
        msg = (
            f"a submitted job needs absolute paths that every node can read (shared storage), got {relative}: "
            "e.g. --set data.crops=/shared/data/crops.csv --set run.storage_path=/shared/runs"
        )
        raise ConfigError(msg)
    return cfg


def entrypoint(request: JobRequest) -> str:
    """The job's shell command: the named interpreter running ``training/train.py`` with the same arguments."""
    args = [request.python, ENTRYPOINT_SCRIPT]
    if request.config is not None:
        args += ["--config", request.config.resolve().relative_to(request.working_dir.resolve()).as_posix()]
    for override in request.overrides:
        args += ["--set", override]
    return shlex.join([*args, *request.extra_args])


def submit_training(request: JobRequest, echo: Callable[[str], None], *, wait: bool = True) -> str:
    """Submit the job, stream its log until it ends, and return its submission id.

    Raises:
        ConfigError: the request does not validate (nothing is submitted).
        ClipguardError: the cluster cannot be reached, or the job did not succeed.
    """
    check_submittable(request)
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobStatus, JobSubmissionClient

    where = request.address or "RAY_ADDRESS / the local Ray"
    try:
        client = JobSubmissionClient(request.address)
    except AuthenticationError as exc:
        msg = (
            f"the Ray cluster at {where} wants its token (Ray >= 2.59 turns token auth on for `ray start`): "
            "export RAY_AUTH_MODE=token in this shell; the token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN"
        )
        raise ClipguardError(msg, kind="job_submit") from exc
    except (ConnectionError, RuntimeError, ValueError) as exc:
        msg = f"cannot reach the Ray cluster's job server at {where}: {exc}"
        raise ClipguardError(msg, kind="job_submit") from exc
    command = entrypoint(request)
    job_id = client.submit_job(
        entrypoint=command,
        runtime_env={"working_dir": str(request.working_dir), "excludes": UPLOAD_EXCLUDES},
        submission_id=request.submission_id,
    )
    echo(f"submitted {job_id}: {command}")
    if not wait:
        return job_id
    asyncio.run(_stream_logs(client, job_id, echo))
    status = client.get_job_status(job_id)
    while not status.is_terminal():  # the log stream can end a moment before the status does
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    if status != JobStatus.SUCCEEDED:
        reason = (client.get_job_info(job_id).message or "").strip().splitlines()
        msg = f"training job {job_id} ended {status.value}: {reason[0] if reason else 'no reason given'} (log above)"
        raise ClipguardError(msg, kind="job_failed")
    return job_id


async def _stream_logs(client, job_id: str, echo: Callable[[str], None]) -> None:
    async for lines in client.tail_job_logs(job_id):
        echo(lines.rstrip("\n"))


def default_python() -> str:
    """This process's interpreter: the environment ``clipguard`` itself runs in."""
    return sys.executable


def passthrough_args(resume: bool, log_format: str, log_level: str) -> tuple[str, ...]:
    """The train.py flags besides --config/--set that a submitted job keeps."""
    return (*(["--resume"] if resume else []), "--log-format", log_format, "--log-level", log_level)
