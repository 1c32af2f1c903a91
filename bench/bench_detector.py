"""Throughput of the detector's inference API (crops/s) by batch size and precision.

Times ``CropScorer.score`` end to end: uint8 (B, 256, 256, 3) numpy crops in,
p_fake out (host-to-device copy, CLIP preprocessing, forward, softmax, copy back).
Model build and warm-up calls are excluded. Each cell reports the median of its
timed runs. MFU = achieved FLOP/s / peak, with 162 GFLOPs per 224-px ViT-L/14
crop (81.08 GMACs) or an analytic ViT estimate for other archs.

Runs unchanged on CPU (fp32) and CUDA (bf16 autocast and fp32)::

    python -m bench.bench_detector                      # ViT-L-14, batch 1, 8, 32
    python -m bench.bench_detector --batch-sizes 1,8 --output bench/results/detector_cpu.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from clipguard.model import CropScorer, DetectorConfig, build_detector, resolve_device

VIT_L14_FLOPS = 162e9  # 2 x 81.08 GMACs per 224-px crop
# Dense peak TFLOP/s by (device-name marker, precision); fp32 = CUDA cores (PyTorch keeps TF32 off for matmul).
GPU_PEAKS = (
    ("H200", {"bf16": 989.0, "fp32": 67.0}),
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.0}),
    ("H100 NVL", {"bf16": 835.0, "fp32": 60.0}),
    ("H100", {"bf16": 989.0, "fp32": 67.0}),  # SXM ("H100 80GB HBM3")
    ("A100", {"bf16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.0, "fp32": 91.6}),
    ("L4", {"bf16": 121.0, "fp32": 30.3}),
)


def vit_flops_per_crop(detector) -> tuple[float, str]:
    """FLOPs of one crop: the published figure for ViT-L-14, else a ViT estimate (matmuls only)."""
    if detector.arch == "ViT-L-14":
        return VIT_L14_FLOPS, "162 GFLOPs (81.08 GMACs)"
    tower = detector.tower
    width = tower.conv1.out_channels
    patch = tower.conv1.kernel_size[0]
    grid = tower.grid_size[0] * tower.grid_size[1]
    tokens = grid + 1
    hidden = tower.transformer.resblocks[0].mlp.c_fc.out_features
    layers = len(tower.transformer.resblocks)
    per_layer = tokens * (4 * width * width + 2 * width * hidden) + 2 * tokens * tokens * width
    macs = grid * 3 * patch * patch * width + layers * per_layer
    return 2.0 * macs, f"{2 * macs / 1e9:.2f} GFLOPs (estimate)"


def measured_cpu_matmul_tflops(size: int = 2048, runs: int = 10) -> float:
    """Best achieved fp32 matmul TFLOP/s on this CPU (a practical peak; the theoretical one is higher).

    The fastest run is used, not the median: a peak is the best the machine can do,
    and on a shared machine the median mostly measures the neighbours.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


def peak_tflops(device: torch.device, precision: str, override: float | None) -> tuple[float | None, str]:
    """Peak TFLOP/s for MFU and where it came from; None when unknown (MFU is then n/a, not guessed)."""
    if override is not None:
        return override, f"{override:g} TFLOP/s (--peak-tflops)"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for marker, peaks in GPU_PEAKS:
            if marker in name:
                return peaks[precision], f"{peaks[precision]:g} TFLOP/s dense {precision} ({marker} spec)"
        return None, f"unknown for {name!r}: pass --peak-tflops"
    measured = measured_cpu_matmul_tflops()
    return measured, f"{measured * 1e3:.1f} GFLOP/s (best of 10 2048x2048 fp32 matmuls, measured)"


def cpu_model() -> str:
    """The CPU model from lscpu (informational; platform's string when lscpu is missing)."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")]
    return names[0] if names else platform.processor() or "unknown CPU"


def load_average() -> str:
    """1-minute load average (CPU timings on a shared machine depend on it)."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}; host {cpu_model()}"
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def time_cell(scorer: CropScorer, batch: np.ndarray, warmup: int, repeats: int, min_repeats: int, budget_s: float):
    """Warm up, then time ``repeats`` calls (fewer if over budget, never under ``min_repeats``)."""
    warm_times = []
    for _ in range(warmup):
        start = time.perf_counter()
        scorer.score(batch)
        warm_times.append(time.perf_counter() - start)
    if warm_times:
        repeats = max(min_repeats, min(repeats, int(budget_s / max(warm_times[-1], 1e-9))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scorer.score(batch)  # returns numpy, so CUDA work is finished when it returns
        times.append(time.perf_counter() - start)
    return statistics.median(times), repeats


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="ViT-L-14")
    parser.add_argument("--pretrained", default="none", help="weights do not change speed; 'none' needs no download")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--precisions", default=None, help="default: fp32 on CPU, bf16,fp32 on CUDA")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per cell (default 1 CPU, 3 CUDA)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per cell (median reported)")
    parser.add_argument("--min-repeats", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=90.0, help="cut repeats so a cell takes about this long")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: spec or measured)")
    parser.add_argument("--output", type=Path, default=None, help="also write the markdown to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    precisions = (args.precisions or ("bf16,fp32" if device.type == "cuda" else "fp32")).split(",")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    warmup = args.warmup if args.warmup is not None else (3 if device.type == "cuda" else 1)

    base = DetectorConfig(arch=args.arch, pretrained=args.pretrained, device=device.type)
    torch.manual_seed(0)
    detector = build_detector(base)
    flops, flops_label = vit_flops_per_crop(detector)
    rng = np.random.default_rng(0)

    load_before = load_average()
    rows = []
    peaks = {}
    for precision in precisions:
        peak, peak_label = peak_tflops(device, precision, args.peak_tflops)
        peaks[precision] = peak_label
        for batch_size in batch_sizes:
            config = base.model_copy(update={"precision": precision, "max_batch_size": batch_size})
            scorer = CropScorer(detector, config, version="bench")
            batch = rng.integers(0, 256, (batch_size, 256, 256, 3), dtype=np.uint8)
            median_s, runs = time_cell(scorer, batch, warmup, args.repeats, args.min_repeats, args.budget_s)
            crops_per_s = batch_size / median_s
            mfu = f"{100 * crops_per_s * flops / (peak * 1e12):.1f} %" if peak else "n/a"
            rows.append(
                f"| {precision} | {batch_size} | {crops_per_s:.2f} | {1e3 * median_s:.0f} | "
                f"{1e3 * median_s / batch_size:.0f} | {runs} | {mfu} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)

    lines = [
        f"# Detector throughput: {args.arch} on {device.type}",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine_description(device)}",
        f"- torch {torch.__version__}, python {platform.python_version()}; "
        f"1-min load average {load_before} before, {load_average()} after",
        f"- measured: `CropScorer.score` end to end on uint8 256x256x3 numpy crops (preprocessing included); "
        f"pretrained={args.pretrained!r} (weights do not change speed)",
        f"- {warmup} warm-up call(s) per cell excluded; median of `runs` timed calls "
        f"(up to {args.repeats}, at least {args.min_repeats}, cut to ~{args.budget_s:g} s per cell)",
        f"- FLOPs per crop: {flops_label}; peak for MFU: " + "; ".join(f"{p}: {label}" for p, label in peaks.items()),
        "",
        "| precision | batch | crops/s | ms/batch | ms/crop | runs | MFU |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
