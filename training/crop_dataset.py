"""Face crops from the crop manifest as a torch Dataset, and the per-worker shards.

Each training worker reads only its shard: the train split through a
``DistributedSampler`` (a fresh permutation per epoch, padded so every rank runs
the same number of steps, which DDP needs) or, with ``data.sampling=pairs``, through
GenD's pair sampler (:mod:`training.pair_sampler`); the validation split as a plain
``rank::world`` slice (no padding, so no crop is counted twice in the metrics).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from clipguard.errors import ConfigError
from training.crop_manifest import CropRow, read_crop_manifest
from training.data_manifest import VAL_FLAG
from training.pair_sampler import PairBatchSampler, pair_crops

logger = logging.getLogger(__name__)


def load_crop(path: Path) -> np.ndarray:
    """An RGB uint8 (H, W, 3) crop from its PNG; a missing or unreadable file is an error."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        msg = f"cannot read crop image {path}"
        raise ConfigError(msg)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class CropDataset(Dataset):
    """Items are (uint8 (3, H, W) crop, label, row index); the transform runs on the uint8 crop.

    Args:
        rows: the crop rows of one split.
        root: the folder ``crop_path`` is relative to (the manifest's).
        transform: uint8 CHW -> uint8 CHW (train augmentations), or None.
    """

    def __init__(
        self, rows: Sequence[CropRow], root: Path, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> None:
        self.rows = list(rows)
        self.root = root
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        row = self.rows[index]
        crop = torch.from_numpy(load_crop(self.root / row.crop_path)).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            crop = self.transform(crop)
        return crop, row.label, index


def split_rows(rows: Sequence[CropRow], split: str, *, need_both_classes: bool = True) -> list[CropRow]:
    """The rows of one split; refuses an empty split or (by default) one missing a class."""
    selected = [row for row in rows if row.split == split]
    labels = {row.label for row in selected}
    if not selected or (need_both_classes and labels != {0, 1}):
        msg = f"split {split!r} has {len(selected)} crops with labels {sorted(labels)}; both real and fake are needed"
        if not selected and split == "val":  # a train/test list: say how to get a validation split
            msg += (f"; carve one from train with `clipguard prepare ... {VAL_FLAG} 0.1` (whole source videos; "
                    "--val-group-by identity for whole people)")  # fmt: skip
        raise ConfigError(msg)
    return selected


def load_splits(manifest: Path, train_split: str, val_split: str) -> tuple[list[CropRow], list[CropRow]]:
    """Train and validation rows of a crop manifest; other splits (test) are never loaded."""
    rows = read_crop_manifest(manifest)
    return split_rows(rows, train_split), split_rows(rows, val_split)


def train_loader(
    dataset: CropDataset,
    *,
    batch_size: int,
    rank: int,
    world: int,
    seed: int,
    workers: int,
    sampling: str = "shuffle",
) -> tuple[DataLoader, DistributedSampler | PairBatchSampler]:
    """A shuffled, rank-sharded loader; call ``sampler.set_epoch(epoch)`` before each epoch.

    Args:
        dataset: the train split.
        batch_size: this rank's batch (with ``pairs``: 2 x the pairs in it).
        rank, world: this rank and the number of ranks.
        seed: run seed.
        workers: DataLoader processes.
        sampling: ``shuffle`` (every crop once an epoch) or ``pairs`` (GenD's real/fake pairs).
    """
    # Not persistent: fresh loader processes each epoch take their seeds from the per-epoch torch seed.
    if sampling == "pairs":
        pairs = pair_crops(dataset.rows)
        logger.info("rank %d: %s", rank, pairs.summary())
        sampler = PairBatchSampler(pairs.pairs, pairs_per_batch=batch_size // 2, rank=rank, world=world, seed=seed)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=workers), sampler
    if sampling != "shuffle":
        msg = f"data.sampling must be 'shuffle' or 'pairs', got {sampling!r}"
        raise ConfigError(msg)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    return loader, sampler


def eval_loader(dataset: CropDataset, *, batch_size: int, rank: int, world: int, workers: int) -> DataLoader:
    """This rank's ``rank::world`` slice of a split, in order, without padding."""
    shard = torch.utils.data.Subset(dataset, list(range(rank, len(dataset), world)))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers)
