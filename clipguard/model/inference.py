"""Score face crops: load the detector once, then p_fake per crop (docs/method.md §1-2).

This is what the stream's detector actor holds. It imports nothing from
training-only code (losses, slerp, data, Ray Train).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch

from clipguard.errors import ModelError
from clipguard.model.checkpoint import load_checkpoint, untrained_version
from clipguard.model.config import DetectorConfig
from clipguard.model.detector import Detector, build_detector
from clipguard.model.head import p_fake
from clipguard.model.preprocess import CropBatch, as_uint8_nchw, clip_preprocess

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    """'auto' -> CUDA if present else CPU; 'cuda' without CUDA is an error, never a CPU fallback."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            msg = "device='cuda' was requested but CUDA is not available (torch.cuda.is_available() is False)"
            raise ModelError(msg)
        return torch.device("cuda")
    if requested == "cpu":
        return torch.device("cpu")
    msg = f"device must be 'auto', 'cpu' or 'cuda', got {requested!r}"
    raise ModelError(msg)


def resolve_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for a precision on a device; None means plain fp32.

    'auto' is bf16 on CUDA and fp32 on CPU; 'bf16' on the CPU is refused (the method
    runs fp32 there).
    """
    if precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision == "bf16":
        if device.type != "cuda":
            msg = f"precision='bf16' needs CUDA, the device is {device}"
            raise ModelError(msg)
        return torch.bfloat16
    msg = f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}"
    raise ModelError(msg)


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for a dtype, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class CropScorer:
    """A loaded detector that turns uint8 face crops into p_fake.

    Build it once per process (e.g. in an actor's ``__init__``) with
    :meth:`from_config`; :meth:`score` is then a pure function of the crops.
    """

    def __init__(self, detector: Detector, config: DetectorConfig, *, version: str) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.autocast_dtype = resolve_autocast_dtype(config.precision, self.device)
        self.version = version
        self.detector = detector.to(self.device).eval()

    @classmethod
    def from_config(cls, config: DetectorConfig, checkpoint: str | Path | None = None) -> CropScorer:
        """Build the tower, load a checkpoint if given, and move to the device.

        Args:
            config: architecture, base weights, device and precision.
            checkpoint: ``<name>.safetensors`` (manifest beside it), or None for an
                untrained head (its version says so).

        Raises:
            ModelError: the device or precision cannot be honoured, or the tower fails to build.
            CheckpointError: the checkpoint is missing, tampered or does not match.
        """
        device = resolve_device(config.device)  # fail before the (slow) build
        resolve_autocast_dtype(config.precision, device)
        detector = build_detector(config)
        if checkpoint is None:
            version = untrained_version(config.arch, detector.base_source)
            logger.warning("no checkpoint given: the head is untrained, scores are meaningless (%s)", version)
        else:
            version = load_checkpoint(detector, checkpoint, preprocess=config.preprocess).version
        scorer = cls(detector, config, version=version)
        logger.info("detector %s ready on %s (autocast %s)", version, scorer.device, scorer.autocast_dtype)
        return scorer

    def _check_size(self, batch: torch.Tensor) -> None:
        size = self.config.preprocess.crop_size
        if tuple(batch.shape[-2:]) != (size, size):
            msg = f"crops must be {size}x{size} (configured crop_size), got {tuple(batch.shape[-2:])}"
            raise ModelError(msg)

    def score(self, crops: CropBatch) -> np.ndarray:
        """p_fake for each crop.

        Args:
            crops: uint8 RGB crops, (N, H, W, 3) or (N, 3, H, W) numpy/torch, or a
                sequence of (H, W, 3) arrays; H = W = the configured crop size.

        Returns:
            float32 array (N,) of p_fake in [0, 1].

        Raises:
            ModelError: bad input, or non-finite scores (never a made-up number).
        """
        batch = as_uint8_nchw(crops)
        if batch.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        self._check_size(batch)
        step = self.config.max_batch_size
        out = []
        with torch.inference_mode():
            for start in range(0, batch.shape[0], step):
                chunk = batch[start : start + step].to(self.device, non_blocking=True)
                pixels = clip_preprocess(chunk, self.config.preprocess)
                with autocast_context(self.device, self.autocast_dtype):
                    logits = self.detector(pixels).logits
                out.append(p_fake(logits).cpu())
        scores = torch.cat(out).numpy().astype(np.float32, copy=False)
        if not np.isfinite(scores).all():
            msg = f"detector {self.version} produced non-finite scores for {int((~np.isfinite(scores)).sum())} crops"
            raise ModelError(msg)
        return scores
