"""The checkpoint format: trained tensors in safetensors, provenance in a JSON manifest.

A checkpoint is two files side by side::

    <name>.safetensors     the trained tensors only, fp32: what the manifest's ``tuning`` trains
                           (ln: tower LayerNorms + head; linear-probe: the head; full: every tensor)
    <name>.manifest.json   CheckpointManifest (clipguard/model/manifest.py): arch, base tower identity,
                           tuning, l2_normalize, loss weights, metrics, training config,
                           preprocessing, SHA-256 of the weights

Loading refuses (CheckpointError) a weights file whose hash differs from the
manifest, a manifest for another arch, activation, tuning, head normalisation,
preprocessing or base tower, and any tensor name or shape that is not exactly the
detector's trained set. Nothing is ever unpickled.

The base tower is identified by a fingerprint of its frozen tensors, so a
checkpoint trained on ``pretrained='openai'`` loads onto the same weights read
from a local file on an offline cluster, and onto nothing else. A ``full``
checkpoint has no frozen tensors: it stores the whole tower and loads onto any
base of its architecture (``pretrained='none'`` is enough; every parameter is overwritten).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from clipguard.errors import CheckpointError
from clipguard.model.config import PreprocessConfig
from clipguard.model.detector import Detector
from clipguard.model.lntuning import frozen_state_dict, trained_state_dict
from clipguard.model.manifest import (
    FORMAT_VERSION,
    MANIFEST_SUFFIX,
    WEIGHTS_SUFFIX,
    CheckpointManifest,
    checkpoint_paths,
    read_manifest,
)

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_SUFFIX",
    "WEIGHTS_SUFFIX",
    "CheckpointManifest",
    "base_fingerprint",
    "checkpoint_paths",
    "checkpoint_version",
    "load_checkpoint",
    "read_manifest",
    "save_checkpoint",
    "sha256_file",
    "untrained_version",
]

_HASH_CHUNK = 1 << 20
_STORES = {"ln": "LayerNorm + head tensors", "linear-probe": "head tensors only", "full": "every tensor"}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def base_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the frozen tensors of a detector (those a checkpoint does not store).

    A detector whose frozen weights were cast for training speed answers the fingerprint
    pinned before the cast: the base it was loaded with (``clipguard/model/frozen_weights.py``).
    """
    pinned = _unwrap(model).base_fingerprint_pin
    if pinned is not None:
        return pinned
    digest = hashlib.sha256()
    for name, tensor in sorted(frozen_state_dict(model).items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{list(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_version(arch: str, weights_sha256: str) -> str:
    """The model version verdicts record for a trained checkpoint."""
    return f"clipguard-{arch}-{weights_sha256[:12]}"


def untrained_version(arch: str, base_source: str) -> str:
    """Version of a detector without a checkpoint; says plainly that its head is untrained."""
    return f"{arch}-{base_source}-untrained-head"


def _unwrap(model: nn.Module) -> Detector:
    """The Detector itself, also when DistributedDataParallel (Ray Train's prepare_model) wraps it."""
    inner = getattr(model, "module", model)
    if not isinstance(inner, Detector):
        msg = f"expected a Detector (or a wrapper with .module), got {type(model).__name__}"
        raise CheckpointError(msg)
    return inner


def _check_json(name: str, value: Any) -> None:
    """Fail before anything is written if a manifest field cannot be stored as JSON."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        msg = f"checkpoint field {name!r} is not JSON-serialisable: {exc}"
        raise CheckpointError(msg) from exc


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    preprocess: PreprocessConfig,
    preset: str = "custom",
    loss_weights: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    training_config: dict[str, Any] | None = None,
) -> CheckpointManifest:
    """Write the trained tensors and their manifest (weights first, manifest last).

    Args:
        model: a :class:`~clipguard.model.detector.Detector`, or a DDP wrapper of one.
        path: ``<name>``, ``<name>.safetensors`` or ``<name>.manifest.json``.
        preprocess: the preprocessing the model was trained with.
        preset: loss preset name.
        loss_weights: loss weights used (JSON-able).
        metrics: validation metrics of this checkpoint (never test-set selected).
        training_config: the training configuration (JSON-able).

    Returns:
        The manifest written.
    """
    model = _unwrap(model)
    for name, value in (("loss_weights", loss_weights), ("metrics", metrics), ("training_config", training_config)):
        _check_json(name, value)
    weights_path, manifest_path = checkpoint_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.to("cpu", torch.float32).contiguous() for name, t in trained_state_dict(model).items()}
    tmp = weights_path.with_name(weights_path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "clipguard_format_version": str(FORMAT_VERSION)})
    os.replace(tmp, weights_path)
    digest = sha256_file(weights_path)
    manifest = CheckpointManifest(
        format_version=FORMAT_VERSION,
        version=checkpoint_version(model.arch, digest),
        arch=model.arch,
        base_source=model.base_source,
        base_fingerprint=base_fingerprint(model),
        quick_gelu=model.quick_gelu,
        tuning=model.tuning,
        l2_normalize=model.l2_normalize,
        init_seed=model.init_seed,
        preprocess=preprocess.to_dict(),
        tensors={name: list(t.shape) for name, t in sorted(tensors.items())},
        weights_file=weights_path.name,
        weights_sha256=digest,
        preset=preset,
        loss_weights=dict(loss_weights or {}),
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        training_config=dict(training_config or {}),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    _atomic_write_bytes(manifest_path, manifest.to_json().encode())
    return manifest


def _check_identity(manifest: CheckpointManifest, model: Detector, preprocess: PreprocessConfig, where: Path) -> None:
    """The manifest must describe this arch, activation, preprocessing and base tower."""
    if manifest.arch != model.arch:
        msg = f"{where}: checkpoint is for arch {manifest.arch!r}, the detector is {model.arch!r}"
        raise CheckpointError(msg)
    if manifest.quick_gelu != model.quick_gelu:
        msg = f"{where}: checkpoint trained with quick_gelu={manifest.quick_gelu}, detector has {model.quick_gelu}"
        raise CheckpointError(msg)
    if manifest.tuning != model.tuning:
        msg = (
            f"{where}: checkpoint was trained with tuning={manifest.tuning!r} (it stores "
            f"{_STORES[manifest.tuning]}), the detector is built with tuning={model.tuning!r} (model.tuning)"
        )
        raise CheckpointError(msg)
    if manifest.l2_normalize != model.l2_normalize:
        msg = (
            f"{where}: checkpoint's head was trained with l2_normalize={manifest.l2_normalize}, "
            f"the detector's head has l2_normalize={model.l2_normalize} (model.l2_normalize)"
        )
        raise CheckpointError(msg)
    if manifest.preprocess != preprocess.to_dict():
        msg = f"{where}: checkpoint preprocessing {manifest.preprocess} differs from configured {preprocess.to_dict()}"
        raise CheckpointError(msg)
    fingerprint = base_fingerprint(model)
    if manifest.base_fingerprint != fingerprint:
        msg = (
            f"{where}: checkpoint was trained on base tower {manifest.base_source!r} "
            f"(fingerprint {manifest.base_fingerprint[:12]}), the detector's base {model.base_source!r} "
            f"has fingerprint {fingerprint[:12]}: different base weights"
        )
        raise CheckpointError(msg)


def _check_tensors(
    stored: dict[str, torch.Tensor], manifest: CheckpointManifest, model: nn.Module, where: Path
) -> None:
    """Stored names and shapes must equal both the manifest's and the detector's trained set."""
    expected = {name: list(t.shape) for name, t in trained_state_dict(model).items()}
    found = {name: list(t.shape) for name, t in stored.items()}
    for label, other in (("the manifest", manifest.tensors), ("the detector", expected)):
        if found != other:
            missing = sorted(set(other) - set(found))[:5]
            extra = sorted(set(found) - set(other))[:5]
            shapes = sorted(n for n in set(found) & set(other) if found[n] != other[n])[:5]
            msg = (
                f"{where}: tensors differ from {label}: missing {missing}, unexpected {extra}, shape mismatch {shapes}"
            )
            raise CheckpointError(msg)


def load_checkpoint(model: nn.Module, path: str | Path, *, preprocess: PreprocessConfig) -> CheckpointManifest:
    """Verify a checkpoint against ``model`` and copy its tensors in.

    Args:
        model: the detector built on the checkpoint's base tower (CPU or GPU), or a DDP wrapper of one.
        path: ``<name>``, ``<name>.safetensors`` or ``<name>.manifest.json``.
        preprocess: the preprocessing this detector will be served with.

    Returns:
        The verified manifest (its ``version`` is the model version).

    Raises:
        CheckpointError: missing or tampered files, or any mismatch; the model is
            unchanged when this is raised.
    """
    model = _unwrap(model)
    weights_path, manifest_path = checkpoint_paths(path)
    manifest = read_manifest(manifest_path)
    if manifest.weights_file != weights_path.name:
        msg = f"{manifest_path}: manifest names weights {manifest.weights_file!r}, expected {weights_path.name!r}"
        raise CheckpointError(msg)
    if not weights_path.is_file():
        msg = f"checkpoint weights not found: {weights_path}"
        raise CheckpointError(msg)
    digest = sha256_file(weights_path)
    if digest != manifest.weights_sha256:
        msg = (
            f"{weights_path}: SHA-256 {digest[:12]}... does not match the manifest's "
            f"{manifest.weights_sha256[:12]}... (tampered or corrupt)"
        )
        raise CheckpointError(msg)
    if manifest.version != checkpoint_version(manifest.arch, digest):
        msg = f"{manifest_path}: version {manifest.version!r} does not match the weights hash"
        raise CheckpointError(msg)
    _check_identity(manifest, model, preprocess, manifest_path)
    try:
        stored = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError) as exc:
        msg = f"{weights_path}: not a readable safetensors file: {exc}"
        raise CheckpointError(msg) from exc
    _check_tensors(stored, manifest, model, weights_path)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in stored.items():
            params[name].copy_(tensor.to(device=params[name].device, dtype=params[name].dtype))
    return manifest
