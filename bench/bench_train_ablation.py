"""Does training learn, and what does each switch buy? The tiny CPU preset vs the linear probe (docs/method.md §8).

The data is the hidden-style check of the training tests (tests/training/face_swap.py): real
portrait videos and face-swapped fakes of five people for train, new videos of three of them
for validation, three people never seen in training for test (identity-disjoint), prepared with
the stream's own decoder and face cropper (8 frames a video, the largest face).

Each row trains ``training/configs/tiny-cpu.yaml`` with Ray Train on a local Ray (2 CPU workers)
and only the row's switches changed, exports the best checkpoint by validation video mAP,
and scores it with the stream's detector: video AUROC on the train split (does it fit?), the
validation split (what selected it) and the held-out people (does it generalise?). The tower is
a random ViT-Tiny-test (no CLIP weights offline), so the held-out numbers say nothing about
CLIP: they are reported because they are what this set measures, not as a result of the method.

    .venv/bin/python -m bench.bench_train_ablation                    # seeds 0 and 1, the table on stdout
    .venv/bin/python -m bench.bench_train_ablation --out bench/results/train_ablation_cpu.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402

from clipguard.assets import REPO_ROOT, assets_dir  # noqa: E402
from clipguard.config import FacesConfig, ModelConfig, SamplingConfig, SourceConfig, VideoScoreConfig  # noqa: E402
from clipguard.model import CropScorer, DetectorConfig  # noqa: E402
from tests.training.face_swap import identity_disjoint_set, write_video_set  # noqa: E402
from training.crop_dataset import load_crop  # noqa: E402
from training.crop_manifest import read_crop_manifest  # noqa: E402
from training.data_manifest import read_video_manifest  # noqa: E402
from training.eval_metrics import detection_metrics  # noqa: E402
from training.export import export_best  # noqa: E402
from training.prepare import prepare_videos  # noqa: E402
from training.train import run_training, with_absolute_paths  # noqa: E402
from training.train_config import load_train_config  # noqa: E402
from workers.face_detector import FaceDetector  # noqa: E402

TINY = REPO_ROOT / "training" / "configs" / "tiny-cpu.yaml"


@dataclass(frozen=True)
class Row:
    name: str
    overrides: tuple[str, ...]


ROWS = (
    Row("tiny-cpu as shipped: LN-tuning + L2 + UnAl + slerp", ()),
    Row("linear probe (frozen tower, no L2, CE, no slerp)",
        ("model.tuning=linear-probe", "model.l2_normalize=false", "loss.preset=ce-only", "loss.slerp=false")),
    Row("GenD losses + real/fake pair batches", ("loss.preset=gend", "data.sampling=pairs")),
)  # fmt: skip


def prepare(root: Path) -> Path:
    """Render and prepare the identity-disjoint set; returns its crops.csv."""
    detector = FaceDetector(FacesConfig(), intra_op_threads=1)
    people, specs = identity_disjoint_set(detector)
    manifest = write_video_set(root, people, specs, n_frames=8)
    summary = prepare_videos(
        read_video_manifest(manifest),
        root / "prepared",
        source=SourceConfig(video_root=root),
        sampling=SamplingConfig(num_frames=8),
        faces=FacesConfig(),
        video_score=VideoScoreConfig.paper(),  # the largest face: how the paper trains
        workers=2,
    )
    if summary.done != len(specs):
        msg = f"prepared {summary.done} of {len(specs)} videos"
        raise RuntimeError(msg)
    return summary.crops_csv


def video_auroc(scorer: CropScorer, crops_csv: Path, split: str) -> tuple[float, int]:
    rows = [r for r in read_crop_manifest(crops_csv) if r.split == split]
    scores = scorer.score(np.stack([load_crop(crops_csv.parent / r.crop_path) for r in rows]))
    metrics = detection_metrics([r.video_id for r in rows], [r.label for r in rows], scores)
    return metrics.video_auroc, len({r.video_id for r in rows})


def train_row(row: Row, seed: int, crops: Path, storage: Path) -> dict:
    overrides = [f"data.crops={crops}", f"run.storage_path={storage}", f"run.name=r{ROWS.index(row)}-s{seed}",
                 f"run.seed={seed}", *row.overrides]  # fmt: skip
    cfg = with_absolute_paths(load_train_config(TINY, overrides))
    began = time.monotonic()
    result = run_training(cfg)
    seconds = time.monotonic() - began
    exported, metrics = export_best(result.best_checkpoints or [], cfg.export_dir)
    model = ModelConfig(checkpoint=exported, device="cpu").with_checkpoint_identity()
    scorer = CropScorer.from_config(DetectorConfig.for_stream(model, 64), model.checkpoint)
    out = {"seconds": seconds, "epoch": metrics["epoch"]}
    for split in ("train", "val", "test"):
        out[split], out[f"{split}_videos"] = video_auroc(scorer, crops, split)
    return out


def machine() -> str:
    load = os.getloadavg()[0]
    return (f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} logical CPUs, 1-min load {load:.1f} at the start")  # fmt: skip


def _cell(values: list[float]) -> str:
    each = " / ".join(f"{v:.3f}" for v in values)
    return f"{statistics.mean(values):.3f} ({each})" if len(values) > 1 else each


def table(results: dict[str, list[dict]], seeds: list[int]) -> str:
    lines = [
        "| run (tiny-cpu.yaml + switches) | train video AUROC | val video AUROC | held-out people video AUROC | "
        "epoch kept | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        cell = {key: _cell([r[key] for r in runs]) for key in ("train", "val", "test")}
        epochs = " / ".join(str(r["epoch"]) for r in runs)
        seconds = " / ".join(f"{r['seconds']:.0f}" for r in runs)
        lines.append(f"| {name} | {cell['train']} | {cell['val']} | {cell['test']} | {epochs} | {seconds} |")
    first = next(iter(results.values()))[0]
    lines.append("")
    lines.append(f"Mean (then per seed {', '.join(map(str, seeds))}); videos: train {first['train_videos']}, "
                 f"val {first['val_videos']}, held-out {first['test_videos']}.")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1", help="run seeds (data order, augmentation, slerp)")
    parser.add_argument("--rows", default=",".join(str(i) for i in range(len(ROWS))), help="row indices to run")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [ROWS[int(i)] for i in args.rows.split(",")]
    os.environ.setdefault("CLIPGUARD_MODEL_DIR", str(assets_dir() / "models"))
    header = machine()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        try:
            began = time.monotonic()
            crops = prepare(Path(tmp) / "data")
            prepared_s = time.monotonic() - began
            results = {row.name: [train_row(row, seed, crops, Path(tmp) / "runs") for seed in seeds] for row in rows}
        finally:
            ray.shutdown()
    header += f", {os.getloadavg()[0]:.1f} at the end"
    text = (f"# Training on the synthetic face-swap set: tiny CPU preset vs linear probe\n\n{header}; "
            f"Ray {ray.__version__}; prepare {prepared_s:.0f}s; 30 epochs a run, 2 Ray Train workers on CPU; "
            f"checkpoint kept by validation video mAP; AUROC by the stream's detector on the exported checkpoint.\n\n"
            f"{table(results, seeds)}\n")  # fmt: skip
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
