"""The per-worker Ray Train loop: wire shards, DDP, checkpoints and reports around train_step/eval_step.

Per worker (DDP rank):

1. Build the detector (its random parts come from ``model.init_seed``: the same
   base on every rank and in a stream rebuilding it, when ``pretrained='none'``).
2. Resume from ``ray.train.get_checkpoint()`` if there is one (after a worker
   failure or a restart of the run): LN + head tensors, optimiser state, epoch, step.
3. Each epoch: train on this rank's shard of the train split, evaluate this
   rank's slice of the validation split, gather the crop scores, compute the
   video metrics (identical on every rank), and ``ray.train.report`` them with a
   checkpoint written by rank 0. Ray keeps the best by ``val_video_map``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from clipguard.model import DetectorConfig, PreprocessConfig, build_detector
from clipguard.model.detector import Detector
from clipguard.model.inference import resolve_autocast_dtype
from training.augment import build_train_augment
from training.crop_dataset import CropDataset, eval_loader, load_splits, train_loader
from training.crop_manifest import CropRow
from training.eval_metrics import DetectionMetrics, detection_metrics
from training.progress import Progress
from training.schedules import build_schedule
from training.train_config import FaultSection, TrainConfig, build_train_config
from training.train_log import ProgressLog
from training.train_state import TrainState, restore_detector, restore_optimizer, save_train_state
from training.train_step import TrainForward, eval_step, speed_up, train_step

logger = logging.getLogger(__name__)


DETECTION_FIELDS = tuple(field.name for field in dataclasses.fields(DetectionMetrics))
STEP_LINE_EVERY_S = 30.0  # rank 0 prints "epoch e/E steps n/N, rate, ETA" this often (and at each epoch's end)


def _eval_train_now(cfg: TrainConfig, epoch: int) -> bool:
    """Score the train split this epoch? Every ``eval_train_every`` epochs and at the last."""
    every = cfg.data.eval_train_every
    return bool(every) and ((epoch + 1) % every == 0 or epoch == cfg.optim.epochs - 1)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch, rank)."""
    return (seed * 1_000_003 + epoch) * 1024 + rank


def crash_if_configured(fault: FaultSection, rank: int, epoch: int) -> None:
    """Test-only: exit this worker process once (a marker file makes it once)."""
    if fault.enabled and rank == fault.rank and epoch == fault.epoch and not fault.marker.exists():
        fault.marker.parent.mkdir(parents=True, exist_ok=True)
        fault.marker.write_text(f"rank {rank} exited at the start of epoch {epoch}\n")
        logger.error("fault injection: rank %d exits at the start of epoch %d", rank, epoch)
        os._exit(1)


def _gather(local: list[Any]) -> list[Any]:
    """Concatenate every rank's list, in rank order (the list itself without DDP)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(local)
    parts: list[list[Any]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(parts, local)
    return [item for part in parts for item in part]


def _sum_across_ranks(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def evaluate(
    detector: Detector, loader: DataLoader, rows: list[CropRow], *, device: torch.device, autocast_dtype
) -> DetectionMetrics:
    """Score this rank's slice, gather every rank's scores, and compute the split's metrics."""
    local: list[tuple[int, float]] = []
    for crops, _, index in loader:
        scores = eval_step(detector, crops.to(device), preprocess=PreprocessConfig(), autocast_dtype=autocast_dtype)
        local.extend(zip(index.tolist(), scores.tolist(), strict=True))
    gathered = sorted(_gather(local))
    return detection_metrics(
        [rows[i].video_id for i, _ in gathered], [rows[i].label for i, _ in gathered], [p for _, p in gathered]
    )


@contextlib.contextmanager
def _checkpoint_dir() -> Iterator[Path | None]:
    """The folder of the checkpoint to resume from, or None for a fresh start."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as folder:
        yield Path(folder)


def _build(
    cfg: TrainConfig, rank: int, autocast_dtype: torch.dtype | None
) -> tuple[Detector, TrainForward, nn.Module, torch.optim.Optimizer, TrainState]:
    """Detector, training forward (DDP-wrapped), optimiser, and where to start (resumed if a checkpoint exists)."""
    detector = build_detector(DetectorConfig(**cfg.model.model_dump()))
    forward = TrainForward(detector, slerp=cfg.loss.weights().slerp, t_range=cfg.loss.slerp_t, seed=cfg.run.seed)
    start = TrainState(epoch=-1, step=0)
    with _checkpoint_dir() as resume_from:
        if resume_from is not None:
            start = restore_detector(resume_from, detector)
        speed_up(detector, cfg.run, autocast_dtype)  # after the restore: it checks the weights as loaded
        model = ray.train.torch.prepare_model(forward)  # device + DDP (gloo on CPU, NCCL on GPU)
        trainable = [p for p in detector.parameters() if p.requires_grad]
        optim = cfg.optim
        optimizer = torch.optim.AdamW(trainable, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
        if resume_from is not None:
            restore_optimizer(resume_from, optimizer)  # after the move to the device: the state follows
            logger.info("rank %d resumed after epoch %d (step %d) from %s", rank, start.epoch, start.step, resume_from)
    return detector, forward, model, optimizer, start


def _loaders(cfg: TrainConfig, rank: int, world: int) -> tuple[DataLoader, Any, dict[str, tuple[DataLoader, list]]]:
    """This rank's train loader and sampler, and its evaluation slices by split name."""
    train_rows, val_rows = load_splits(cfg.data.crops, cfg.data.train_split, cfg.data.val_split)
    root = cfg.data.crops.parent
    workers = cfg.data.loader_workers
    loader, sampler = train_loader(
        CropDataset(train_rows, root, build_train_augment(cfg.augment)),
        batch_size=cfg.data.batch_size // world,
        rank=rank,
        world=world,
        seed=cfg.run.seed,
        workers=workers,
        sampling=cfg.data.sampling,
    )
    splits = {"val": val_rows, **({"train": train_rows} if cfg.data.eval_train_every else {})}
    evals = {
        name: (eval_loader(CropDataset(rows, root), batch_size=cfg.data.eval_batch_size, rank=rank, world=world,
                           workers=workers), rows)
        for name, rows in splits.items()
    }  # fmt: skip
    return loader, sampler, evals


