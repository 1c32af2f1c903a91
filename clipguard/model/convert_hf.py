"""Convert the authors' Hugging Face CLIP-vision checkpoints to clipguard's format.

The authors publish their detector in the ``transformers`` CLIP layout (docs/method.md §9),
e.g. the GenD model: ``feature_extractor.vision_model.*`` for the tower,
``feature_extractor.visual_projection.weight`` (unused here) and the head as
``model.linear.{weight,bias}`` ([2, D] and [2]). A plain ``CLIPVisionModel`` has
``vision_model.*`` only (no prefix at all when saved by transformers 5). The tower
prefix is found from the patch-embedding key, so any prefix works. Name mapping (per layer N)::

    embeddings.class_embedding              -> class_embedding
    embeddings.patch_embedding.weight       -> conv1.weight
    embeddings.position_embedding.weight    -> positional_embedding
    pre_layrnorm.*  (sic)                   -> ln_pre.*
    encoder.layers.N.self_attn.{q,k,v}_proj -> transformer.resblocks.N.attn.in_proj_{weight,bias} (q,k,v fused)
    encoder.layers.N.self_attn.out_proj     -> transformer.resblocks.N.attn.out_proj
    encoder.layers.N.layer_norm1 / 2        -> transformer.resblocks.N.ln_1 / ln_2
    encoder.layers.N.mlp.fc1 / fc2          -> transformer.resblocks.N.mlp.c_fc / c_proj
    post_layernorm.*                        -> ln_post.*

HF's ``pooler_output`` is ``post_layernorm(CLS)``, the same feature as the open_clip
tower with ``proj=None``. Head candidates are looked up by name (``model.linear``,
``head.fc``, ``head``, ``classifier``, ``fc``, ``linear``), then by shape
([2, D] weight with a [2] bias); ``config.json``'s ``head`` says whether it
L2-normalises its input (``LinearNorm``) or not (``linear``). Only safetensors are read (never a pickle);
``huggingface_hub`` is imported only to download a hub repo id. ``transformers``
itself is not needed.

Usage::

    clipguard convert --from-hf yermandy/GenD_CLIP_L_14 --out ckpt/gend/     # training/cli.py
    python -m clipguard.model.convert_hf yermandy/GenD_CLIP_L_14 ckpt/gend --arch ViT-L-14 --pretrained openai
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from clipguard.errors import CheckpointError
from clipguard.model.checkpoint import CheckpointManifest, save_checkpoint
from clipguard.model.config import DetectorConfig
from clipguard.model.detector import Detector, build_detector
from clipguard.model.lntuning import frozen_state_dict

logger = logging.getLogger(__name__)

_PATCH_KEY = "embeddings.patch_embedding.weight"
# Top-level names of an HF CLIP vision tower; transformers 4 prefixes them with 'vision_model.', 5 does not.
_TOWER_ROOTS = ("embeddings.", "pre_layrnorm.", "pre_layernorm.", "encoder.", "post_layernorm.")
_HEAD_NAMES = ("model.linear", "head.fc", "head", "classifier", "fc", "linear")
# Tensors that exist in HF CLIP checkpoints but have no place in the visual tower we keep.
_IGNORED = re.compile(r"(?:^|\.)(?:visual_projection|text_projection|text_model|logit_scale|position_ids)(?:\.|$)")
_EMBED_MAP = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
}
_LAYER_MAP = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_QKV = {"self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v"}  # fused into in_proj
_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


@dataclass(frozen=True)
class HFWeights:
    """Tensors and ``config.json`` (if any) read from an HF checkpoint."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any] | None
    origin: str


@dataclass(frozen=True)
class ConvertedWeights:
    """open_clip tower tensors, head tensors (``fc.weight``/``fc.bias``) if present, and what was skipped."""

    tower: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor] | None
    ignored: tuple[str, ...]


