"""FaceForensics++ folder layout -> labelled video records.

Layout (the official download script's)::

    original_sequences/youtube/<compression>/videos/071.mp4              real
    manipulated_sequences/<Method>/<compression>/videos/071_054.mp4      fake: 071's video, 054's face

Splits: the official ``train.json``, ``val.json`` and ``test.json`` (each a list
of ``[a, b]`` id pairs; both people of a pair, their real videos and both fakes
``a_b``/``b_a`` belong to that split) when a folder holding them is given.
Otherwise a deterministic split of the pairs by a hash of the pair (72/14/14 %,
the official 720/140/140 proportions), so a person never lands in two splits.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from clipguard.errors import ConfigError
from training.data_manifest import SPLITS, VideoRecord, check_unique

METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
REAL_DIR = "original_sequences/youtube/{compression}/videos"
FAKE_DIR = "manipulated_sequences/{method}/{compression}/videos"
SPLIT_FRACTIONS = (("train", 0.72), ("val", 0.86), ("test", 1.0))  # cumulative
DATASET = "FF++"


def read_official_splits(folder: Path) -> dict[str, str]:
    """Map each FF++ id ('071') to its split from ``train/val/test.json``."""
    split_of: dict[str, str] = {}
    for split in SPLITS:
        path = folder / f"{split}.json"
        try:
            pairs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            msg = f"cannot read FF++ split list {path}: {exc}"
            raise ConfigError(msg) from exc
        for pair in pairs:
            for video in pair:
                if split_of.setdefault(str(video), split) != split:
                    msg = f"{path}: id {video} is also listed in {split_of[str(video)]}.json"
                    raise ConfigError(msg)
    return split_of


def hashed_split(group: str) -> str:
    """Deterministic split of a pair key, in the official proportions."""
    fraction = int(hashlib.sha256(group.encode()).hexdigest()[:12], 16) / 16**12
    return next(split for split, upper in SPLIT_FRACTIONS if fraction < upper)


def _pair_groups(fake_stems: list[str]) -> dict[str, str]:
    """id -> key of its pair ('071' and '054' -> '054_071'), from the fake file names."""
    group: dict[str, str] = {}
    for stem in fake_stems:
        a, _, b = stem.partition("_")
        key = "_".join(sorted((a, b)))
        for person in (a, b):
            group.setdefault(person, key)
    return group


def scan_ffpp(
    root: Path,
    *,
    compression: str = "c23",
    methods: tuple[str, ...] = METHODS,
    splits_dir: Path | None = None,
) -> list[VideoRecord]:
    """List the real and fake videos of an FF++ tree with labels, splits and sources.

    Raises:
        ConfigError: the real-video folder is missing, a fake name is not ``a_b``,
            or an id is absent from the official split lists.
    """
    real_dir = root / REAL_DIR.format(compression=compression)
    if not real_dir.is_dir():
        msg = f"{real_dir} not found: not an FF++ tree for compression {compression!r}"
        raise ConfigError(msg)
    fakes: list[tuple[str, Path]] = []
    for method in methods:
        folder = root / FAKE_DIR.format(method=method, compression=compression)
        if not folder.is_dir():
            msg = f"{folder} not found (method {method!r}); pass the methods present"
            raise ConfigError(msg)
        fakes.extend((method, path) for path in sorted(folder.glob("*.mp4")))
    for _, path in fakes:
        if path.stem.count("_") != 1:
            msg = f"{path}: FF++ fake names are <target>_<source>.mp4"
            raise ConfigError(msg)
    official = read_official_splits(splits_dir) if splits_dir is not None else None
    groups = _pair_groups([path.stem for _, path in fakes])

    def split_of(person: str, where: Path) -> str:
        if official is None:
            return hashed_split(groups.get(person, person))
        if person not in official:
            msg = f"{where}: id {person} is in none of the official split lists"
            raise ConfigError(msg)
        return official[person]

    def real_id(person: str) -> str:
        return f"{DATASET}/original:{REAL_DIR.format(compression=compression)}/{person}.mp4"

    records = []
    for path in sorted(real_dir.glob("*.mp4")):
        rel = path.relative_to(root).as_posix()
        records.append(
            VideoRecord(
                real_id(path.stem), rel, 0, split_of(path.stem, path), f"{DATASET}/original", real_id(path.stem)
            )
        )
    for method, path in fakes:
        target = path.stem.split("_")[0]
        rel = path.relative_to(root).as_posix()
        dataset = f"{DATASET}/{method}"
        records.append(VideoRecord(f"{dataset}:{rel}", rel, 1, split_of(target, path), dataset, real_id(target)))
    return check_unique(records, str(root))