def _train_epoch(
    model: nn.Module, loader: DataLoader, optimizer, schedule, step: int, cfg: TrainConfig, device, autocast_dtype,
    progress: Progress | None = None,
) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """One pass over this rank's shard; returns the next step and the epoch's mean losses over all ranks."""
    weights = cfg.loss.weights()
    sums = [0.0] * 5  # total, ce, align, unif, finished steps
    skipped, lr = 0, schedule(step)
    if progress is not None:
        progress.start(len(loader))
    for crops, labels, _ in loader:
        lr = schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        result = train_step(model, crops.to(device), labels.to(device), optimizer, weights,
                            preprocess=PreprocessConfig(), autocast_dtype=autocast_dtype, step=step)  # fmt: skip
        step += 1
        if progress is not None:
            progress.advance()
        if result.skipped:
            skipped += 1  # the ranks agreed, so every rank counts the same
            continue
        for k, name in enumerate(("total", "ce", "align", "unif")):
            sums[k] += result.losses[name]
        sums[4] += 1
    sums = _sum_across_ranks(sums, device)
    done = max(sums[4], 1.0)
    means = {f"train_{name}": sums[k] / done for k, name in enumerate(("loss", "ce", "align", "unif"))}
    return step, {"lr": lr, **means, "skipped_steps": skipped}


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``; ``config`` is ``TrainConfig.model_dump(mode='json')``."""
    cfg: TrainConfig = build_train_config(config, where="train_loop_config")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    # Use the CPUs this worker reserved, whatever OMP_NUM_THREADS the node inherited: two workers
    # oversubscribing the cores slow every gradient all-reduce to the pace of the slowest thread.
    torch.set_num_threads(max(1, int(cfg.run.cpus_per_worker)))
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    autocast_dtype = resolve_autocast_dtype(cfg.run.precision, device)
    detector, forward, model, optimizer, start = _build(cfg, rank, autocast_dtype)
    loader, sampler, evals = _loaders(cfg, rank, world)
    schedule = build_schedule(cfg.optim, steps_per_epoch=len(loader))
    log = (
        ProgressLog(cfg.run_dir, tensorboard=cfg.run.tensorboard, total_epochs=cfg.optim.epochs) if rank == 0 else None
    )

    step = start.step
    for epoch in range(start.epoch + 1, cfg.optim.epochs):
        crash_if_configured(cfg.fault, rank, epoch)
        began = time.monotonic()
        torch.manual_seed(_epoch_seed(cfg.run.seed, epoch, rank))  # augmentation draws
        forward.reseed(_epoch_seed(cfg.run.seed, epoch, rank))  # slerp draws
        sampler.set_epoch(epoch)
        steps = Progress(f"epoch {epoch + 1}/{cfg.optim.epochs}", "steps", stream=sys.stdout, tty=False,
                         min_interval_s=STEP_LINE_EVERY_S) if rank == 0 else None  # fmt: skip
        step, train_metrics = _train_epoch(model, loader, optimizer, schedule, step, cfg, device, autocast_dtype,
                                           steps)  # fmt: skip
        metrics: dict[str, Any] = {"epoch": epoch, "step": step, **train_metrics, "resumed_from": start.epoch}
        for split, (split_loader, rows) in evals.items():
            if split == "train" and not _eval_train_now(cfg, epoch):
                metrics.update({f"train_{name}": None for name in DETECTION_FIELDS})  # same columns every epoch
                continue
            found = evaluate(detector, split_loader, rows, device=device, autocast_dtype=autocast_dtype)
            metrics.update(found.to_dict(prefix=f"{split}_"))
        metrics["epoch_s"] = time.monotonic() - began
        _report(metrics, cfg, detector, optimizer, TrainState(epoch=epoch, step=step), rank)
        if log is not None:
            log.write(metrics)


def _report(
    metrics: dict[str, Any], cfg: TrainConfig, detector: Detector, optimizer, state: TrainState, rank: int
) -> None:
    """``ray.train.report`` on every rank; rank 0 attaches the checkpoint."""
    with tempfile.TemporaryDirectory(prefix="clipguard-ckpt-") as tmp:
        checkpoint = None
        if rank == 0:
            val_metrics = {k: float(v) for k, v in metrics.items() if k.startswith("val_")}
            save_train_state(Path(tmp), detector, optimizer, state, config=cfg, metrics=val_metrics)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)
