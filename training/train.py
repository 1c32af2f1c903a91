"""Train the deepfake detector with Ray Train, then export the best checkpoint for the stream.

On a cluster::

    ray job submit --working-dir . -- python training/train.py --config training/configs/paper.yaml \\
        --set data.crops=/data/ffpp-crops/crops.csv --set run.storage_path=/shared/runs --set run.num_workers=8 \\
        --set run.use_gpu=true

On a laptop: ``python training/train.py --config training/configs/tiny-cpu.yaml --set data.crops=...``.
In a Ray job, ``run.storage_path`` must be absolute (shared storage): the job's
working directory is a temporary copy, and a relative path is refused there.

The run lives in ``<run.storage_path>/<run.name>``: Ray Train's checkpoints (the
best by ``val_video_map`` and the latest), ``train_log.csv``, and ``export/``
with the best checkpoint in the detector-core format
(``clipguard run --model-checkpoint <run dir>/export/detector.safetensors``).
A worker failure restarts the worker group from the latest checkpoint
(``run.max_failures`` times); a stopped run continues with ``--resume`` (same
storage path and name: Ray Train 2.60 restores a run from its storage folder;
``TorchTrainer.restore`` is deprecated there).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ray.train import CheckpointConfig, FailureConfig, Result, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from clipguard.cli_main import run_click_command
from clipguard.config import LogConfig
from clipguard.errors import ConfigError
from clipguard.logging_setup import configure_logging, ray_logging_args
from clipguard.ray_connection import ray_connection
from training.crop_dataset import load_splits
from training.export import export_best
from training.pair_sampler import pair_crops
from training.train_config import SELECTION_METRIC, TrainConfig, load_train_config
from training.train_loop import train_loop_per_worker

logger = logging.getLogger("training.train")


def _in_job_working_dir() -> bool:
    """True for a `ray job submit --working-dir` entrypoint, whose working directory is a temporary copy."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # set by Ray's job supervisor for the entrypoint
    return bool(raw) and "working_dir" in json.loads(raw).get("runtime_env", {})


def with_absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """Resolve every path against the driver's working directory (workers run elsewhere).

    Raises:
        ConfigError: a relative output path inside a Ray job's uploaded working
            directory, where checkpoints would vanish with the job's temporary copy.
    """
    outputs = {"run.storage_path": cfg.run.storage_path, "run.export_dir": cfg.run.export_dir}
    relative = [name for name, path in outputs.items() if path is not None and not path.is_absolute()]
    if relative and _in_job_working_dir():
        msg = f"{relative} must be absolute (shared storage) in a Ray job: its working directory is a temporary copy"
        raise ConfigError(msg)
    fault = cfg.fault
    if fault.marker is not None:
        fault = fault.model_copy(update={"marker": fault.marker.resolve()})
    export = cfg.run.export_dir.resolve() if cfg.run.export_dir is not None else None
    return cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"crops": cfg.data.crops.resolve()}),
            "run": cfg.run.model_copy(update={"storage_path": cfg.run.storage_path.resolve(), "export_dir": export}),
            "fault": fault,
        }
    )


def check_run_dir(cfg: TrainConfig, *, resume: bool) -> None:
    """A new run must not reuse a name by accident; ``--resume`` must find something to resume."""
    exists = cfg.run_dir.is_dir() and any(cfg.run_dir.iterdir())
    if exists and not resume:
        msg = f"run folder {cfg.run_dir} already exists: pass --resume to continue it, or choose another run.name"
        raise ConfigError(msg)
    if resume and not exists:
        msg = f"--resume: no run at {cfg.run_dir} (check run.storage_path and run.name)"
        raise ConfigError(msg)


def check_data(cfg: TrainConfig) -> None:
    """Refuse a missing or unusable crop manifest here, in one line, before any worker starts.

    The workers would fail the same way, but only after Ray Train has created the run
    folder and retried ``max_failures`` times, burying the reason in worker tracebacks.
    """
    train_rows, _ = load_splits(cfg.data.crops, cfg.data.train_split, cfg.data.val_split)
    if cfg.data.sampling == "pairs":
        pairs = pair_crops(train_rows)
        if not pairs.pairs:
            msg = (
                f"data.sampling=pairs: {cfg.data.crops} has no (real, fake) crop pairs of one source video in split "
                f"{cfg.data.train_split!r} (source_video column); use --set data.sampling=shuffle"
            )
            raise ConfigError(msg)
        logger.info("pair sampling: %s", pairs.summary())


def run_training(cfg: TrainConfig, *, resume: bool = False) -> Result:
    """Fit with Ray Train (Ray must be initialised); the config's paths must be absolute."""
    check_run_dir(cfg, resume=resume)
    check_data(cfg)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=cfg.model_dump(mode="json"),
        scaling_config=ScalingConfig(
            num_workers=cfg.run.num_workers,
            use_gpu=cfg.run.use_gpu,
            resources_per_worker={"CPU": cfg.run.cpus_per_worker, **({"GPU": 1} if cfg.run.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=str(cfg.run.storage_path),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.run.num_to_keep,
                checkpoint_score_attribute=SELECTION_METRIC,  # validation split only, never test
                checkpoint_score_order="max",
            ),
        ),
    )
    return trainer.fit()


def train_and_export(
    config: Path | None,
    overrides: Sequence[str] = (),
    *,
    resume: bool = False,
    ray_address: str | None = None,
    log: LogConfig | None = None,
) -> tuple[Path, dict]:
    """Load the config, train on Ray, export the best checkpoint; what ``train.py`` and ``clipguard train`` run.

    Returns:
        (exported ``detector.safetensors``, the metrics reported with it).
    """
    cfg = with_absolute_paths(load_train_config(config, overrides))
    check_run_dir(cfg, resume=resume)  # both before Ray starts: a wrong path fails in a second
    check_data(cfg)
    # address None: RAY_ADDRESS (set inside `ray job submit`) or a local Ray; workers log like this driver.
    with ray_connection(address=ray_address, **ray_logging_args(log or LogConfig())):
        result = run_training(cfg, resume=resume)
    exported, metrics = export_best(result.best_checkpoints or [], cfg.export_dir)
    logger.info(
        "best checkpoint (epoch %s, %s %.4f) exported to %s",
        metrics.get("epoch"),
        SELECTION_METRIC,
        metrics[SELECTION_METRIC],
        exported,
    )
    return exported, metrics


def main(argv: Sequence[str] | None = None) -> int:
    """``python training/train.py ARGS`` runs ``clipguard train ARGS``: one set of flags, in training/cli.py."""
    from training.cli import train_command

    configure_logging(LogConfig())  # until the command applies its --log-format/--log-level
    return run_click_command(train_command, argv, prog_name="training/train.py")


if __name__ == "__main__":
    sys.exit(main())
