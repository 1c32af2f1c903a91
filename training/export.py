"""Export the best checkpoint of a run in the detector-core format the stream loads.

The run's checkpoints already hold ``detector.safetensors`` + ``detector.manifest.json``
(written by :func:`clipguard.model.save_checkpoint`, with the validation metrics
and the training config). Exporting picks the best one by ``val_video_map``
(validation split only; ties go to the later epoch), copies the pair, and
verifies the copy by loading its manifest and hash, so what lands in the export
folder is exactly what ``clipguard run --model-checkpoint`` will accept.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray.train import Checkpoint

from clipguard.errors import CheckpointError
from clipguard.model import read_manifest
from clipguard.model.checkpoint import checkpoint_paths, sha256_file
from training.train_config import SELECTION_METRIC
from training.train_state import DETECTOR_NAME


def best_checkpoint(candidates: Sequence[tuple[Checkpoint, dict[str, Any]]]) -> tuple[Checkpoint, dict[str, Any]]:
    """The candidate with the highest ``val_video_map`` (ties: the later epoch).

    Raises:
        CheckpointError: no candidate carries the selection metric.
    """
    scored = [(c, m) for c, m in candidates if isinstance(m.get(SELECTION_METRIC), int | float)]
    if not scored:
        msg = f"no checkpoint reports {SELECTION_METRIC!r}; nothing to export"
        raise CheckpointError(msg)
    return max(scored, key=lambda item: (item[1][SELECTION_METRIC], item[1].get("epoch", -1)))


def export_detector(checkpoint_dir: Path, out_dir: Path) -> Path:
    """Copy the detector files of a checkpoint folder into ``out_dir`` and verify them.

    Returns:
        Path of the exported ``detector.safetensors`` (its manifest lies beside it).
    """
    weights, manifest = checkpoint_paths(checkpoint_dir / DETECTOR_NAME)
    if not weights.is_file() or not manifest.is_file():
        msg = f"{checkpoint_dir} holds no {weights.name} + {manifest.name}"
        raise CheckpointError(msg)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_weights, out_manifest = checkpoint_paths(out_dir / DETECTOR_NAME)
    shutil.copyfile(weights, out_weights)
    shutil.copyfile(manifest, out_manifest)  # manifest last: a half-copied export has no manifest
    exported = read_manifest(out_manifest)
    if sha256_file(out_weights) != exported.weights_sha256:
        msg = f"{out_weights}: copy does not match its manifest's SHA-256"
        raise CheckpointError(msg)
    return out_weights


def export_best(candidates: Sequence[tuple[Checkpoint, dict[str, Any]]], out_dir: Path) -> tuple[Path, dict]:
    """Export the best of a run's kept checkpoints (``Result.best_checkpoints``).

    Returns:
        (exported weights path, the metrics reported with that checkpoint).
    """
    checkpoint, metrics = best_checkpoint(candidates)
    with checkpoint.as_directory() as folder:
        return export_detector(Path(folder), out_dir), metrics
