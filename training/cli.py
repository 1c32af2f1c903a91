"""Commands ``prepare``, ``train``, ``evaluate`` and ``convert``, registered into ``clipguard`` by ``pipeline/cli.py``::

    from training.cli import convert_command, evaluate_command, prepare_command, train_command
    cli.add_command(prepare_command)
    cli.add_command(train_command)
    cli.add_command(evaluate_command)
    cli.add_command(convert_command)

Both are plain ``click.Command`` objects; errors are raised as ``ClipguardError``
(``clipguard``'s ``main`` prints them and exits 2).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from clipguard.config import ModelConfig, StreamConfig, TowerConfig, field_default
from clipguard.errors import ConfigError
from clipguard.logging_setup import ray_logging_args
from clipguard.model_files import MODEL_DIR_ENV, find_model_file, names_a_file
from training.cli_options import (
    command_logging,
    crop_configs,
    crop_options,
    literal_choices,
    log_options,
    pooling_options,
)


@click.command("prepare")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="labelled video list (.csv or .jsonl: path, label, split, dataset[, source_video, video_id])",
)
@click.option(
    "--dataset",
    default=None,
    metavar="LAYOUT:ROOT",
    help="a dataset in its official layout instead of a manifest: ffpp, celebdf, dfd, dfdc, ffiw or deepspeak, "
    "then its folder (e.g. celebdf:/data/Celeb-DF-v2; layouts in the README)",
)
@click.option(
    "--ffpp-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="a FaceForensics++ tree (original_sequences/, manipulated_sequences/) instead of a manifest",
)
@click.option(
    "--ffpp-splits",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="folder with the official train/val/test.json (default: deterministic split by pair)",
)
@click.option("--ffpp-compression", default="c23", show_default=True)
@click.option("--ffpp-methods", default="Deepfakes,Face2Face,FaceSwap,NeuralTextures", show_default=True)
@click.option(
    "--video-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="folder the manifest's paths are relative to (default: the manifest's folder)",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="output folder: prepared.json, crops/, videos/, crops.csv, videos.csv",
)
@crop_options
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="carve a validation split from a list with train and test only: this share of the training "
              "groups (a real video with its fakes, or --val-group-by) moves to val")  # fmt: skip
@click.option("--val-group-by", default="source_video", show_default=True, metavar="COLUMN",
              help="--val-fraction: keep videos sharing this together (source_video, or a manifest column such as "
              "identity)")  # fmt: skip
@click.option("--workers", default=2, show_default=True, help="Ray actors preparing videos in parallel")
@click.option("--cpus-per-worker", default=1.0, show_default=True)
@click.option("--gpus-per-worker", default=0.0, show_default=True)
@click.option("--retry-skipped", is_flag=True, help="redo videos an earlier run recorded as skipped")
@click.option("--ray-address", default=None, help="Ray cluster (default: RAY_ADDRESS or a local Ray)")
@log_options
def prepare_command(**opts) -> None:
    """Sample frames, crop aligned faces and write a crop manifest, on Ray; re-runs skip finished videos.

    The faces kept are the video score's (--video-score-face-policy, as the stream's): prepare evaluation and
    calibration sets with the video score you serve; the paper trains on the largest face.
    """
    log = command_logging(opts)
    from clipguard.ray_connection import ray_connection
    from training.data_manifest import carve_validation, read_video_manifest
    from training.dataset_layouts import read_layout, split_layout_spec
    from training.ffpp_layout import scan_ffpp
    from training.prepare import prepare_videos
    from training.progress import Progress

    given = [flag for flag, key in (("--manifest", "manifest"), ("--dataset", "dataset"), ("--ffpp-root", "ffpp_root"))
             if opts[key] is not None]  # fmt: skip
    if len(given) != 1:
        msg = f"give exactly one of --manifest, --dataset and --ffpp-root (got {given or 'none'})"
        raise ConfigError(msg)
    if opts["manifest"] is not None:
        records = read_video_manifest(opts["manifest"], opts["video_root"])
        root, where = opts["video_root"] or opts["manifest"].parent, str(opts["manifest"])
    elif opts["dataset"] is not None:
        layout = split_layout_spec(opts["dataset"])
        if layout is None:
            msg = f"--dataset {opts['dataset']!r}: expected LAYOUT:ROOT with LAYOUT one of the README's layouts"
            raise ConfigError(msg)
        records = read_layout(*layout)
        root, where = layout[1], opts["dataset"]
    else:
        methods = tuple(m.strip() for m in opts["ffpp_methods"].split(",") if m.strip())
        records = scan_ffpp(
            opts["ffpp_root"], compression=opts["ffpp_compression"], methods=methods, splits_dir=opts["ffpp_splits"]
        )
        root, where = opts["ffpp_root"], str(opts["ffpp_root"])
    if opts["val_fraction"] is not None:
        records = carve_validation(records, opts["val_fraction"], opts["val_group_by"], where)
    source, sampling, faces, video_score = crop_configs(opts, root.resolve())

    with ray_connection(address=opts["ray_address"], **ray_logging_args(log)):
        summary = prepare_videos(
            records,
            opts["out_dir"].resolve(),
            source=source,
            sampling=sampling,
            faces=faces,
            video_score=video_score,
            workers=opts["workers"],
            cpus_per_worker=opts["cpus_per_worker"],
            gpus_per_worker=opts["gpus_per_worker"],
            retry_skipped=opts["retry_skipped"],
            model_dir=opts["model_dir"],
            progress=Progress("prepare", "videos"),
        )
    counts = {split: sum(r.split == split for r in records) for split in ("train", "val", "test")}
    click.echo(json.dumps({**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(summary).items()},
                           "videos_per_split": counts}))  # fmt: skip


@click.command("train")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML config (training/configs/*.yaml)",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.FIELD=VALUE",
    help="override one field, e.g. --set optim.lr=1e-3 (repeatable)",
)
@click.option("--resume", is_flag=True, help="continue the run of the same storage path and name")
@click.option("--ray-address", default=None,
              help="Ray cluster (default: RAY_ADDRESS or a local Ray); with --submit, its job server "
              "(http://head:8265) or a Ray address")  # fmt: skip
@click.option("--submit", is_flag=True,
              help="run as a Ray job on the cluster (training/job_submit.py): uploads --working-dir and runs "
              "training/train.py there with --python; streams its log, fails when the job fails")  # fmt: skip
@click.option("--python", "python", default=None, metavar="PATH",
              help="--submit: the interpreter the job runs, as seen on the cluster's head "
              "[default: this environment's, for a cluster started from it]")  # fmt: skip
@click.option("--working-dir", type=click.Path(path_type=Path, file_okay=False, exists=True), default=Path("."),
              show_default=True, help="--submit: the code uploaded as the job's working directory")  # fmt: skip
@click.option("--submission-id", default=None, help="--submit: the job's id (default: Ray picks one)")
@log_options
def train_command(config: Path | None, overrides: tuple[str, ...], resume: bool, ray_address: str | None,
                  **opts) -> None:  # fmt: skip
    """Train the detector with Ray Train and export the best checkpoint (same code as training/train.py).

    Here (a local Ray, or --ray-address), or with --submit as a Ray job on a cluster.
    """
    from training.train_config import SELECTION_METRIC

    submit, python, working_dir, submission_id = (opts.pop(k) for k in ("submit", "python", "working_dir",
                                                                        "submission_id"))  # fmt: skip
    if submit:
        from training.job_submit import JobRequest, default_python, passthrough_args, submit_training

        request = JobRequest(address=ray_address, python=python or default_python(), working_dir=working_dir,
                             config=config, overrides=tuple(overrides), submission_id=submission_id,
                             extra_args=passthrough_args(resume, opts["log_format"], opts["log_level"]))  # fmt: skip
        command_logging(opts)
        job_id = submit_training(request, echo=click.echo)
        click.echo(json.dumps({"job": job_id, "status": "SUCCEEDED"}))
        return
    if python is not None or submission_id is not None:
        msg = "--python and --submission-id only apply with --submit"
        raise click.UsageError(msg)
    from training.train import train_and_export

    log = command_logging(opts)
    exported, metrics = train_and_export(config, overrides, resume=resume, ray_address=ray_address, log=log)
    click.echo(
        json.dumps(
            {"checkpoint": str(exported), "epoch": metrics.get("epoch"), SELECTION_METRIC: metrics[SELECTION_METRIC]}
        )
    )


def _set_specs(ctx: click.Context, param: click.Parameter, value: tuple[str, ...] | str | None):
    """Click callback: NAME=PATH strings -> SetSpec (a bad one is a usage error, exit 2)."""
    from training.eval_sets import parse_set_spec

    if value is None:
        return None
    try:
        if isinstance(value, str):
            return parse_set_spec(value)
        return tuple(parse_set_spec(v) for v in value)
    except ConfigError as exc:
        raise click.BadParameter(exc.message, ctx=ctx, param=param) from exc


_SPLITS = click.Choice(["all", "train", "val", "test"])


@click.command("evaluate")
@click.argument("sets", nargs=-1, metavar="[NAME=PATH]...", callback=_set_specs)
@click.option("--test-set", "test_sets", multiple=True, metavar="NAME=PATH", callback=_set_specs,
              help="a labelled test set (repeatable): a crop manifest (crops.csv from `clipguard prepare`), a "
              "video manifest (.csv/.jsonl: path, label, split, dataset) or a dataset as LAYOUT:ROOT "
              "(cdf=celebdf:/data/Celeb-DF-v2; layouts ffpp, celebdf, dfd, dfdc, ffiw, deepspeak), the last two "
              "prepared into --out first")  # fmt: skip
@click.option("--checkpoint", "checkpoints", type=click.Path(path_type=Path, dir_okay=False), multiple=True,
              help="LN-tuned checkpoint (<name>.safetensors, manifest beside it); repeat it to compare several "
              "(--table); default: the base model")  # fmt: skip
@click.option("--table", is_flag=True,
              help="also print video AUROC per test set and their mean, one column per --checkpoint, beside the "
              "paper's numbers (docs/method.md §8); written to --out/table.md and table.csv")  # fmt: skip
@click.option(
    "--arch",
    default=None,
    help="open_clip ViT name [default: the checkpoint's (its manifest), else the stream's model.arch]",
)
@click.option("--pretrained", default=None,
              help="base tower weights: 'openai', a local file, or 'none' "
              "[default: the checkpoint's (its manifest), else the stream's model.pretrained]")  # fmt: skip
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=field_default(ModelConfig, "device"),
              show_default=True)  # fmt: skip
@pooling_options
@click.option("--split", type=_SPLITS, default=None,
              help="use only the rows of this split of each test set [default: test for a LAYOUT:ROOT dataset, all "
              "rows of a manifest]")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="output folder: report.json, scores.csv, roc/pr/hist_<set>.png, prepared/")  # fmt: skip
@click.option("--calibrate", is_flag=True,
              help="pick the stream's fake/real thresholds on --val-set and write them where `clipguard run` reads "
              "them (<checkpoint>.thresholds.json, or --out/thresholds.json for the base model)")  # fmt: skip
@click.option("--val-set", default=None, metavar="NAME=PATH", callback=_set_specs,
              help="validation set for --calibrate (never a test set); scored and reported too")  # fmt: skip
@click.option(
    "--val-split",
    type=_SPLITS,
    default=None,
    help="split of --val-set to use [default: val for a LAYOUT:ROOT dataset, all rows of a manifest]",
)
@click.option("--target-fpr", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="--calibrate: largest share of real validation videos labelled fake")  # fmt: skip
@click.option("--target-fnr", type=click.FloatRange(0, 1), default=None,
              help="--calibrate: largest share of fake validation videos labelled real "
              "[default: --target-fpr]")  # fmt: skip
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1), help="Ray scoring actors")
@click.option("--cpus-per-worker", default=1.0, show_default=True)
@click.option("--gpus-per-worker", default=0.0, show_default=True)
@click.option("--batch-size", default=field_default(StreamConfig, "batch_size"), show_default=True,
              type=click.IntRange(1), help="crops per scoring call")  # fmt: skip
@click.option("--video-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="video manifests: folder their paths are relative to (default: each manifest's folder)")  # fmt: skip
@click.option("--prepare-workers", default=2, show_default=True, help="video manifests: Ray actors preparing videos")
@crop_options
@click.option("--ray-address", default=None, help="Ray cluster (default: RAY_ADDRESS or a local Ray)")
@log_options
def evaluate_command(sets, test_sets, **opts) -> None:
    """Score labelled test sets with a checkpoint (or the base model) on Ray; write metrics, scores and plots.

    Per set and for all sets together: video AUROC, macro mAP, EER and its threshold, TPR at FPR 0.1/1/5 %,
    frame AUROC and counts (videos without crops are listed). Videos are scored with the stream's video score
    (--video-score-*; the paper's protocol: --video-score-face-policy largest --video-score-pooling crops). With
    --calibrate, also picks the stream's verdict thresholds on a validation set at --target-fpr / --target-fnr,
    for that video score. With --table, a comparison with the paper, one column per --checkpoint.
    """
    from training.eval_run import EvalOptions, run_evaluation
    from training.eval_sets import PrepareSettings
    from training.eval_table import run_table
    from training.progress import Progress

    log = command_logging(opts)
    specs = tuple(sets) + tuple(test_sets)
    if not specs and opts["val_set"] is None:
        msg = "give at least one test set (NAME=PATH or --test-set NAME=PATH)"
        raise click.UsageError(msg)
    checkpoints: tuple[Path | None, ...] = opts.pop("checkpoints") or (None,)
    if len(checkpoints) > 1 and not opts["table"]:
        msg = "several --checkpoint values are compared with --table; give --table or one --checkpoint"
        raise click.UsageError(msg)
    source, sampling, faces, video_score = crop_configs(opts)
    prepare = PrepareSettings(source=source, sampling=sampling, faces=faces, video_score=video_score,
                              video_root=opts["video_root"], workers=opts["prepare_workers"],
                              model_dir=opts["model_dir"])  # fmt: skip
    base = EvalOptions(
        model=_eval_model(opts, checkpoints[0]),
        sets=specs,
        out_dir=opts["out_dir"],
        prepare=prepare,
        split=opts["split"],
        workers=opts["workers"],
        cpus_per_worker=opts["cpus_per_worker"],
        gpus_per_worker=opts["gpus_per_worker"],
        batch_size=opts["batch_size"],
        val_set=opts["val_set"],
        val_split=opts["val_split"],
        calibrate=opts["calibrate"],
        target_fpr=opts["target_fpr"],
        target_fnr=opts["target_fnr"],
        ray_address=opts["ray_address"],
        log=log,
    )

    def progress(what: str, unit: str) -> Progress:
        return Progress(what, unit, min_interval_s=0.0 if unit == "videos" else 10.0)

    if opts["table"]:
        run_table(base, checkpoints, lambda checkpoint: _eval_model(opts, checkpoint), click.echo, progress)
    else:
        run_evaluation(base, echo=click.echo, progress=progress)


def _eval_model(opts: dict, checkpoint: Path | None) -> ModelConfig:
    """The model section ``evaluate`` scores one checkpoint (None: the base model) with."""
    given = {k: opts[k] for k in ("arch", "pretrained") if opts[k] is not None}
    if checkpoint is not None:
        given["checkpoint"] = checkpoint
    # A checkpoint names its own arch and base weights (its manifest); the flags only override them.
    return ModelConfig(**given, device=opts["device"]).with_model_files(opts["model_dir"])


# --- convert: the authors' released checkpoint -> the detector format ------------------------------
CONVERTED_NAME = "detector"  # <out>/detector.safetensors + .manifest.json, as a training run's export/


@click.command("convert")
@click.option("--from-hf", "source", required=True, metavar="DIR_OR_REPO",
              help="the authors' checkpoint in the transformers CLIP layout: a folder (model.safetensors, "
              "config.json), a .safetensors file, or a hub repo id (offline: only when in the HF cache)")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="a folder (gets detector.safetensors + detector.manifest.json) or <name>.safetensors")  # fmt: skip
@click.option("--arch", default=field_default(TowerConfig, "arch"), show_default=True, help="open_clip ViT name")
@click.option("--tuning", type=literal_choices(TowerConfig, "tuning"), default=field_default(TowerConfig, "tuning"),
              show_default=True,
              help="ln: store LayerNorms + head, served on the base weights (refused when other tensors differ "
              "from them); full: store every tensor, no base weights needed")  # fmt: skip
@click.option("--pretrained", default=None,
              help="base tower weights the checkpoint is served on: 'openai', a file (model directory), 'none' "
              "[default: openai; none with --tuning full]")  # fmt: skip
@click.option(
    "--l2-normalize/--no-l2-normalize",
    default=None,
    help="whether the head normalises its input [default: config.json's head type, else yes]",
)
@click.option("--atol", default=1e-6, show_default=True, help="largest difference of a frozen tensor from the base")
@click.option("--model-dir", type=click.Path(path_type=Path, file_okay=False), default=None, envvar=MODEL_DIR_ENV,
              help=f"folder of model files named by file name [default: ${MODEL_DIR_ENV}, then ./models]")  # fmt: skip
@log_options
def convert_command(source: str, out: Path, pretrained: str | None, l2_normalize: bool | None, **opts) -> None:
    """Turn the authors' released Hugging Face checkpoint into a clipguard checkpoint (docs/method.md §9).

    The result loads like a trained one: `clipguard run --model-checkpoint OUT` and
    `clipguard evaluate --checkpoint OUT` take its arch and base weights from its manifest.
    """
    from clipguard.model import DetectorConfig
    from clipguard.model.convert_hf import convert_to_checkpoint
    from clipguard.model.manifest import checkpoint_paths

    command_logging(opts)
    if pretrained is None:
        pretrained = "none" if opts["tuning"] == "full" else field_default(TowerConfig, "pretrained")
    if names_a_file(pretrained):
        pretrained = str(find_model_file(pretrained, what="base CLIP weights", setting="--pretrained",
                                         configured_dir=opts["model_dir"]))  # fmt: skip
    given = {"arch": opts["arch"], "pretrained": pretrained, "tuning": opts["tuning"], "device": "cpu"}
    if l2_normalize is not None:
        given["l2_normalize"] = l2_normalize
    name = out if out.name.endswith((".safetensors", ".manifest.json")) else out / CONVERTED_NAME
    manifest = convert_to_checkpoint(source, DetectorConfig(**given), name, atol=opts["atol"])
    weights, _ = checkpoint_paths(name)
    click.echo(json.dumps({"checkpoint": str(weights), "version": manifest.version, "arch": manifest.arch,
                           "base_source": manifest.base_source, "tuning": manifest.tuning,
                           "l2_normalize": manifest.l2_normalize, "tensors": len(manifest.tensors)}))  # fmt: skip
