"""One ``clipguard evaluate`` run, in order:

1. connect to Ray (:func:`clipguard.ray_connection.ray_connection`);
2. load every set, preparing raw video manifests first (:func:`training.prepare.prepare_videos`);
3. start the scoring actors once and score every set (and the validation set);
4. metrics per set and for the union; with ``calibrate``, thresholds from the validation set;
5. write scores.csv, the plots, report.json and (with ``calibrate``) the thresholds file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from clipguard.config import LogConfig, ModelConfig, ThresholdConfig, describe_video_score
from clipguard.errors import ConfigError
from clipguard.logging_setup import ray_logging_args
from clipguard.model.checkpoint import read_manifest
from clipguard.ray_connection import ray_connection
from clipguard.thresholds import (
    ThresholdsFile,
    check_identity,
    read_thresholds_file,
    thresholds_path_for,
    write_thresholds_file,
)
from training.calibration import Calibration, calibrate_thresholds
from training.eval_metrics import TPR_AT_FPR
from training.eval_report import console_table, plot_set, set_section, write_json, write_scores_csv
from training.eval_sets import PrepareSettings, SetSpec, load_set
from training.evaluate import SetResult, evaluate_set, start_scorers, union_result
from training.progress import Progress


@dataclass(frozen=True)
class EvalOptions:
    """Everything a run needs (the CLI builds it from its flags)."""

    model: ModelConfig
    sets: tuple[SetSpec, ...]
    out_dir: Path
    prepare: PrepareSettings  # also the video score: its face policy picks the crops, its pooling scores them
    split: str | None = None  # None: each set's default (a dataset's test split, a manifest's every row)
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int = 32
    val_set: SetSpec | None = None
    val_split: str | None = None  # None: a dataset's val split, a manifest's every row
    calibrate: bool = False
    target_fpr: float = 0.01
    target_fnr: float | None = None
    ray_address: str | None = None
    log: LogConfig = LogConfig()  # the driver's and the scoring actors' log format
    prepared_root: Path | None = None  # where video manifests and datasets are prepared; None: out_dir/prepared


@dataclass(frozen=True)
class EvalOutcome:
    """What the run wrote and found."""

    report: dict[str, Any]
    report_path: Path
    table: str
    thresholds_path: Path | None
    results: tuple[SetResult, ...] = ()  # the test sets (not the union, not the validation set)


def model_identity(model: ModelConfig, version: str) -> dict[str, Any]:
    """Arch, weights and version of the evaluated model (checkpoint manifest fields when there is one)."""
    ident: dict[str, Any] = {"arch": model.arch, "pretrained": model.pretrained, "model_version": version,
                             "checkpoint": None, "weights_sha256": None}  # fmt: skip
    if model.checkpoint is not None:
        manifest = read_manifest(model.checkpoint)
        ident.update(checkpoint=str(model.checkpoint.resolve()), weights_sha256=manifest.weights_sha256,
                     checkpoint_version=manifest.version, base_source=manifest.base_source, preset=manifest.preset,
                     checkpoint_created_at=manifest.created_at, checkpoint_metrics=manifest.metrics)  # fmt: skip
    return ident


def _definition(opts: EvalOptions) -> dict[str, Any]:
    """The video score evaluated and calibrated on (``VideoScoreConfig.definition``)."""
    return opts.prepare.video_score.definition(opts.prepare.sampling)


def _thresholds_in_use(opts: EvalOptions, calibrated: ThresholdsFile | None) -> tuple[ThresholdConfig, str]:
    """Verdict thresholds to count labels with: calibrated now, the checkpoint's file, or the stream defaults."""
    model = opts.model
    if calibrated is not None:
        return ThresholdConfig(fake=calibrated.fake, real=calibrated.real), "calibrated by this run"
    if model.checkpoint is not None and thresholds_path_for(model.checkpoint).is_file():
        path = thresholds_path_for(model.checkpoint)
        content = read_thresholds_file(path)
        check_identity(content, model, _definition(opts), path)
        return ThresholdConfig(fake=content.fake, real=content.real, file=path), str(path)
    return ThresholdConfig(), "stream defaults"


def _calibrate(opts: EvalOptions, val: SetResult, version: str, ident: dict[str, Any]) -> tuple[Calibration, Path]:
    if val.null_reason is not None:
        msg = f"cannot calibrate on validation set {val.name!r}: {val.null_reason}"
        raise ConfigError(msg)
    calibration = calibrate_thresholds(val.videos.labels, val.videos.scores, opts.target_fpr, opts.target_fnr)
    path = thresholds_path_for(opts.model.checkpoint) if opts.model.checkpoint else opts.out_dir / "thresholds.json"
    content = ThresholdsFile(
        fake=calibration.fake,
        real=calibration.real,
        target_fpr=calibration.target_fpr,
        target_fnr=calibration.target_fnr,
        achieved=calibration.to_dict(),
        validation_set=str(val.info["path"]),
        model_version=version,
        arch=opts.model.arch,
        pretrained=opts.model.pretrained,
        checkpoint=ident["checkpoint"],
        weights_sha256=ident["weights_sha256"],
        video_score=_definition(opts),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        extra={"validation_split": val.info["split"], "validation_counts": val.counts()},
    )
    write_thresholds_file(path, content)
    return calibration, path


ProgressFactory = Callable[[str, str], Progress]  # (what, unit) -> a Progress; training.progress.Progress itself


