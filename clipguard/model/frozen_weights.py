"""Frozen tower weights in bf16 for training under bf16 autocast (docs/method.md §1, §7).

With LN-tuning almost every tower weight is frozen (``requires_grad`` False). Under
``torch.autocast(dtype=bfloat16)`` each matmul casts its fp32 weight to bf16 on every
call, and autocast's cast cache keeps only casts of tensors that require grad, so the
frozen weights are re-cast in every forward of every step: time and memory traffic
spent producing the same bf16 tensors. Casting them once gives the matmuls the very
same bf16 values (autocast rounds the same way), so the losses and the gradients of
the trained parameters do not change; the trained parameters (LayerNorms, head) stay
fp32, as do the ops autocast keeps in fp32 (LayerNorm, softmax, the losses).

The cast changes the bytes of the frozen tensors, and a checkpoint's manifest
identifies its base tower by a fingerprint of those bytes. The fingerprint of the
base as loaded is therefore taken before the cast and kept on the detector
(``Detector.base_fingerprint_pin``): checkpoints written by a bf16-frozen run name
the fp32 base they were trained on and load wherever that base loads.
"""

from __future__ import annotations

import logging

import torch

from clipguard.errors import ConfigError
from clipguard.model.checkpoint import base_fingerprint
from clipguard.model.detector import Detector

logger = logging.getLogger(__name__)


def resolve_frozen_dtype(setting: str, autocast_dtype: torch.dtype | None) -> torch.dtype | None:
    """The dtype frozen weights are cast to, or None to leave them fp32.

    Args:
        setting: ``auto`` (bf16 exactly when training runs under bf16 autocast), ``fp32`` or ``bf16``.
        autocast_dtype: what the training step runs under (None: plain fp32).
    """
    if setting == "fp32":
        return None
    if setting == "auto":
        return torch.bfloat16 if autocast_dtype == torch.bfloat16 else None
    if setting == "bf16":
        if autocast_dtype != torch.bfloat16:
            msg = (
                "run.frozen_weights='bf16' needs bf16 autocast (run.precision 'bf16', or 'auto' on CUDA); "
                "without it the fp32 activations would meet bf16 weights"
            )
            raise ConfigError(msg)
        return torch.bfloat16
    msg = f"run.frozen_weights must be 'auto', 'fp32' or 'bf16', got {setting!r}"
    raise ConfigError(msg)


def cast_frozen_weights(detector: Detector, dtype: torch.dtype | None) -> int:
    """Cast every frozen parameter of ``detector`` to ``dtype`` in place; returns the scalars cast.

    Pins the base fingerprint first (see the module docstring). Trained parameters
    keep their dtype, so the optimiser state and the checkpoint tensors are unchanged.
    ``dtype`` None is a no-op.
    """
    if dtype is None:
        return 0
    if detector.base_fingerprint_pin is None:
        detector.base_fingerprint_pin = base_fingerprint(detector)
    cast = 0
    for param in detector.parameters():
        if not param.requires_grad and param.dtype != dtype:
            param.data = param.data.to(dtype)
            cast += param.numel()
    logger.info("frozen tower weights in %s: %d scalars (trained parameters stay fp32)", dtype, cast)
    return cast
