"""The checkpoint manifest: what a checkpoint is, as JSON, readable without torch.

Kept apart from :mod:`clipguard.model.checkpoint` (which needs torch and safetensors) so
configuration code can read a checkpoint's identity (arch, base weights, tuning, head)
before anything heavy is imported: ``clipguard evaluate`` and ``clipguard run`` take the
model's identity from the manifest of the checkpoint they are given
(:meth:`clipguard.config.TowerConfig.with_checkpoint_identity`).

Format versions: 1 (LN-tuning with an L2-normalised head, the only kind there was) and 2
(adds ``tuning``, ``l2_normalize`` and ``init_seed``). A version-1 manifest reads as
``tuning='ln'``, ``l2_normalize=True`` and the ``init_seed`` of its training config (0,
the only seed serving used, when it has none): what every version-1 checkpoint was.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipguard.errors import CheckpointError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
WEIGHTS_SUFFIX = ".safetensors"
MANIFEST_SUFFIX = ".manifest.json"
NO_WEIGHTS = "none"  # pretrained value of a random-init tower (clipguard.model.tower.NO_WEIGHTS)
FILE_SOURCE = "file:"  # base_source prefix of base weights read from a local file


@dataclass(frozen=True)
class CheckpointManifest:
    """Everything needed to trust and reproduce a checkpoint; serialised as JSON."""

    format_version: int
    version: str  # clipguard-<arch>-<first 12 hex of weights_sha256>; verdicts record it
    arch: str
    base_source: str  # where the base tower came from: an open_clip tag, 'file:<name>' or 'none'
    base_fingerprint: str  # SHA-256 over the frozen tower tensors (names, dtypes, shapes, bytes)
    quick_gelu: bool
    tuning: str  # what trained and is stored: 'ln' (LayerNorms + head), 'linear-probe' (head), 'full' (everything)
    l2_normalize: bool  # the head sees f/||f|| (True) or the raw feature
    init_seed: int  # seed of the random init the base was built with (matters for pretrained='none')
    preprocess: dict[str, Any]  # PreprocessConfig.to_dict()
    tensors: dict[str, list[int]]  # name -> shape of every stored tensor
    weights_file: str  # file name of the safetensors file, next to the manifest
    weights_sha256: str
    preset: str = "custom"  # loss preset name (paper, gend, ce-only), 'converted' or 'custom'
    loss_weights: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    training_config: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""  # UTC ISO-8601

    def to_json(self) -> str:
        """Pretty, key-sorted JSON."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CheckpointManifest:
        """Parse a manifest; a missing, unknown or mistyped field is a CheckpointError."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"manifest is not valid JSON: {exc}"
            raise CheckpointError(msg) from exc
        if not isinstance(data, dict):
            msg = "manifest must be a JSON object"
            raise CheckpointError(msg)
        if data.get("format_version") == 1:
            data = _upgrade_v1(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            msg = f"manifest has unknown fields {sorted(unknown)}"
            raise CheckpointError(msg)
        try:
            manifest = cls(**data)
        except TypeError as exc:
            msg = f"manifest is missing fields: {exc}"
            raise CheckpointError(msg) from exc
        if not isinstance(manifest.tensors, dict) or not isinstance(manifest.preprocess, dict):
            msg = "manifest fields 'tensors' and 'preprocess' must be objects"
            raise CheckpointError(msg)
        if not isinstance(manifest.l2_normalize, bool) or not isinstance(manifest.init_seed, int):
            msg = "manifest fields 'l2_normalize' (bool) and 'init_seed' (int) have the wrong type"
            raise CheckpointError(msg)
        return manifest


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 manifest with the fields version 2 added, as every version-1 checkpoint was made."""
    if any(key in data for key in ("tuning", "l2_normalize", "init_seed")):
        msg = "a format_version 1 manifest cannot have 'tuning', 'l2_normalize' or 'init_seed'"
        raise CheckpointError(msg)
    training = data.get("training_config")
    model = training.get("model") if isinstance(training, dict) else None
    seed = model.get("init_seed", 0) if isinstance(model, dict) else 0
    return {**data, "tuning": "ln", "l2_normalize": True, "init_seed": seed}


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, manifest) for a checkpoint named by either file or by ``<name>``."""
    path = Path(path)
    name = str(path)
    for suffix in (MANIFEST_SUFFIX, WEIGHTS_SUFFIX):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path(name + WEIGHTS_SUFFIX), Path(name + MANIFEST_SUFFIX)


def read_manifest(path: str | Path) -> CheckpointManifest:
    """Read and parse the manifest of a checkpoint (does not check the weights)."""
    _, manifest_path = checkpoint_paths(path)
    if not manifest_path.is_file():
        msg = f"checkpoint manifest not found: {manifest_path}"
        raise CheckpointError(msg)
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{manifest_path}: cannot read the manifest: {exc}"
        raise CheckpointError(msg) from exc
    try:
        manifest = CheckpointManifest.from_json(text)
    except CheckpointError as exc:
        msg = f"{manifest_path}: {exc.message}"
        raise CheckpointError(msg) from exc
    if manifest.format_version not in READABLE_VERSIONS:
        msg = (
            f"{manifest_path}: format_version {manifest.format_version} is not supported "
            f"(expected one of {list(READABLE_VERSIONS)})"
        )
        raise CheckpointError(msg)
    return manifest


def base_weights_of(manifest: CheckpointManifest) -> str:
    """The ``pretrained`` value that rebuilds a checkpoint's base tower.

    An open_clip tag as is, ``'file:<name>'`` as the file name (found in the model
    directory), ``'none'`` as is. A ``full`` checkpoint stores every tower tensor, so it
    needs no base weights at all: ``'none'`` (the loader overwrites every parameter).
    """
    if manifest.tuning == "full":
        return NO_WEIGHTS
    if manifest.base_source.startswith(FILE_SOURCE):
        return manifest.base_source[len(FILE_SOURCE) :]
    return manifest.base_source


def model_identity(manifest: CheckpointManifest) -> dict[str, Any]:
    """The :class:`~clipguard.config.TowerConfig` fields a checkpoint fixes, by field name."""
    return {
        "arch": manifest.arch,
        "pretrained": base_weights_of(manifest),
        "quick_gelu": manifest.quick_gelu,
        "init_seed": manifest.init_seed,
        "tuning": manifest.tuning,
        "l2_normalize": manifest.l2_normalize,
    }
