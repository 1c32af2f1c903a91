"""Calibrated verdict thresholds on disk, and how the stream picks them up.

``clipguard evaluate --calibrate`` writes a thresholds file; ``clipguard run``
reads it. Where:

* with a checkpoint: ``<name>.thresholds.json`` beside ``<name>.safetensors``,
  found automatically when ``model.checkpoint`` is set;
* without one (base model): wherever ``--out`` put it, named explicitly with
  ``--thresholds-file`` / ``CLIPGUARD_THRESHOLDS__FILE``.

A thresholds file names the weights it was calibrated for (the checkpoint's
``weights_sha256`` and model version, or the base arch and weights), and one for
other weights is refused with a :class:`ConfigError`: stale thresholds would
silently mislabel every video. ``thresholds.fake`` / ``thresholds.real`` given
explicitly (flag or environment) win over the file, field by field.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clipguard.config import ClipguardConfig, ModelConfig, ThresholdConfig
from clipguard.errors import ConfigError

FORMAT = "clipguard-thresholds/1"
THRESHOLDS_SUFFIX = ".thresholds.json"


@dataclass(frozen=True)
class ThresholdsFile:
    """The content of a thresholds file (JSON, keys as these fields)."""

    fake: float
    real: float
    target_fpr: float
    target_fnr: float
    achieved: dict[str, Any]  # training.calibration.Calibration.to_dict() on the validation set
    validation_set: str  # path of the validation manifest
    model_version: str  # the scorer's version: clipguard-<arch>-<sha12>, or <arch>-<base>-untrained-head
    arch: str
    pretrained: str
    checkpoint: str | None  # the checkpoint path at calibration time (informative)
    weights_sha256: str | None  # the checkpoint's weights hash; None for a base model
    aggregation: str = "mean"
    format: str = FORMAT
    created_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Pretty, key-sorted JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: Path) -> ThresholdsFile:
        """Parse; unknown or missing fields and a foreign format are a ConfigError."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"{where}: thresholds file is not valid JSON: {exc}"
            raise ConfigError(msg) from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            msg = f"{where}: not a clipguard thresholds file (expected format {FORMAT!r})"
            raise ConfigError(msg)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            msg = f"{where}: unknown thresholds-file fields {sorted(unknown)}"
            raise ConfigError(msg)
        try:
            return cls(**data)
        except TypeError as exc:
            msg = f"{where}: thresholds file is missing fields: {exc}"
            raise ConfigError(msg) from exc


def thresholds_path_for(checkpoint: str | Path) -> Path:
    """``<name>.thresholds.json`` for a checkpoint named ``<name>``, ``<name>.safetensors`` or its manifest."""
    from clipguard.model.checkpoint import checkpoint_paths

    weights, _ = checkpoint_paths(checkpoint)
    return weights.with_name(weights.name.removesuffix(".safetensors") + THRESHOLDS_SUFFIX)


def write_thresholds_file(path: Path, content: ThresholdsFile) -> Path:
    """Write atomically (a reader never sees half a file); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content.to_json() + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_thresholds_file(path: Path) -> ThresholdsFile:
    """Read and parse a thresholds file (identity is checked by :func:`check_identity`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read thresholds file {path}: {exc}"
        raise ConfigError(msg) from exc
    return ThresholdsFile.from_json(text, path)


def check_identity(content: ThresholdsFile, model: ModelConfig, where: Path) -> None:
    """Refuse a thresholds file calibrated for other weights or another aggregation than ``model``'s."""
    if model.checkpoint is not None:
        from clipguard.model.checkpoint import read_manifest

        manifest = read_manifest(model.checkpoint)
        if content.weights_sha256 != manifest.weights_sha256:
            calibrated = content.weights_sha256[:12] if content.weights_sha256 else f"base {content.arch}"
            msg = (
                f"{where}: thresholds were calibrated for other weights ({content.model_version}, {calibrated}) "
                f"than the checkpoint {model.checkpoint} ({manifest.version}); "
                "re-run `clipguard evaluate --calibrate` for this checkpoint or set --thresholds-fake/--thresholds-real"
            )
            raise ConfigError(msg)
    elif content.weights_sha256 is not None or (content.arch, content.pretrained) != (model.arch, model.pretrained):
        msg = (
            f"{where}: thresholds were calibrated for {content.model_version}, but the stream runs the base model "
            f"{model.arch} / {model.pretrained} without a checkpoint"
        )
        raise ConfigError(msg)
    if content.aggregation != model.aggregation:
        msg = (
            f"{where}: thresholds were calibrated on {content.aggregation} crop scores, "
            f"the stream aggregates with {model.aggregation}"
        )
        raise ConfigError(msg)


def find_thresholds_file(cfg: ClipguardConfig) -> Path | None:
    """The file the stream should read: ``thresholds.file``, else one beside the checkpoint, else None."""
    if cfg.thresholds.file is not None:
        if not cfg.thresholds.file.is_file():
            msg = f"thresholds file not found: {cfg.thresholds.file}"
            raise ConfigError(msg)
        return cfg.thresholds.file
    if cfg.model.checkpoint is not None:
        beside = thresholds_path_for(cfg.model.checkpoint)
        if beside.is_file():
            return beside
    return None


def resolve_thresholds(cfg: ClipguardConfig) -> ClipguardConfig:
    """``cfg`` with its thresholds taken from a calibrated file where one applies.

    Fields set explicitly (``thresholds.model_fields_set``: flags, environment)
    are kept; the others come from the file. The result's ``thresholds.file``
    names the file used (None when none was).

    Raises:
        ConfigError: the file is missing, malformed, for other weights, or gives
            thresholds that contradict an explicit one (real > fake).
    """
    path = find_thresholds_file(cfg)
    if path is None:
        return cfg
    content = read_thresholds_file(path)
    check_identity(content, cfg.model, path)
    explicit = cfg.thresholds.model_fields_set & {"fake", "real"}
    values = {name: getattr(cfg.thresholds, name) if name in explicit else getattr(content, name)
              for name in ("fake", "real")}  # fmt: skip
    try:
        thresholds = ThresholdConfig(**values, file=path)
    except ValidationError as exc:
        msg = f"thresholds from {path} combined with the explicit {sorted(explicit)} are invalid: {exc}"
        raise ConfigError(msg) from exc
    return cfg.model_copy(update={"thresholds": thresholds})