def _read_safetensors_dir(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        files = [directory / shard for shard in shards]
    elif (directory / "model.safetensors").is_file():
        files = [directory / "model.safetensors"]
    else:
        files = sorted(directory.glob("*.safetensors"))
        if len(files) != 1:
            msg = f"{directory}: expected model.safetensors (or one .safetensors file), found {[f.name for f in files]}"
            raise CheckpointError(msg)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file), device="cpu"))
    return state


def _download(repo_id: str) -> Path:
    """A hub repo's safetensors and JSON files: downloaded, or from the local Hugging Face cache when offline."""
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:
        msg = f"{repo_id!r} is not a local path and huggingface_hub is not installed to download it"
        raise CheckpointError(msg) from exc
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.safetensors", "*.json"]))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        if constants.HF_HUB_OFFLINE:
            msg = (
                f"{repo_id!r} is not a local folder, and HF_HUB_OFFLINE is set: a hub repo id works only when the "
                f"repo is already in the Hugging Face cache ({constants.HF_HUB_CACHE}). On a machine with internet: "
                f"`hf download {repo_id} --local-dir DIR`, then give DIR ({exc})"
            )
        else:
            msg = f"could not download {repo_id!r} from the Hugging Face hub: {exc}"
        raise CheckpointError(msg) from exc


