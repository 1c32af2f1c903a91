"""CLIP preprocessing of face crops as one batched tensor op (docs/method.md §2).

Same steps as open_clip's eval transform (PIL): resize the shorter side to 224
with antialiased bicubic, round to uint8 levels as PIL does, centre crop 224,
scale to [0, 1], normalise with CLIP's mean/std. Runs on whatever device the
uint8 batch is on, so the GPU does it and only uint8 crosses the bus.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from clipguard.errors import ModelError
from clipguard.model.config import PreprocessConfig

CropBatch = np.ndarray | torch.Tensor | Sequence[np.ndarray]


def as_uint8_nchw(crops: CropBatch) -> torch.Tensor:
    """Validate a batch of RGB crops and return it as a uint8 (N, 3, H, W) tensor.

    Args:
        crops: uint8 array or tensor (N, H, W, 3) or (N, 3, H, W), or a sequence of
            (H, W, 3) uint8 arrays of one size.

    Raises:
        ModelError: wrong dtype, rank or channel count.
    """
    if isinstance(crops, Sequence) and not isinstance(crops, np.ndarray | torch.Tensor):
        if len(crops) == 0:
            return torch.empty((0, 3, 0, 0), dtype=torch.uint8)
        try:
            crops = np.stack([np.asarray(crop) for crop in crops])
        except ValueError as exc:
            msg = f"crops in one batch must have one shape: {exc}"
            raise ModelError(msg) from exc
    if isinstance(crops, np.ndarray):
        # Ray's object store hands out read-only arrays, which torch.from_numpy warns about; a uint8 copy is cheap.
        batch = torch.from_numpy(np.ascontiguousarray(crops) if crops.flags.writeable else np.array(crops, order="C"))
    else:
        batch = crops
    if not isinstance(batch, torch.Tensor):
        msg = f"crops must be a numpy array, a torch tensor or a sequence of arrays, got {type(crops).__name__}"
        raise ModelError(msg)
    if batch.dtype != torch.uint8:
        msg = f"crops must be uint8 RGB, got {batch.dtype}"
        raise ModelError(msg)
    if batch.ndim != 4:
        msg = f"crops must be a batch (N, H, W, 3) or (N, 3, H, W), got shape {tuple(batch.shape)}"
        raise ModelError(msg)
    if batch.shape[-1] == 3:
        return batch.permute(0, 3, 1, 2)
    if batch.shape[1] == 3:
        return batch
    msg = f"crops must have 3 (RGB) channels first or last, got shape {tuple(batch.shape)}"
    raise ModelError(msg)


def _resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """torchvision's Resize(int) rule: the shorter side becomes ``short_side``."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def clip_preprocess(images: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Turn uint8 (N, 3, H, W) images into the tower's normalised fp32 input.

    Args:
        images: uint8 NCHW batch, on any device (see :func:`as_uint8_nchw`).
        config: sizes and normalisation constants.

    Returns:
        fp32 (N, 3, image_size, image_size) on the same device.
    """
    size = config.image_size
    x = images.contiguous().float()  # NCHW-contiguous: the antialiased resize is faster than on channels-last
    height, width = x.shape[-2:]
    new_h, new_w = _resized_size(height, width, size)
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 255.0).round_()  # PIL's bicubic resize yields uint8 levels
    top = int(round((new_h - size) / 2.0))  # torchvision CenterCrop's offsets
    left = int(round((new_w - size) / 2.0))
    x = x[:, :, top : top + size, left : left + size]
    mean = torch.tensor(config.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean) / std
