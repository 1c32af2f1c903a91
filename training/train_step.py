"""One optimisation step and one evaluation step: plain functions of (model, batch, loss, optimiser).

:func:`speed_up` prepares the detector for the step as ``run.frozen_weights`` and
``run.compile`` say (frozen weights cast once to bf16, the tower compiled).

The training forward is a small module, :class:`TrainForward`, so that DDP
wraps the whole graph (features -> unit z -> slerp -> head) and syncs every
gradient: slerp sits between the L2 normalisation and the linear head, and the
losses and head see the augmented embeddings (docs/method.md §3-4).

A NaN or infinite loss never reaches the optimiser: the step is skipped on
every rank (the ranks agree first, otherwise DDP's gradient all-reduce would
wait forever for the rank that skipped) and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from clipguard.errors import ConfigError
from clipguard.model import PreprocessConfig, clip_preprocess
from clipguard.model.detector import Detector
from clipguard.model.frozen_weights import cast_frozen_weights, resolve_frozen_dtype
from clipguard.model.head import HeadOutput, p_fake
from clipguard.model.inference import autocast_context
from training.losses import LossTerms, LossWeights, detector_loss
from training.slerp import slerp_within_class
from training.train_config import RunSection

logger = logging.getLogger(__name__)


class TrainForward(nn.Module):
    """The detector's training forward: features, unit embeddings, slerp within class (if enabled), classify.

    The losses get the unit embeddings z = f/||f|| (docs/method.md §3). The head gets z when
    the detector L2-normalises (slerp then replaces z, docs/method.md §4), else the raw
    feature f (the ablation's rows without L2; slerp, an interpolation on the sphere, is
    refused there by the training config).

    Args:
        detector: the LN-tuned detector (its parameters are the ones trained).
        slerp: apply the slerp latent augmentation (the preset decides).
        t_range: (t0, t1) of the uniform draw of t.
        seed: seed of the slerp generator; :meth:`reseed` sets it per epoch.
    """

    def __init__(
        self, detector: Detector, *, slerp: bool, t_range: tuple[float, float] = (0.0, 1.0), seed: int = 0
    ) -> None:
        super().__init__()
        self.detector = detector
        self.slerp = slerp
        self.t_range = t_range
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the slerp draws (per epoch, so a resumed run draws the same)."""
        self.generator.manual_seed(seed)

    def forward(self, pixels: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        head = self.detector.head
        features = self.detector.features(pixels)
        z = head.embed(features)
        if self.slerp:
            if not head.l2_normalize:
                msg = "slerp needs the L2-normalised head (docs/method.md §4); set model.l2_normalize=true or slerp off"
                raise ConfigError(msg)
            z = slerp_within_class(z, labels, self.generator, self.t_range)
        return HeadOutput(logits=head.classify(z if head.l2_normalize else features.float()), embeddings=z)


@dataclass(frozen=True)
class StepResult:
    """Loss terms of a step that ran, or the reason it was skipped."""

    losses: dict[str, float]  # ce, align, unif, total (empty when skipped)
    skipped: bool = False
    reason: str = ""


def nonfinite_message(terms: LossTerms) -> str:
    """'' when every term is finite, else which terms are NaN/inf and their values."""
    bad = {name: float(value) for name, value in terms.values().items() if not bool(torch.isfinite(value).all())}
    return "" if not bad else "non-finite loss (" + ", ".join(f"{k}={v}" for k, v in bad.items()) + ")"


def all_ranks_ok(ok: bool, device: torch.device) -> bool:
    """True only if ``ok`` holds on every rank (a MIN all-reduce; the value itself without DDP)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def train_step(
    model: nn.Module,
    crops: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    weights: LossWeights,
    *,
    preprocess: PreprocessConfig,
    autocast_dtype: torch.dtype | None,
    step: int = -1,
) -> StepResult:
    """Forward, loss, and (if the loss is finite on every rank) backward and optimiser step.

    Args:
        model: :class:`TrainForward`, possibly wrapped by DDP.
        crops: uint8 (B, 3, 256, 256) augmented crops, on the training device.
        labels: (B,) int64 labels on the same device.
        optimizer: over the LN and head parameters.
        weights: loss weights of the preset.
        preprocess: CLIP preprocessing constants.
        autocast_dtype: bf16 on CUDA, None for fp32.
        step: global step number, for the log line of a skipped step.

    Returns:
        The loss terms, or ``skipped=True`` with the reason; a skipped step leaves
        parameters, gradients and optimiser state untouched.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    pixels = clip_preprocess(crops, preprocess)
    with autocast_context(crops.device, autocast_dtype):
        out = model(pixels, labels)
    terms = detector_loss(out.logits, out.embeddings, labels, weights)
    reason = nonfinite_message(terms)
    if not all_ranks_ok(not reason, crops.device):
        reason = reason or "non-finite loss on another rank"
        logger.warning("step %d skipped, nothing optimised: %s", step, reason)
        optimizer.zero_grad(set_to_none=True)
        return StepResult(losses={}, skipped=True, reason=reason)
    terms.total.backward()
    optimizer.step()
    return StepResult(losses={name: float(value) for name, value in terms.values().items()})


def eval_step(
    detector: Detector, crops: torch.Tensor, *, preprocess: PreprocessConfig, autocast_dtype: torch.dtype | None
) -> torch.Tensor:
    """p_fake (float32, on the CPU) of uint8 crops, without augmentation or slerp.

    Takes the bare detector, not the DDP wrapper: ranks evaluate different
    numbers of crops, and DDP's forward would wait for the others.
    """
    detector.eval()
    with torch.inference_mode():
        pixels = clip_preprocess(crops, preprocess)
        with autocast_context(crops.device, autocast_dtype):
            logits = detector(pixels).logits
    return p_fake(logits).float().cpu()


def speed_up(detector: Detector, run: RunSection, autocast_dtype: torch.dtype | None) -> None:
    """Frozen weights cast once to bf16 under bf16 autocast, and the tower compiled, as ``run`` says.

    The compile is in place (``nn.Module.compile``), so parameter names, and with them
    checkpoints, stay as they are; it happens at the first forward, once per worker.
    """
    cast_frozen_weights(detector, resolve_frozen_dtype(run.frozen_weights, autocast_dtype))
    if run.compile != "off":
        detector.tower.compile(mode=run.compile)