def read_hf_weights(source: str | Path) -> HFWeights:
    """Read an HF checkpoint from a ``.safetensors`` file, a local directory, or a hub repo id.

    Raises:
        CheckpointError: nothing readable there, or only pickle (``.bin``) weights.
    """
    path = Path(source)
    if not path.exists() and isinstance(source, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        path = _download(source)
    try:
        if path.is_file() and path.suffix == ".safetensors":
            state, config_path = load_file(str(path), device="cpu"), path.parent / "config.json"
        elif path.is_dir():
            state, config_path = _read_safetensors_dir(path), path / "config.json"
        else:
            msg = f"{source}: not a .safetensors file, a checkpoint directory or a hub repo id (pickles are never read)"
            raise CheckpointError(msg)
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
        msg = f"{source}: could not read the checkpoint: {exc}"
        raise CheckpointError(msg) from exc
    return HFWeights(state_dict=state, config=config, origin=str(source))


def _tower_prefix(state_dict: Mapping[str, torch.Tensor]) -> str:
    matches = [key[: -len(_PATCH_KEY)] for key in state_dict if key.endswith(_PATCH_KEY)]
    if len(matches) != 1:
        msg = f"expected exactly one '*{_PATCH_KEY}' key (the CLIP vision tower), found {matches}"
        raise CheckpointError(msg)
    return matches[0]


def _find_head(rest: Mapping[str, torch.Tensor]) -> tuple[str, ...] | None:
    """Keys (weight, bias) of the 2-class head among non-tower tensors, or None."""
    for name in _HEAD_NAMES:
        if f"{name}.weight" in rest and f"{name}.bias" in rest:
            return f"{name}.weight", f"{name}.bias"
    candidates = [
        key
        for key, t in rest.items()
        if key.endswith(".weight") and t.ndim == 2 and t.shape[0] == 2 and key[: -len("weight")] + "bias" in rest
    ]
    if len(candidates) > 1:
        msg = f"several tensors look like a 2-class head: {candidates}"
        raise CheckpointError(msg)
    if candidates:
        return candidates[0], candidates[0][: -len("weight")] + "bias"
    return None


def convert_hf_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: dict[str, Any] | None = None
) -> ConvertedWeights:
    """Map an HF CLIP-vision state dict (plus optional head) to open_clip tower names.

    Args:
        state_dict: tensors of a ``CLIPVisionModel``, ``CLIPModel`` or the authors' GenD model.
        config: the checkpoint's ``config.json``; if it names a head type or an
            activation that clipguard's detector does not compute, conversion is refused.

    Raises:
        CheckpointError: no tower, an unknown tensor, incomplete q/k/v, or an incompatible head.
    """
    _check_hf_config(config)
    prefix = _tower_prefix(state_dict)
    tower: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    rest: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, tensor in state_dict.items():
        inner = key[len(prefix) :] if key.startswith(prefix) else None
        if _IGNORED.search(key):
            ignored.append(key)
        elif inner is None or not inner.startswith(_TOWER_ROOTS):
            rest[key] = tensor
        elif inner in _EMBED_MAP:
            tower[_EMBED_MAP[inner]] = tensor
        elif inner.startswith(("pre_layrnorm.", "pre_layernorm.")):
            tower["ln_pre." + inner.rsplit(".", 1)[1]] = tensor
        elif inner.startswith("post_layernorm."):
            tower["ln_post." + inner.rsplit(".", 1)[1]] = tensor
        elif (match := _LAYER_KEY.match(inner)) is not None and match.group(2) in _QKV:
            layer, module, kind = match.groups()
            qkv.setdefault((layer, kind), {})[_QKV[module]] = tensor
        elif match is not None and match.group(2) in _LAYER_MAP:
            layer, module, kind = match.groups()
            tower[f"transformer.resblocks.{layer}.{_LAYER_MAP[module]}.{kind}"] = tensor
        else:
            msg = f"unknown tensor {key!r} in the vision tower; refusing a partial conversion"
            raise CheckpointError(msg)
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            msg = f"layer {layer}: q/k/v {kind} incomplete, found {sorted(parts)}"
            raise CheckpointError(msg)
        name = "in_proj_weight" if kind == "weight" else "in_proj_bias"
        tower[f"transformer.resblocks.{layer}.attn.{name}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    # The class embedding is [D] in both layouts; HF's position embedding is an nn.Embedding [N+1, D] like open_clip's.
    head_keys = _find_head(rest)
    head = None
    if head_keys is not None:
        head = {"fc.weight": rest.pop(head_keys[0]), "fc.bias": rest.pop(head_keys[1])}
    if rest:
        msg = f"unknown tensors outside the vision tower: {sorted(rest)[:10]}; refusing a partial conversion"
        raise CheckpointError(msg)
    return ConvertedWeights(tower=tower, head=head, ignored=tuple(sorted(ignored)))


# The authors' head types (config.json "head"): LinearNorm L2-normalises the feature, linear does not.
HF_HEAD_L2 = {"LinearNorm": True, "linear": False}


def hf_head_l2_normalize(config: dict[str, Any] | None) -> bool | None:
    """Whether the checkpoint's head L2-normalises its input, from ``config.json``; None when it does not say.

    Raises:
        CheckpointError: a head type the detector does not compute (docs/method.md §1).
    """
    head = (config or {}).get("head")
    if head is None:
        return None
    if head not in HF_HEAD_L2:
        msg = f"checkpoint head type {head!r} is not one the detector computes ({sorted(HF_HEAD_L2)})"
        raise CheckpointError(msg)
    return HF_HEAD_L2[head]


def _check_hf_config(config: dict[str, Any] | None) -> None:
    """Refuse checkpoints whose head or activation the detector would compute differently."""
    if not config:
        return
    hf_head_l2_normalize(config)
    vision = config.get("vision_config", config)
    act = vision.get("hidden_act")
    if act is not None and act != "quick_gelu":
        msg = f"checkpoint uses hidden_act={act!r}; the converted tower uses QuickGELU"
        raise CheckpointError(msg)


def load_converted(detector: Detector, converted: ConvertedWeights) -> None:
    """Copy converted tensors into a detector (whole tower, and the head if present).

    Raises:
        CheckpointError: names or shapes do not match the detector's tower.
    """
    try:
        detector.tower.load_state_dict(converted.tower, strict=True)
        if converted.head is not None:
            detector.head.load_state_dict(converted.head, strict=True)
    except RuntimeError as exc:
        msg = f"converted weights do not fit {detector.arch}: {exc}"
        raise CheckpointError(msg) from exc


def _head_config(config: DetectorConfig, weights: HFWeights) -> tuple[DetectorConfig, str]:
    """``config`` with the head normalisation the checkpoint's ``config.json`` states, and where it came from.

    Raises:
        CheckpointError: ``l2_normalize`` was given explicitly and contradicts ``config.json``.
    """
    stated = hf_head_l2_normalize(weights.config)
    given = "l2_normalize" in config.model_fields_set
    if stated is None:
        if not given:
            logger.warning("%s: config.json names no head type; assuming the method's L2-normalised head "
                           "(give l2_normalize explicitly otherwise)", weights.origin)  # fmt: skip
        return config, "given" if given else "assumed: config.json names no head type"
    if given and config.l2_normalize != stated:
        msg = (
            f"{weights.origin}: config.json's head {weights.config.get('head')!r} has l2_normalize={stated}, "
            f"but l2_normalize={config.l2_normalize} was given"
        )
        raise CheckpointError(msg)
    return config.model_copy(update={"l2_normalize": stated}), f"config.json head {weights.config.get('head')!r}"


def convert_to_checkpoint(
    source: str | Path, config: DetectorConfig, out: str | Path, *, atol: float = 1e-6
) -> CheckpointManifest:
    """Write an HF detector checkpoint as a clipguard checkpoint.

    ``config.tuning`` decides what the checkpoint stores. ``ln`` (the method) and
    ``linear-probe`` store only what they train and are served on ``config``'s base
    tower: the HF model must equal that base everywhere else (within ``atol``), or it is
    refused rather than silently served with the wrong frozen weights. ``full`` stores
    every tensor and needs no base weights (``pretrained='none'`` is enough).

    The head's L2 normalisation comes from ``config.json`` (``LinearNorm``: on, ``linear``:
    off); without one, ``config.l2_normalize`` (the method's: on).

    Args:
        source: ``.safetensors`` file, directory, or hub repo id (cached only, when offline).
        config: the base tower (arch, ``pretrained``), tuning and head of the result.
        out: checkpoint name (see :func:`~clipguard.model.checkpoint.save_checkpoint`).
        atol: largest allowed difference of a frozen tensor from the base.

    Raises:
        CheckpointError: unreadable source, no head, or frozen weights that differ from the base.
    """
    weights = read_hf_weights(source)
    converted = convert_hf_state_dict(weights.state_dict, weights.config)
    if converted.head is None:
        msg = f"{source}: no 2-class head found; a detector checkpoint needs one"
        raise CheckpointError(msg)
    config, head_from = _head_config(config, weights)
    detector = build_detector(config)
    base = {name: t.clone() for name, t in frozen_state_dict(detector).items()}
    load_converted(detector, converted)
    for name, tensor in frozen_state_dict(detector).items():
        diff = (tensor - base[name]).abs().max().item()
        if diff > atol:
            msg = (
                f"{source}: tensor {name} differs from base {config.arch}/{config.pretrained} by {diff:.3g}, "
                f"so this is not a tuning={config.tuning!r} checkpoint of that base; convert it with tuning "
                "'full' (every tensor stored, no base needed) or name the base it was trained on"
            )
            raise CheckpointError(msg)
    return save_checkpoint(
        detector,
        out,
        preprocess=config.preprocess,
        preset="converted",
        training_config={
            "converted_from": weights.origin,
            "ignored_tensors": list(converted.ignored),
            "head_l2_normalize_from": head_from,
            "hf_config": weights.config or {},
        },
    )


def main(argv: list[str] | None = None) -> None:
    """CLI: convert an HF checkpoint to ``OUT.safetensors`` + ``OUT.manifest.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="HF .safetensors file, directory, or hub repo id")
    parser.add_argument("out", help="output checkpoint name")
    parser.add_argument("--arch", default="ViT-L-14")
    parser.add_argument("--pretrained", default="openai", help="base tower weights: tag or local file")
    parser.add_argument("--tuning", default="ln", choices=["ln", "linear-probe", "full"], help="what is stored")
    parser.add_argument("--atol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    manifest = convert_to_checkpoint(
        args.source,
        DetectorConfig(arch=args.arch, pretrained=args.pretrained, tuning=args.tuning),
        args.out,
        atol=args.atol,
    )
    logger.info("wrote %s (%d tensors)", manifest.version, len(manifest.tensors))


if __name__ == "__main__":
    main()
