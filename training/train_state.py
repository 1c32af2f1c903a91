"""What a Ray Train checkpoint of this run holds, and how a worker resumes from it.

A checkpoint folder::

    detector.safetensors + detector.manifest.json   the detector-core format (clipguard.model.save_checkpoint):
                                                    LN + head tensors, metrics, training config, hashes
    train_state.pt                                  optimiser state, last finished epoch, next step

The learning-rate schedule is a function of the step (``training.schedules``),
so the step is the scheduler's whole state. Data order, augmentation and slerp
draws are seeded per epoch, so a resumed epoch draws what the original would
have. ``train_state.pt`` holds only tensors and numbers and is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipguard.errors import CheckpointError
from clipguard.model import PreprocessConfig, load_checkpoint, save_checkpoint
from clipguard.model.detector import Detector
from training.train_config import TrainConfig

DETECTOR_NAME = "detector"  # -> detector.safetensors, detector.manifest.json
STATE_FILE = "train_state.pt"


@dataclass(frozen=True)
class TrainState:
    """Where training stands after a finished epoch."""

    epoch: int  # last finished epoch (0-based)
    step: int  # next optimiser step (global, counts skipped steps too)


def save_train_state(
    folder: Path,
    detector: Detector,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    *,
    config: TrainConfig,
    metrics: dict[str, float],
) -> None:
    """Write the detector (with its metrics and config) and the optimiser state into ``folder``."""
    save_checkpoint(
        detector,
        folder / DETECTOR_NAME,
        preprocess=PreprocessConfig(),
        preset=config.loss.preset,
        loss_weights=config.loss.weights().to_dict(),
        metrics=metrics,
        training_config=config.model_dump(mode="json"),
    )
    torch.save({"optimizer": optimizer.state_dict(), "epoch": state.epoch, "step": state.step}, folder / STATE_FILE)


def _read_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_FILE
    if not path.is_file():
        msg = f"checkpoint {folder} has no {STATE_FILE}"
        raise CheckpointError(msg)
    return torch.load(path, map_location="cpu", weights_only=True)


def restore_detector(folder: Path, detector: Detector) -> TrainState:
    """Load the checkpoint's LN and head tensors (verified against the base tower) and its position."""
    load_checkpoint(detector, folder / DETECTOR_NAME, preprocess=PreprocessConfig())
    data = _read_state(folder)
    return TrainState(epoch=int(data["epoch"]), step=int(data["step"]))


def restore_optimizer(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    """Load the optimiser state; call after the model is on its device (the state follows the parameters)."""
    optimizer.load_state_dict(_read_state(folder)["optimizer"])
