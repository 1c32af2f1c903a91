"""Learning-rate schedules as pure functions of the optimiser step (docs/method.md §7).

The schedule's whole state is the step count, so resuming a run restores the
learning rate exactly by restoring the step.

* ``cosine_lr`` (reference example): half a cosine per step from ``lr`` down
  to ``lr_min`` over the run; step ``total_steps`` would reach ``lr_min``
  (the convention of torch's ``CosineAnnealingLR`` with ``T_max = total_steps``).
* ``gend_lr`` (GenD follow-up): linear warm-up ``warmup_lr -> lr`` over the
  first ``warmup_steps``, then cosine warm restarts (SGDR, Loshchilov & Hutter,
  arXiv 1608.03983) from ``lr`` down to ``lr_min`` every ``restart_steps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from training.train_config import OptimSection

Schedule = Callable[[int], float]


def _cosine(progress: float, high: float, low: float) -> float:
    """high at progress 0, low at progress 1, half a cosine between."""
    return low + (high - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_lr(step: int, *, total_steps: int, lr: float, lr_min: float) -> float:
    """Reference schedule: cosine per step from ``lr`` (step 0) towards ``lr_min`` (step ``total_steps``).

    Raises:
        ValueError: a negative step or a non-positive ``total_steps``.
    """
    _check(step, total_steps=total_steps)
    return _cosine(min(step, total_steps) / total_steps, lr, lr_min)


def gend_lr(step: int, *, warmup_steps: int, restart_steps: int, lr: float, lr_min: float, warmup_lr: float) -> float:
    """GenD schedule: linear warm-up, then cosine warm restarts every ``restart_steps``.

    Args:
        step: optimiser step, from 0.
        warmup_steps: steps of the linear warm-up (one epoch in GenD; 0 = none).
        restart_steps: period of the cosine restarts (ten epochs in GenD).
        lr: peak rate, reached at the end of the warm-up and at each restart.
        lr_min: floor each cosine period decays towards.
        warmup_lr: rate at step 0 of the warm-up.

    Raises:
        ValueError: a negative step or a non-positive ``restart_steps``.
    """
    _check(step, restart_steps=restart_steps)
    if warmup_steps < 0:
        msg = f"warmup_steps must be >= 0, got {warmup_steps}"
        raise ValueError(msg)
    if step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    into_period = (step - warmup_steps) % restart_steps
    return _cosine(into_period / restart_steps, lr, lr_min)


def build_schedule(optim: OptimSection, steps_per_epoch: int) -> Schedule:
    """The configured schedule as ``step -> lr`` for a run of ``optim.epochs`` epochs."""
    if steps_per_epoch < 1:
        msg = f"steps_per_epoch must be >= 1, got {steps_per_epoch}"
        raise ValueError(msg)
    if optim.schedule == "cosine":
        total = optim.epochs * steps_per_epoch
        return lambda step: cosine_lr(step, total_steps=total, lr=optim.lr, lr_min=optim.lr_min)
    return lambda step: gend_lr(
        step,
        warmup_steps=optim.warmup_epochs * steps_per_epoch,
        restart_steps=optim.restart_epochs * steps_per_epoch,
        lr=optim.lr,
        lr_min=optim.lr_min,
        warmup_lr=optim.warmup_lr,
    )


def _check(step: int, **positive: int) -> None:
    if step < 0:
        msg = f"step must be >= 0, got {step}"
        raise ValueError(msg)
    for name, value in positive.items():
        if value < 1:
            msg = f"{name} must be >= 1, got {value}"
            raise ValueError(msg)
