"""GenD's pair sampling (docs/method.md §7) on a tiny crop manifest: pairing, coverage per epoch, determinism."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from clipguard.errors import ConfigError
from training.crop_dataset import CropDataset, train_loader
from training.crop_manifest import CROP_COLUMNS, CropRow
from training.pair_sampler import PairBatchSampler, pair_crops
from training.train import check_data
from training.train_config import load_train_config

GEND = Path(__file__).resolve().parents[2] / "training" / "configs" / "gend.yaml"


def tiny_rows() -> list[CropRow]:
    """Two source videos with 2 fakes each (frame-aligned), a fake of a missing source, a real with no fake.

    Real ``r1`` has a crop at frame 9 that no fake has (unpaired); fake ``f1b`` has frame 7, between
    its source's frames 6 and 8 (equally near: it pairs with the earlier).
    """
    rows: list[CropRow] = []

    def add(video, label, frames, source, track=0):
        for frame in frames:
            rows.append(CropRow(video, f"{video}/{frame}_t{track}.png", label, "train", "syn", frame, track, source))

    add("r1", 0, [0, 3, 6, 8, 9], "r1")
    add("f1a", 1, [0, 3, 6, 8], "r1")
    add("f1b", 1, [0, 3, 7], "r1")
    add("r2", 0, [0, 4], "r2")
    add("r2", 0, [0], "r2", track=1)  # a second face in frame 0 of r2
    add("f2a", 1, [0, 4], "r2")
    add("f2b", 1, [0], "r2", track=1)  # the second face swapped: pairs with track 1
    add("orphan", 1, [0, 1], "gone")  # its source is not in this split
    add("r3", 0, [0, 5], "r3")  # a real video no fake was made from
    return rows


def test_fake_crops_pair_with_the_real_crop_of_their_source_video():
    rows = tiny_rows()
    found = pair_crops(rows)
    assert found.unpaired_fake == 2  # the orphan's two crops
    fakes = [i for i, r in enumerate(rows) if r.label == 1 and r.video_id != "orphan"]
    assert sorted(fake for _, fake in found.pairs) == fakes  # every other fake crop in exactly one pair
    for real, fake in found.pairs:
        r, f = rows[real], rows[fake]
        assert (r.label, f.label) == (0, 1)
        assert r.video_id == f.source_video and r.track_id == f.track_id
        same_video = [c.frame_index for c in rows if c.video_id == r.video_id and c.track_id == r.track_id]
        nearest = min(abs(x - f.frame_index) for x in same_video)
        assert abs(r.frame_index - f.frame_index) == nearest
        if f.frame_index in same_video:
            assert r.frame_index == f.frame_index  # frame-aligned fakes pair frame for frame
    by_fake = {rows[fake].crop_path: rows[real].crop_path for real, fake in found.pairs}
    assert by_fake["f1b/7_t0.png"] == "r1/6_t0.png"  # 6 and 8 are equally near: the earlier frame
    assert by_fake["f2b/0_t1.png"] == "r2/0_t1.png"  # the same face track
    assert by_fake["f2a/0_t0.png"] == "r2/0_t0.png"
    unused_reals = {"r1/9_t0.png", "r3/0_t0.png", "r3/5_t0.png"}
    assert found.unpaired_real == len(unused_reals)
    assert not unused_reals & {rows[real].crop_path for real, _ in found.pairs}


def epoch_batches(pairs, *, world: int, pairs_per_batch: int, seed: int, epoch: int) -> list[list[list[int]]]:
    """Every rank's batches of one epoch."""
    out = []
    for rank in range(world):
        sampler = PairBatchSampler(pairs, pairs_per_batch=pairs_per_batch, rank=rank, world=world, seed=seed)
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