def run_evaluation(
    opts: EvalOptions, echo: Callable[[str], None], progress: ProgressFactory | None = None
) -> EvalOutcome:
    """Score, measure and write everything (see the module docstring).

    Args:
        opts: the run.
        echo: where the console table and the file names go.
        progress: makes the counters of preparing (videos) and scoring (crops), per set; None: silent.
    """

    def counter(what: str, unit: str) -> Progress | None:
        return progress(what, unit) if progress is not None else None

    if opts.calibrate and opts.val_set is None:
        msg = "--calibrate needs a validation set (--val-set NAME=PATH); thresholds are never picked on test sets"
        raise ConfigError(msg)
    names = [s.name for s in opts.sets] + ([opts.val_set.name] if opts.val_set else [])
    if len(set(names)) != len(names):
        msg = f"set names must be unique, got {names}"
        raise ConfigError(msg)
    for spec in [*opts.sets, *([opts.val_set] if opts.val_set else [])]:
        if spec.layout is not None and not spec.path.is_dir():  # before Ray starts
            msg = f"set {spec.name!r}: {spec.path} is not a folder (expected the {spec.layout} dataset's root)"
            raise ConfigError(msg)
        if spec.layout is None and not spec.path.is_file():
            msg = f"set {spec.name!r}: {spec.path} is not a file (expected crops.csv or a .csv/.jsonl video manifest)"
            raise ConfigError(msg)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    if opts.model.checkpoint is not None:
        read_manifest(opts.model.checkpoint)  # a missing or broken checkpoint fails before Ray starts
    with ray_connection(address=opts.ray_address, **ray_logging_args(opts.log)):
        prepared_root = opts.prepared_root or opts.out_dir / "prepared"
        loaded = [load_set(s, opts.split, prepared_root, opts.prepare, progress=counter(f"prepare {s.name}", "videos"))
                  for s in opts.sets]  # fmt: skip
        val_loaded = None
        if opts.val_set is not None:
            val_loaded = load_set(opts.val_set, opts.val_split, prepared_root, opts.prepare, validation=True,
                                  progress=counter(f"prepare {opts.val_set.name}", "videos"))  # fmt: skip
        actors = start_scorers(opts.model, opts.workers, opts.batch_size, opts.cpus_per_worker, opts.gpus_per_worker)
        score = opts.prepare.video_score
        try:
            version = ray.get(actors[0].version.remote())
            results = [evaluate_set(s, actors, opts.batch_size, score, counter(f"score {s.name}", "crops"))
                       for s in loaded]  # fmt: skip
            val = None
            if val_loaded is not None:
                val = evaluate_set(val_loaded, actors, opts.batch_size, score, counter(f"score {val_loaded.name}",
                                                                                          "crops"))  # fmt: skip
        finally:
            for actor in actors:
                ray.kill(actor)
    return write_outputs(opts, results, val, version, echo)


def write_outputs(
    opts: EvalOptions, results: Sequence[SetResult], val: SetResult | None, version: str, echo: Callable[[str], None]
) -> EvalOutcome:
    """Steps 4-5 on scored sets: union, calibration, scores.csv, plots, report.json, console table."""
    union = union_result(results, opts.prepare.video_score)
    ident = model_identity(opts.model, version)
    calibration, thresholds_path, calibrated = None, None, None
    if opts.calibrate and val is not None:
        calibration, thresholds_path = _calibrate(opts, val, version, ident)
        calibrated = read_thresholds_file(thresholds_path)
    thresholds, source = _thresholds_in_use(opts, calibrated)
    write_scores_csv(opts.out_dir / "scores.csv", [*results, *([val] if val else [])])
    sections = {r.name: set_section(r, thresholds, plot_set(opts.out_dir, r)) for r in results}
    report = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": ident,
        "video_score": {**_definition(opts), "description": describe_video_score(_definition(opts))},
        "test_sets": sections,
        "overall": set_section(union, thresholds, plot_set(opts.out_dir, union)),
        "validation_set": set_section(val, thresholds, plot_set(opts.out_dir, val)) if val else None,
        "thresholds": {
            "tpr_at_fpr_targets": list(TPR_AT_FPR),
            "verdict": {"fake": thresholds.fake, "real": thresholds.real, "source": source},
            "eer_threshold_per_set": {r.name: (r.metrics or {}).get("video_eer_threshold") for r in [*results, union]},
        },
        "calibration": None
        if calibration is None
        else {**calibration.to_dict(), "file": str(thresholds_path), "validation_set": str(val.info["path"])},
    }
    path = write_json(opts.out_dir / "report.json", report)
    table = console_table([*results, union], val)
    echo(f"video score: {describe_video_score(_definition(opts))}")
    echo(table)
    echo(f"report: {path}")
    if thresholds_path is not None:
        echo(f"thresholds fake={calibration.fake:.6g} real={calibration.real:.6g} written to {thresholds_path}")
        if opts.model.checkpoint is None:
            echo(f"use them: clipguard run --model-arch {opts.model.arch} --model-pretrained {opts.model.pretrained} "
                 f"--thresholds-file {thresholds_path}")  # fmt: skip
        else:
            echo(f"`clipguard run --model-checkpoint {opts.model.checkpoint}` picks them up automatically")
    return EvalOutcome(report, path, table, thresholds_path, tuple(results))
