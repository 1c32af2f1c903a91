"""Click commands ``prepare`` and ``train``, registered into ``clipguard`` by ``pipeline/cli.py``::

    from training.cli import prepare_command, train_command
    cli.add_command(prepare_command)
    cli.add_command(train_command)

Both are plain ``click.Command`` objects; errors are raised as ``ClipguardError``
(``clipguard``'s ``main`` prints them and exits 2).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from pipeline.config import FacesConfig, SamplingConfig, SourceConfig
from pipeline.errors import ConfigError
from training.crop_manifest import VideoOutcome


@click.command("prepare")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="labelled video list (.csv or .jsonl: path, label, split, dataset[, source_video, video_id])",
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
    help="output folder: crops/, videos/, crops.csv, videos.csv",
)
@click.option("--num-frames", default=32, show_default=True, help="frames sampled per video (paper: 32)")
@click.option(
    "--face-policy",
    type=click.Choice(["largest", "all"]),
    default="largest",
    show_default=True,
    help="largest = paper protocol; all = every face (moderation)",
)
@click.option("--max-faces", default=32, show_default=True, help="faces kept per frame with --face-policy all")
@click.option(
    "--detector-path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="SCRFD ONNX model (default: the shared test asset)",
)
@click.option("--det-thresh", default=0.5, show_default=True)
@click.option("--max-side", default=1280, show_default=True, help="decoded frames are downscaled to this side")
@click.option("--decode-timeout", default=120.0, show_default=True, help="seconds per video")
@click.option("--workers", default=2, show_default=True, help="Ray actors preparing videos in parallel")
@click.option("--cpus-per-worker", default=1.0, show_default=True)
@click.option("--gpus-per-worker", default=0.0, show_default=True)
@click.option("--retry-skipped", is_flag=True, help="redo videos an earlier run recorded as skipped")
@click.option("--ray-address", default=None, help="Ray cluster (default: RAY_ADDRESS or a local Ray)")
def prepare_command(**opts) -> None:
    """Sample frames, crop aligned faces and write a crop manifest, on Ray; re-runs skip finished videos."""
    import ray

    from training.data_manifest import read_video_manifest
    from training.ffpp_layout import scan_ffpp
    from training.prepare import prepare_videos

    if (opts["manifest"] is None) == (opts["ffpp_root"] is None):
        msg = "give exactly one of --manifest and --ffpp-root"
        raise ConfigError(msg)
    if opts["manifest"] is not None:
        records = read_video_manifest(opts["manifest"], opts["video_root"])
        root = opts["video_root"] or opts["manifest"].parent
    else:
        methods = tuple(m.strip() for m in opts["ffpp_methods"].split(",") if m.strip())
        records = scan_ffpp(
            opts["ffpp_root"], compression=opts["ffpp_compression"], methods=methods, splits_dir=opts["ffpp_splits"]
        )
        root = opts["ffpp_root"]
    source = SourceConfig(video_root=root.resolve(), timeout_s=opts["decode_timeout"])
    sampling = SamplingConfig(num_frames=opts["num_frames"], max_side=opts["max_side"])
    faces = FacesConfig(
        detector_path=opts["detector_path"],
        det_thresh=opts["det_thresh"],
        policy=opts["face_policy"],
        max_faces_per_frame=opts["max_faces"],
    )

    def progress(outcome: VideoOutcome) -> None:
        detail = f" ({outcome.error_kind}: {outcome.error_message})" if outcome.status == "skipped" else ""
        click.echo(f"{outcome.status:8s} {len(outcome.crops):3d} crops  {outcome.video_id}{detail}", err=True)

    started = not ray.is_initialized()
    if started:
        ray.init(address=opts["ray_address"])
    try:
        summary = prepare_videos(
            records,
            opts["out_dir"].resolve(),
            source=source,
            sampling=sampling,
            faces=faces,
            workers=opts["workers"],
            cpus_per_worker=opts["cpus_per_worker"],
            gpus_per_worker=opts["gpus_per_worker"],
            retry_skipped=opts["retry_skipped"],
            on_video=progress,
        )
    finally:
        if started:
            ray.shutdown()
    click.echo(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(summary).items()}))


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
@click.option("--ray-address", default=None, help="Ray cluster (default: RAY_ADDRESS or a local Ray)")
def train_command(config: Path | None, overrides: tuple[str, ...], resume: bool, ray_address: str | None) -> None:
    """Train the detector with Ray Train and export the best checkpoint (same code as training/train.py)."""
    from training.train import train_and_export
    from training.train_config import SELECTION_METRIC

    exported, metrics = train_and_export(config, overrides, resume=resume, ray_address=ray_address)
    click.echo(
        json.dumps(
            {"checkpoint": str(exported), "epoch": metrics.get("epoch"), SELECTION_METRIC: metrics[SELECTION_METRIC]}
        )
    )
