"""Train augmentations of the 256x256 uint8 face crop, before CLIP preprocessing (docs/method.md §7).

Order: horizontal flip -> affine (rotation, translation, scale) -> Gaussian blur
(with probability ``blur_p``) -> brightness/contrast jitter -> JPEG re-encoding.
JPEG comes last so its block artefacts sit on top of everything else, as in a
re-uploaded video. Every op works on uint8 CHW tensors (torchvision
transforms v2), so the crop stays uint8 until ``clip_preprocess`` on the device.

Randomness comes from torch's global generator; the training loop seeds it per
epoch and rank, so a resumed run draws the same augmentations.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from training.train_config import AugmentSection


def blur_kernel_size(max_sigma: float) -> int:
    """Odd kernel covering ±3σ of the widest blur, so the Gaussian is not truncated."""
    return 2 * math.ceil(3.0 * max_sigma) + 1


def build_train_augment(cfg: AugmentSection) -> T.Transform:
    """The configured augmentation chain; the identity when ``cfg.enabled`` is False.

    Args:
        cfg: the augment section of the training config.

    Returns:
        A transform from uint8 (3, H, W) to uint8 (3, H, W) of the same size.
    """
    if not cfg.enabled:
        return T.Identity()
    ops: list[T.Transform] = []
    if cfg.hflip_p > 0:
        ops.append(T.RandomHorizontalFlip(p=cfg.hflip_p))
    if cfg.rotate_deg > 0 or cfg.translate > 0 or tuple(cfg.scale) != (1.0, 1.0):
        ops.append(
            T.RandomAffine(
                degrees=cfg.rotate_deg,
                translate=(cfg.translate, cfg.translate),
                scale=cfg.scale,
                interpolation=InterpolationMode.BILINEAR,
                fill=0,  # black, like the borders of the aligned crop itself
            )
        )
    if cfg.blur_p > 0:
        blur = T.GaussianBlur(kernel_size=blur_kernel_size(cfg.blur_sigma[1]), sigma=cfg.blur_sigma)
        ops.append(T.RandomApply([blur], p=cfg.blur_p))
    if cfg.brightness > 0 or cfg.contrast > 0:
        ops.append(T.ColorJitter(brightness=cfg.brightness or None, contrast=cfg.contrast or None))
    ops.append(T.JPEG(quality=list(cfg.jpeg_quality)))
    return T.Compose(ops)


def augment_crop(transform: T.Transform, crop: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to one uint8 (3, H, W) crop, checking that it stays uint8 and the same size."""
    if crop.dtype != torch.uint8 or crop.ndim != 3 or crop.shape[0] != 3:
        msg = f"augmentations take a uint8 (3, H, W) crop, got {crop.dtype} {tuple(crop.shape)}"
        raise ValueError(msg)
    out = transform(crop)
    if out.dtype != torch.uint8 or out.shape != crop.shape:
        msg = f"augmentation changed the crop to {out.dtype} {tuple(out.shape)}"
        raise ValueError(msg)
    return out
