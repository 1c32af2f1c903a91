"""LN-tuning train-step throughput (crops/s) by variant: what ``run.frozen_weights`` and ``run.compile`` buy.

Times ``training.train_step.train_step`` (the paper preset: CE + uniformity +
alignment, slerp on) on random uint8 crops already on the device, with AdamW over the
trained parameters, the detector prepared by ``training.train_loop.speed_up`` exactly
as a training worker prepares it. No Ray, data loading or augmentation: the step alone.

Variants (each on a fresh detector):

* ``autocast``: fp32 weights under bf16 autocast (``run.frozen_weights=fp32``);
* ``bf16-frozen``: frozen weights cast once to bf16 (``run.frozen_weights=auto`` on CUDA);
* ``bf16-frozen+compile``: the same with ``run.compile=default`` (its compile time
  is reported apart from the timed steps).

Share of peak counts 2 forward passes per step (forward, and a backward that needs
input gradients only: the frozen weights get none), 162 GFLOPs a ViT-L/14 crop, as
issue 13 does; the peak is ``--peak-tflops`` (default 790, the H200's bf16 matmul
peak measured on the card).

    python -m bench.bench_train_step                                  # ViT-L-14, batch 128, on CUDA
    python -m bench.bench_train_step --arch ViT-Tiny-test --batch 4 --steps 2 --cpu-bf16   # CPU smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.bench_detector import VIT_L14_FLOPS, machine_description, vit_flops_per_crop
from clipguard.model import DetectorConfig, PreprocessConfig, build_detector, resolve_device
from clipguard.model.inference import resolve_autocast_dtype
from training.losses import PRESETS
from training.train_config import RunSection
from training.train_step import TrainForward, speed_up, train_step

VARIANTS = {  # name -> RunSection fields
    "autocast": {"frozen_weights": "fp32", "compile": "off"},
    "bf16-frozen": {"frozen_weights": "auto", "compile": "off"},
    "bf16-frozen+compile": {"frozen_weights": "auto", "compile": "default"},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(arch: str, variant: str, device: torch.device, autocast_dtype, batch: int, warmup: int, steps: int):
    """(first step s, warm-up steps s, median step s, peak GiB, FLOPs label) of one variant on a fresh detector."""
    torch.manual_seed(0)
    detector = build_detector(DetectorConfig(arch=arch, pretrained="none"))
    flops_label = vit_flops_per_crop(detector)[1]
    run = RunSection(use_gpu=device.type == "cuda", **VARIANTS[variant])
    speed_up(detector, run, autocast_dtype)
    detector.to(device)
    forward = TrainForward(detector, slerp=True, seed=0)
    optimizer = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, generator=gen).to(device)
    labels = (torch.arange(batch) % 2).to(device)

    def step() -> float:
        start = time.perf_counter()
        result = train_step(forward, crops, labels, optimizer, PRESETS["paper"], preprocess=PreprocessConfig(),
                            autocast_dtype=autocast_dtype)  # fmt: skip
        _sync(device)
        if result.skipped:
            raise RuntimeError(f"{variant}: step skipped: {result.reason}")
        return time.perf_counter() - start

    first = step()  # compiles, when the variant compiles
    warm = sum(step() for _ in range(warmup))
    times = [step() for _ in range(steps)]
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return first, warm, statistics.median(times), peak_mem, flops_label


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="ViT-L-14")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 peak for the share column")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="bf16 autocast on the CPU (7x slower than fp32 there: for smoke tests only)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    autocast_dtype = torch.bfloat16 if args.cpu_bf16 else resolve_autocast_dtype("auto", device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # as training workers do
    rows, failed, flops_label = [], 0, "n/a (no variant ran)"
    for variant in args.variants.split(","):
        if VARIANTS[variant]["frozen_weights"] == "auto" and autocast_dtype is None:
            rows.append(f"| {variant} | n/a: fp32 on {device.type} (the cast needs bf16 autocast) | | | | | |")
            continue
        try:
            first, warm, median_s, mem, flops_label = measure(args.arch, variant, device, autocast_dtype, args.batch,
                                                 args.warmup, args.steps)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a variant that fails is a row of the table, not the end of it
            failed += 1
            rows.append(f"| {variant} | **failed**: {type(exc).__name__}: {str(exc)[:200]} | | | | | |")
            continue
        crops_s = args.batch / median_s
        share = "n/a"
        if device.type == "cuda" and args.arch == "ViT-L-14":
            share = f"{100 * crops_s * 2 * VIT_L14_FLOPS / (args.peak_tflops * 1e12):.0f} %"
        memory = f"{mem:.1f}" if mem is not None else "n/a"
        rows.append(f"| {variant} | {crops_s:.1f} | {1e3 * median_s:.0f} | {first:.1f} | {warm:.1f} | {share} | "
                    f"{memory} |")  # fmt: skip
        print(rows[-1], file=sys.stderr, flush=True)
    lines = [
        f"# LN-tuning train step: {args.arch}, batch {args.batch}, on {device.type}",
        "",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine_description(device)}",
        f"- torch {torch.__version__}, python {platform.python_version()}; autocast: {autocast_dtype}",
        f"- measured: `train_step`, paper preset (CE + unif + align, slerp), AdamW over the trained parameters; "
        f"random uint8 crops on the device; first step (compile) and {args.warmup} warm-up steps apart, median "
        f"of {args.steps} timed steps",
        f"- FLOPs per crop: {flops_label}; share = crops/s x 2 forwards / {args.peak_tflops:g} "
        "TFLOP/s (ViT-L-14 on CUDA only)",
        "",
        "| variant | crops/s | ms/step | first step s | warm-up s | share of peak | peak GiB |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