@pytest.mark.parametrize(("world", "pairs_per_batch"), [(1, 2), (2, 2), (3, 1)])
def test_an_epoch_covers_every_pair_once_without_overlap_between_workers(world, pairs_per_batch):
    rows = tiny_rows()
    pairs = list(pair_crops(rows).pairs)
    per_rank = epoch_batches(pairs, world=world, pairs_per_batch=pairs_per_batch, seed=7, epoch=0)
    steps = -(-len(pairs) // (world * pairs_per_batch))
    assert [len(batches) for batches in per_rank] == [steps] * world  # equal step counts, as DDP needs
    used = Counter()
    for step in range(steps):
        step_pairs = []
        for rank in range(world):
            batch = per_rank[rank][step]
            assert len(batch) == 2 * pairs_per_batch
            assert [rows[i].label for i in batch] == [0, 1] * pairs_per_batch  # whole (real, fake) pairs
            step_pairs += [(batch[k], batch[k + 1]) for k in range(0, len(batch), 2)]
        assert len(set(step_pairs)) == len(step_pairs)  # no pair on two workers in one step
        used.update(step_pairs)
    padding = steps * world * pairs_per_batch - len(pairs)
    assert set(used) == set(pairs)  # every pair this epoch
    assert sum(used.values()) == len(pairs) + padding and sum(n - 1 for n in used.values()) == padding
    assert padding < world * pairs_per_batch  # only the last global batch is padded


def test_batches_are_deterministic_per_seed_and_epoch():
    pairs = list(pair_crops(tiny_rows()).pairs)
    first = epoch_batches(pairs, world=2, pairs_per_batch=2, seed=3, epoch=4)
    assert epoch_batches(pairs, world=2, pairs_per_batch=2, seed=3, epoch=4) == first
    assert epoch_batches(pairs, world=2, pairs_per_batch=2, seed=3, epoch=5) != first  # reshuffled each epoch
    assert epoch_batches(pairs, world=2, pairs_per_batch=2, seed=4, epoch=4) != first


def test_train_loader_builds_the_pair_batches_of_its_rank():
    rows = tiny_rows()
    dataset = CropDataset(rows, Path("/nonexistent"))  # only indices are drawn here, no image is read
    loader, sampler = train_loader(dataset, batch_size=4, rank=1, world=2, seed=0, workers=0, sampling="pairs")
    assert isinstance(sampler, PairBatchSampler) and loader.batch_sampler is sampler
    sampler.set_epoch(2)
    expected = epoch_batches(list(pair_crops(rows).pairs), world=2, pairs_per_batch=2, seed=0, epoch=2)[1]
    assert list(loader.batch_sampler) == expected and len(loader) == len(expected)


def write_crops_csv(path: Path, rows: list[CropRow]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CROP_COLUMNS)
        writer.writeheader()
        writer.writerows({k: getattr(row, k) for k in CROP_COLUMNS} for row in rows)
    return path


def test_gend_preset_pairs_and_refuses_data_without_pairs(tmp_path):
    val = [CropRow("v0", "v0.png", 0, "val", "syn", 0, 0, "v0"), CropRow("v1", "v1.png", 1, "val", "syn", 0, 0, "")]
    paired = write_crops_csv(tmp_path / "paired.csv", tiny_rows() + val)
    cfg = load_train_config(GEND, [f"data.crops={paired}", "data.batch_size=8", "run.num_workers=2"])
    assert cfg.data.sampling == "pairs"
    check_data(cfg)  # pairs found: nothing raised
    unpaired = [CropRow(r.video_id, r.crop_path, r.label, r.split, r.dataset, r.frame_index, r.track_id, "")
                for r in tiny_rows() if r.label == 1] + [r for r in tiny_rows() if r.label == 0]  # fmt: skip
    bare = write_crops_csv(tmp_path / "bare.csv", unpaired + val)
    with pytest.raises(ConfigError, match="no \\(real, fake\\) crop pairs.*data.sampling=shuffle"):
        check_data(load_train_config(GEND, [f"data.crops={bare}", "data.batch_size=8"]))
    with pytest.raises(ConfigError, match="multiple of 2 x run.num_workers"):
        load_train_config(GEND, ["data.batch_size=6", "run.num_workers=2"])
