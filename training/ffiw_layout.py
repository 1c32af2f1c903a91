"""FFIW-10K (Face Forensics in the Wild) folder layout -> labelled video records.

Layout (the authors' release, github.com/tfzhou/FFIW, README "Dataset Structure")::

    source/train/  source/val/          real videos (several people each)
    target/train/  target/val/          the same scenes with some faces swapped (fake)
    target_mask/...                     masks of the swapped faces (not read)

Videos are the ``*.mp4`` files under each folder, at any depth (some copies put them in a
``videos/`` subfolder). ``train`` stays ``train``; ``val`` becomes ``test``: the benchmark
protocol scores the 250 + 250 val videos (SelfBlendedImages' ``init_ffiw`` reads
``source/val`` and ``target/val``). The release does not pair a target with its source
video by name, so fakes have no source video. FFIW is multi-person: evaluate it under the
video score you serve (``--video-score-face-policy``).
"""

from __future__ import annotations

from pathlib import Path

from clipguard.errors import ConfigError
from training.data_manifest import VideoRecord

DATASET = "FFIW"
SPLITS = {"train": "train", "val": "test"}


def scan_ffiw(root: Path) -> list[VideoRecord]:
    """Every video under ``source/`` (real) and ``target/`` (fake); ``val`` is the test split.

    Raises:
        ConfigError: ``source/`` or ``target/`` is missing, or neither split folder holds videos.
    """
    records = []
    for kind, label in (("source", 0), ("target", 1)):
        if not (root / kind).is_dir():
            msg = f"{root / kind} not found: not an FFIW-10K tree (source/, target/ with train/ and val/)"
            raise ConfigError(msg)
        for folder, split in SPLITS.items():
            for path in sorted((root / kind / folder).rglob("*.mp4")):
                rel = path.relative_to(root).as_posix()
                video_id = f"{DATASET}:{rel}"
                records.append(VideoRecord(video_id, rel, label, split, f"{DATASET}/{kind}",
                                           video_id if label == 0 else ""))  # fmt: skip
    if not records:
        msg = f"{root}: no videos under source/{{train,val}} or target/{{train,val}}"
        raise ConfigError(msg)
    return records
