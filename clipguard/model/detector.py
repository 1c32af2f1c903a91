"""The detector module: CLIP visual tower + linear head on the (normalised) CLS feature."""

from __future__ import annotations

import logging

import torch
from torch import nn

from clipguard.model.config import DetectorConfig
from clipguard.model.head import HeadOutput, NormLinearHead
from clipguard.model.lntuning import apply_tuning, check_tuning
from clipguard.model.tower import build_visual_tower

logger = logging.getLogger(__name__)


class Detector(nn.Module):
    """Maps preprocessed images (B, 3, 224, 224) to logits and unit embeddings.

    Attributes:
        tower: the open_clip VisionTransformer, ``proj`` removed.
        head: :class:`NormLinearHead`.
        arch, base_source, quick_gelu, init_seed: identity of the base tower, recorded
            in checkpoint manifests and checked when a checkpoint is loaded.
        tuning, l2_normalize: what trains and whether the head normalises
            (docs/method.md §8); recorded and checked the same way.
        base_fingerprint_pin: the base tower's fingerprint taken before its frozen
            weights were cast for speed (``clipguard/model/frozen_weights.py``); None
            while they are as loaded.
    """

    def __init__(
        self,
        tower: nn.Module,
        feature_dim: int,
        *,
        arch: str,
        base_source: str,
        quick_gelu: bool,
        num_classes: int = 2,
        tuning: str = "ln",
        l2_normalize: bool = True,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        self.tower = tower
        self.head = NormLinearHead(feature_dim, num_classes, l2_normalize=l2_normalize)
        self.feature_dim = feature_dim
        self.arch = arch
        self.base_source = base_source
        self.quick_gelu = quick_gelu
        self.tuning = check_tuning(tuning)
        self.l2_normalize = l2_normalize
        self.init_seed = init_seed
        self.base_fingerprint_pin: str | None = None

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """CLS token after ``ln_post`` (B, feature_dim), the method's feature f."""
        return self.tower(images)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit embeddings z (B, feature_dim), fp32; training applies slerp to these."""
        return self.head.embed(self.features(images))

    def forward(self, images: torch.Tensor) -> HeadOutput:
        """Logits and unit embeddings."""
        return self.head(self.features(images))


def build_detector(config: DetectorConfig) -> Detector:
    """Build the tower and a fresh head on the CPU, with the config's tuning applied.

    The head is untrained until a checkpoint is loaded into it.

    Raises:
        ModelError: the tower cannot be built (see :func:`build_visual_tower`).
    """
    # Random parts (the head; the whole tower with pretrained='none') are drawn from a
    # fixed seed without touching the caller's RNG: every actor, restart and process
    # builds the same model, so its version string names one model and redelivered
    # videos reproduce their verdicts.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)
        tower = build_visual_tower(config.arch, config.pretrained, quick_gelu=config.quick_gelu)
        detector = Detector(
            tower.module,
            tower.feature_dim,
            arch=config.arch,
            base_source=tower.base_source,
            quick_gelu=config.quick_gelu,
            num_classes=config.num_classes,
            tuning=config.tuning,
            l2_normalize=config.l2_normalize,
            init_seed=config.init_seed,
        )
    counts = apply_tuning(detector, config.tuning)
    logger.info(
        "built %s (base %s, tuning %s, l2_normalize %s): %d of %d parameters trainable (%d LayerNorm + %d head)",
        config.arch,
        tower.base_source,
        config.tuning,
        config.l2_normalize,
        counts.trainable,
        counts.total,
        counts.layernorm,
        counts.head,
    )
    return detector
