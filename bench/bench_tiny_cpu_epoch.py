"""How long one epoch of the tiny CPU preset (training/configs/tiny-cpu.yaml) takes on 4,000 crops, by batch size.

Makes a synthetic crop manifest of ``--crops`` rows (90 % train, 10 % val; ``--unique`` distinct
256x256 PNGs cut from the shared photos, each used by several rows, so decoding costs what real
crops cost), then runs the real Ray Train job (``training.train.train_and_export``: 2 CPU workers,
DDP over gloo, augmentations, validation each epoch) for ``--epochs`` epochs per batch size, and
reads ``epoch_s`` from each run's ``train_log.csv``. The train-split scoring the preset does every
5 epochs is switched off (``data.eval_train_every=0``): it is measured once, separately, on the
side. Prints a markdown table; ``--out`` also writes it.

    .venv/bin/python -m bench.bench_tiny_cpu_epoch --batch-sizes 8,16,32,64 --out bench/results/tiny_cpu_epoch.md
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before Ray is imported: the local Ray below uses token auth
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clipguard.assets import REPO_ROOT, assets_dir  # noqa: E402
from training.crop_manifest import CROP_COLUMNS  # noqa: E402
from training.train import train_and_export  # noqa: E402
from training.train_log import read_log  # noqa: E402

TINY = REPO_ROOT / "training" / "configs" / "tiny-cpu.yaml"


def make_crops(root: Path, n_rows: int, n_unique: int, seed: int = 0) -> Path:
    """``crops.csv`` with ``n_rows`` rows over ``n_unique`` PNG crops; 10 crops a video, half the videos fake."""
    rng = np.random.default_rng(seed)
    photos = [cv2.imread(str(p)) for p in sorted((assets_dir() / "faces").glob("*.png"))]
    (root / "crops").mkdir(parents=True)
    names = []
    for i in range(n_unique):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w) // 2))
        y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
        crop = cv2.resize(photo[y : y + side, x : x + side], (256, 256), interpolation=cv2.INTER_AREA)
        crop = np.clip(crop.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
        names.append(f"crops/c{i:05d}.png")
        cv2.imwrite(str(root / names[-1]), crop)
    path = root / "crops.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CROP_COLUMNS)
        for row in range(n_rows):
            video = row // 10
            label = video % 2
            split = "val" if video % 20 >= 18 else "train"  # 10 %, both classes
            writer.writerow(
                [f"v{video}", names[row % n_unique], label, split, "bench", row % 10, 0, f"v{video - label}"]
            )
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=4000)
    ap.add_argument("--unique", type=int, default=400)
    ap.add_argument("--batch-sizes", default="8,16,32,64")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run; the table gives the median")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    started = datetime.now(UTC)
    load = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="clipguard-bench-epoch-"))
    crops = make_crops(root, args.crops, args.unique)
    n_train = sum(1 for r in csv.DictReader(crops.open()) if r["split"] == "train")
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        overrides = [f"data.crops={crops}", f"data.batch_size={batch}", "data.eval_train_every=0",
                     f"optim.epochs={args.epochs}", f"run.storage_path={root / 'runs'}",
                     f"run.name=b{batch}"]  # fmt: skip
        began = time.monotonic()
        train_and_export(TINY, overrides)
        wall = time.monotonic() - began
        log = read_log(root / "runs" / f"b{batch}" / "train_log.csv")
        epoch_s = float(np.median([float(r["epoch_s"]) for r in log]))
        steps = -(-n_train // batch)
        rows.append((batch, steps, epoch_s, epoch_s / steps, n_train / epoch_s, wall))
        print(f"batch {batch}: {steps} steps, {epoch_s:.1f} s/epoch", flush=True)
    lines = [
        f"# Tiny CPU preset: seconds per epoch by batch size ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, shared with other "
        f"jobs (1-min load {load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)",
        f"- Data: {args.crops} synthetic 256x256 crops ({n_train} train, {args.crops - n_train} val; "
        f"{args.unique} distinct PNGs); training/configs/tiny-cpu.yaml (ViT-Tiny-test, 2 Ray Train CPU workers, "
        "augmentations on), validation scored each epoch, train-split scoring off",
        f"- Median over {args.epochs} epochs per batch size; wall includes Ray start, validation and export",
        "",
        "| global batch | steps/epoch | s/epoch | s/step | train crops/s | run wall s |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {b} | {s} | {e:.1f} | {e / s:.3f} | {c:.0f} | {w:.0f} |" for b, s, e, _, c, w in rows],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
