"""The detector model, shared by serving and training.

Serving (``workers/scorer_actor.py``) imports only from here. Nothing in this package
imports losses, slerp, data loading or Ray Train.

Typical use::

    from clipguard.model import CropScorer, DetectorConfig

    scorer = CropScorer.from_config(DetectorConfig(arch="ViT-L-14", pretrained="openai"), "ckpt/best.safetensors")
    scorer.version           # 'clipguard-ViT-L-14-<sha12>', recorded in verdicts
    scorer.score(crops)      # (N,) float32 p_fake for uint8 (N, 256, 256, 3) crops

Names are re-exported lazily (PEP 562), so importing ``clipguard.model.config``
alone does not pull in torch or open_clip.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "clipguard.model.checkpoint": ("load_checkpoint", "save_checkpoint", "untrained_version"),
    "clipguard.model.manifest": ("CheckpointManifest", "read_manifest"),
    "clipguard.model.config": ("CLIP_MEAN", "CLIP_STD", "DetectorConfig", "PreprocessConfig"),
    "clipguard.model.detector": ("Detector", "build_detector"),
    "clipguard.model.device_scorer": ("DeviceScorer", "plan_batches"),
    "clipguard.model.head": ("HeadOutput", "NormLinearHead", "p_fake"),
    "clipguard.model.inference": ("CropScorer", "resolve_autocast_dtype", "resolve_device"),
    "clipguard.model.lntuning": (
        "ParamCounts",
        "apply_ln_tuning",
        "apply_tuning",
        "count_parameters",
        "is_layernorm_param",
    ),
    "clipguard.model.preprocess": ("as_uint8_nchw", "clip_preprocess"),
    "clipguard.model.tower": ("Tower", "build_visual_tower"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        msg = f"module 'clipguard.model' has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
