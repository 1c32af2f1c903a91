"""Calibrated verdict thresholds on disk, and how the stream picks them up.

``clipguard evaluate --calibrate`` writes a thresholds file; ``clipguard run``
reads it. Where:

* with a checkpoint: ``<name>.thresholds.json`` beside ``<name>.safetensors``,
  found automatically when ``model.checkpoint`` is set;
* without one (base model): wherever ``--out`` put it, named explicitly with
  ``--thresholds-file`` / ``CLIPGUARD_THRESHOLDS__FILE``.

A thresholds file names the weights it was calibrated for (the checkpoint's
``weights_sha256`` and model version, or the base arch and weights) and the video
score it was calibrated on (:meth:`clipguard.config.VideoScoreConfig.definition`:
faces, frames, pooling); one made for other weights or another definition is
refused with a :class:`ConfigError`: a threshold only means something for the
number it was picked on, and stale thresholds would silently mislabel every
video. ``thresholds.fake`` / ``thresholds.real`` given explicitly (flag or
environment) win over the file, field by field. The stream records the file's
SHA-256 in every verdict (``thresholds.file_sha256``; when set beforehand, a file
with another hash is refused).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clipguard.config import (
    ClipguardConfig,
    ModelConfig,
    ThresholdConfig,
    describe_video_score,
    video_score_differences,
)
from clipguard.errors import ConfigError

FORMAT = "clipguard-thresholds/2"  # /2: the video-score definition is recorded and checked
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
    video_score: dict[str, Any]  # VideoScoreConfig.definition(sampling) the validation scores were made with
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
        if isinstance(data, dict) and data.get("format") == "clipguard-thresholds/1":
            msg = (
                f"{where}: thresholds file of format clipguard-thresholds/1 does not say which video score it was "
                "calibrated on; re-run `clipguard evaluate --calibrate` to write a current one"
            )
            raise ConfigError(msg)
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


def read_thresholds_file_with_hash(path: Path) -> tuple[ThresholdsFile, str]:
    """Read and parse a thresholds file; also the SHA-256 of the very bytes parsed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read thresholds file {path}: {exc}"
        raise ConfigError(msg) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"{path}: thresholds file is not UTF-8: {exc}"
        raise ConfigError(msg) from exc
    return ThresholdsFile.from_json(text, path), hashlib.sha256(data).hexdigest()


def read_thresholds_file(path: Path) -> ThresholdsFile:
    """Read and parse a thresholds file (identity is checked by :func:`check_identity`)."""
    return read_thresholds_file_with_hash(path)[0]


def check_identity(content: ThresholdsFile, model: ModelConfig, video_score: dict[str, Any], where: Path) -> None:
    """Refuse a thresholds file calibrated for other weights than ``model``'s or on another video score.

    Args:
        content: the parsed file.
        model: the model that will be labelled with it.
        video_score: the definition in use (``VideoScoreConfig.definition(sampling)``).
        where: the file, for messages.
    """
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
    differences = video_score_differences(content.video_score, video_score)
    if differences:
        msg = (
            f"{where}: thresholds were calibrated on another video score ({describe_video_score(content.video_score)})"
            f" than the one in use ({describe_video_score(video_score)}): {'; '.join(differences)}. Re-run "
            "`clipguard evaluate --calibrate` with this video score, or set the video_score flags to the calibrated one"
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
    names the file used and ``thresholds.file_sha256`` its hash (both None when none was).

    Raises:
        ConfigError: the file is missing, malformed, for other weights, or gives
            thresholds that contradict an explicit one (real > fake).
    """
    path = find_thresholds_file(cfg)
    pinned = cfg.thresholds.file_sha256
    if path is None:
        if pinned is not None:
            msg = f"thresholds.file_sha256 is set ({pinned[:12]}...) but no thresholds file is in use"
            raise ConfigError(msg)
        return cfg
    content, sha256 = read_thresholds_file_with_hash(path)
    if pinned is not None and pinned != sha256:
        msg = f"{path}: SHA-256 {sha256} is not the pinned thresholds.file_sha256 {pinned}"
        raise ConfigError(msg)
    check_identity(content, cfg.model, cfg.video_score.definition(cfg.sampling), path)
    explicit = cfg.thresholds.model_fields_set & {"fake", "real"}
    values = {name: getattr(cfg.thresholds, name) if name in explicit else getattr(content, name)
              for name in ("fake", "real")}  # fmt: skip
    try:
        thresholds = ThresholdConfig(**values, file=path, file_sha256=sha256)
    except ValidationError as exc:
        msg = f"thresholds from {path} combined with the explicit {sorted(explicit)} are invalid: {exc}"
        raise ConfigError(msg) from exc
    return cfg.model_copy(update={"thresholds": thresholds})
