"""GenD's pair sampling (docs/method.md §7): batches of (real, fake) crop pairs from one source video.

A fake video of FaceForensics++ is its source video with one face manipulated, frame
for frame. GenD trains on batches of pairs, a fake crop beside the real crop it was
made from, so each batch is balanced and each pair differs only by the manipulation.

Pairing (:func:`pair_crops`), from the crop manifest's ``source_video`` column: a fake
crop pairs with a real crop of the video named by its ``source_video`` (a real video
is its own source), the one of the same face track at the nearest frame index (the
same index for frame-aligned fakes; ties go to the earlier frame). A fake crop whose
source has no real crops in the split, and a real crop no fake picks, are in no pair:
they are counted and left out of a ``pairs`` epoch, which covers every pair once.

Sharding (:class:`PairBatchSampler`): each epoch the pairs are shuffled with
``(seed, epoch)``, padded by wrapping around (as ``DistributedSampler`` pads) to a
whole number of global batches, and global batch ``s`` is split into ``world`` slices
of ``pairs_per_batch`` pairs, slice ``r`` for rank ``r``: no pair is on two ranks in
one step, every rank runs the same number of steps (DDP needs it), and the same seed
gives the same batches on every run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

from clipguard.errors import ConfigError
from training.crop_manifest import CropRow


@dataclass(frozen=True)
class CropPairs:
    """The (real row, fake row) index pairs of a split, and what is in none."""

    pairs: tuple[tuple[int, int], ...]
    unpaired_fake: int  # fake crops whose source video has no real crop here
    unpaired_real: int  # real crops no fake crop picked

    def summary(self) -> str:
        """One line for the log."""
        return (
            f"{len(self.pairs)} (real, fake) crop pairs of one source video; left out: "
            f"{self.unpaired_fake} fake crops without a real source crop, {self.unpaired_real} real crops in no pair"
        )


def pair_crops(rows: Sequence[CropRow]) -> CropPairs:
    """Pair every fake crop with a real crop of its source video (see the module docstring)."""
    reals: dict[str, list[tuple[int, int, int]]] = {}  # video id -> (frame, track, row index)
    for index, row in enumerate(rows):
        if row.label == 0:
            reals.setdefault(row.video_id, []).append((row.frame_index, row.track_id, index))
    pairs: list[tuple[int, int]] = []
    unpaired_fake = 0
    for index, row in enumerate(rows):
        if row.label != 1:
            continue
        candidates = reals.get(row.source_video) if row.source_video and row.source_video != row.video_id else None
        if not candidates:
            unpaired_fake += 1
            continue
        frame, track, real = min(
            candidates, key=lambda c: (c[1] != row.track_id, abs(c[0] - row.frame_index), c[0], c[1])
        )
        pairs.append((real, index))
    used = {real for real, _ in pairs}
    unpaired_real = sum(1 for row in rows if row.label == 0) - len(used)
    return CropPairs(tuple(pairs), unpaired_fake, unpaired_real)


class PairBatchSampler(Sampler[list[int]]):
    """This rank's batches of a ``pairs`` epoch: lists ``[real, fake, real, fake, ...]`` of row indices.

    Args:
        pairs: the (real, fake) row index pairs (:func:`pair_crops`).
        pairs_per_batch: pairs in one rank's batch (its batch size / 2).
        rank, world: this rank and the number of ranks.
        seed: run seed; the epoch (:meth:`set_epoch`) is added to it, as ``DistributedSampler`` does.

    Raises:
        ConfigError: no pairs, or a batch of no pairs.
    """

    def __init__(
        self, pairs: Sequence[tuple[int, int]], *, pairs_per_batch: int, rank: int, world: int, seed: int
    ) -> None:
        if not pairs:
            msg = (
                "data.sampling=pairs, but no fake crop has a real crop of its source video in the train split "
                "(the crop manifest's source_video column); use data.sampling=shuffle for such data"
            )
            raise ConfigError(msg)
        if pairs_per_batch < 1 or not 0 <= rank < world:
            msg = f"pairs_per_batch must be >= 1 and 0 <= rank < world, got {pairs_per_batch}, {rank}, {world}"
            raise ConfigError(msg)
        self.pairs = list(pairs)
        self.pairs_per_batch = pairs_per_batch
        self.rank = rank
        self.world = world
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle differently (and reproducibly) in each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.pairs) / (self.pairs_per_batch * self.world))

    def epoch_order(self) -> list[int]:
        """Pair indices of this epoch in global order, padded to whole global batches (same on every rank)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.pairs), generator=generator).tolist()
        total = len(self) * self.pairs_per_batch * self.world
        return (order * math.ceil(total / len(order)))[:total]

    def __iter__(self) -> Iterator[list[int]]:
        order = self.epoch_order()
        step_pairs = self.pairs_per_batch * self.world
        for step in range(len(self)):
            start = step * step_pairs + self.rank * self.pairs_per_batch
            yield [row for pair in order[start : start + self.pairs_per_batch] for row in self.pairs[pair]]
