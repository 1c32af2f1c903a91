"""Build the CLIP visual tower through open_clip, keeping only what the detector uses.

The feature is the CLS token after ``ln_post`` (1024-d for ViT-L/14, docs/method.md §1).
open_clip's ViT applies ``proj`` only when it is set, so ``proj = None`` gives that
feature without touching ``forward``. The text tower is dropped right after the
build so only the visual tower stays in memory.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import open_clip
from open_clip.transformer import VisionTransformer
from safetensors import SafetensorError

from clipguard.errors import ModelError

logger = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
NO_WEIGHTS = "none"

# What a broken weights file or a failed download raises inside open_clip.create_model.
_LOAD_ERRORS = (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError)


@dataclass(frozen=True)
class Tower:
    """A built visual tower and where its weights came from."""

    module: VisionTransformer
    feature_dim: int  # width of the CLS feature after ln_post
    base_source: str  # 'openai' (a tag), 'file:<name>', or 'none'


def register_model_configs() -> None:
    """Make the JSON configs shipped in ``model_configs/`` known to open_clip.

    Called by the builder, not at import (no import-time registry side effects);
    safe to call any number of times.
    """
    shipped = {path.stem for path in MODEL_CONFIG_DIR.glob("*.json")}
    if not shipped <= set(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


def _resolve_weights(arch: str, pretrained: str, quick_gelu: bool) -> tuple[str | None, str]:
    """Turn ``pretrained`` into open_clip's argument and a provenance label."""
    if pretrained == NO_WEIGHTS:
        return None, NO_WEIGHTS
    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if tag_cfg:
        tag_quick_gelu = bool(tag_cfg.get("quick_gelu", False))
        if tag_quick_gelu != quick_gelu:
            msg = (
                f"pretrained tag {arch}/{pretrained!r} was trained with quick_gelu={tag_quick_gelu} "
                f"but the config asks for quick_gelu={quick_gelu}"
            )
            raise ModelError(msg)
        return pretrained, pretrained
    path = Path(pretrained)
    if path.is_file():
        return str(path), f"file:{path.name}"
    tags = open_clip.list_pretrained_tags_by_model(arch)
    msg = f"pretrained={pretrained!r} is not a weights file nor a tag of {arch} (tags: {tags}); 'none' = random init"
    raise ModelError(msg)


def _check_plain_vit(arch: str) -> None:
    """Refuse configs whose tower is not an open_clip ViT with a CLS token."""
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        msg = f"unknown open_clip architecture {arch!r}"
        raise ModelError(msg)
    vision = cfg.get("vision_cfg", {})
    if vision.get("timm_model_name") or not isinstance(vision.get("layers", 12), int):
        msg = f"{arch} is not an open_clip VisionTransformer (timm or ResNet tower); the method needs a CLIP ViT"
        raise ModelError(msg)
    if vision.get("attentional_pool") or vision.get("pool_type", "tok") != "tok":
        msg = f"{arch} does not pool the CLS token; the method's feature is the CLS token after ln_post"
        raise ModelError(msg)


def build_visual_tower(arch: str, pretrained: str, *, quick_gelu: bool) -> Tower:
    """Build the visual tower of an open_clip ViT, with ``proj`` removed.

    Args:
        arch: open_clip config name (``ViT-L-14``, or a config in ``model_configs/``).
        pretrained: an open_clip tag such as ``openai``, a local full-CLIP weights
            file (open_clip or OpenAI format), or ``'none'`` for random init.
        quick_gelu: activation of the MLPs; OpenAI CLIP weights need True.

    Returns:
        The tower in fp32 on the CPU, in eval mode.

    Raises:
        ModelError: unknown arch or tag, missing file, or weights that fail to load
            (never a silent random init).
    """
    register_model_configs()
    _check_plain_vit(arch)
    weights, source = _resolve_weights(arch, pretrained, quick_gelu)
    if weights is None:
        logger.warning("building %s with random weights (pretrained='none'): for tests and benchmarks only", arch)
    try:
        clip = open_clip.create_model(
            arch,
            pretrained=weights,
            precision="fp32",
            device="cpu",
            force_quick_gelu=quick_gelu,
            quick_gelu=quick_gelu,  # also wins over a config JSON that sets quick_gelu
            require_pretrained=weights is not None,
        )
    except _LOAD_ERRORS as exc:
        msg = f"could not build {arch} with pretrained={pretrained!r}: {exc}"
        raise ModelError(msg) from exc
    visual = clip.visual
    del clip  # drop the text tower now; only the visual tower is referenced from here on
    if not isinstance(visual, VisionTransformer):
        msg = f"{arch} built a {type(visual).__name__}, not an open_clip VisionTransformer"
        raise ModelError(msg)
    visual.proj = None  # open_clip's switch: forward then returns the post-ln_post CLS token
    visual.eval()
    feature_dim = int(visual.ln_post.weight.shape[0])
    return Tower(module=visual, feature_dim=feature_dim, base_source=source)
