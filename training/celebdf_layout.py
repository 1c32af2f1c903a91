"""Celeb-DF v2 folder layout -> labelled video records.

Layout (the authors' release, github.com/yuezunli/celeb-deepfakeforensics, Celeb-DF-v2/README.md)::

    Celeb-real/id0_0000.mp4              590 real videos of celebrities (identity id0, its clip 0000)
    YouTube-real/00000.mp4               300 more real videos from YouTube
    Celeb-synthesis/id0_id16_0000.mp4    5,639 fakes: id0's clip 0000 with id16's face
    List_of_testing_videos.txt           the 518 test videos, one per line: ``<1|0> <folder>/<file>``

In the testing list **1 means real and 0 fake** (the reverse of ours); readers of the
benchmark such as SelfBlendedImages' ``init_cdf`` convert it with ``1 - label``. Listed
videos are ``test``, every other video ``train`` (carve a ``val`` with
``clipguard prepare --val-fraction``). Each listed label is checked against its folder.

A fake's source video is the real clip it was made from: ``id0_id16_0000`` comes from
``Celeb-real/id0_0000.mp4`` (the same rule DeepfakeBench-style loaders use to pair them).
Metadata: ``identity`` (the person of the clip; a YouTube video is its own) and, for a
fake, ``face_identity`` (whose face was swapped in).
"""

from __future__ import annotations

import re
from pathlib import Path

from clipguard.errors import ConfigError
from training.data_manifest import VideoRecord

DATASET = "Celeb-DF-v2"
TEST_LIST = "List_of_testing_videos.txt"
FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
_FAKE = re.compile(r"^(id\d+)_(id\d+)_(\d+)$")
_REAL = re.compile(r"^(id\d+)_(\d+)$")


def read_test_list(root: Path) -> dict[str, int]:
    """``<folder>/<file>`` -> label (ours: 1 = fake) from ``List_of_testing_videos.txt``.

    Raises:
        ConfigError: the file is missing, a line is not ``<0|1> <folder>/<file>``, or a video is listed twice.
    """
    path = root / TEST_LIST
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        msg = f"cannot read the Celeb-DF v2 test list {path}: {exc}"
        raise ConfigError(msg) from exc
    listed: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1") or parts[1].count("/") != 1:
            msg = f"{path}:{number}: expected '<1 real|0 fake> <folder>/<file>.mp4', got {line!r}"
            raise ConfigError(msg)
        if parts[1] in listed:
            msg = f"{path}:{number}: {parts[1]} is listed twice"
            raise ConfigError(msg)
        listed[parts[1]] = 1 - int(parts[0])  # the list's 1 is real
    return listed


def _metadata(folder: str, stem: str) -> tuple[dict[str, str], str]:
    """(metadata, source video's relative path or '') of one video from its name."""
    if folder == "Celeb-synthesis" and (match := _FAKE.match(stem)):
        target, face, clip = match.groups()
        return {"identity": target, "face_identity": face}, f"Celeb-real/{target}_{clip}.mp4"
    if folder == "Celeb-real" and (match := _REAL.match(stem)):
        return {"identity": match.group(1), "face_identity": ""}, ""
    return {"identity": f"{folder}/{stem}", "face_identity": ""}, ""


def scan_celebdf(root: Path) -> list[VideoRecord]:
    """Every video of a Celeb-DF v2 tree: the listed ones in ``test``, the others in ``train``.

    Raises:
        ConfigError: a folder or the test list is missing, a listed video is absent, or its
            listed label disagrees with its folder.
    """
    for folder in FOLDERS:
        if not (root / folder).is_dir():
            msg = f"{root / folder} not found: not a Celeb-DF v2 tree ({', '.join(FOLDERS)}, {TEST_LIST})"
            raise ConfigError(msg)
    listed = read_test_list(root)
    records = []
    seen: set[str] = set()
    for folder, label in FOLDERS.items():
        for path in sorted((root / folder).glob("*.mp4")):
            rel = f"{folder}/{path.name}"
            seen.add(rel)
            if rel in listed and listed[rel] != label:
                kind = "fake" if listed[rel] else "real"
                msg = f"{root / TEST_LIST}: {rel} is listed as {kind}, its folder says otherwise"
                raise ConfigError(msg)
            metadata, source = _metadata(folder, path.stem)
            video_id = f"{DATASET}:{rel}"
            source_id = f"{DATASET}:{source}" if source else (video_id if label == 0 else "")
            records.append(VideoRecord(video_id, rel, label, "test" if rel in listed else "train",
                                       f"{DATASET}/{folder}", source_id, metadata))  # fmt: skip
    absent = sorted(set(listed) - seen)
    if absent:
        msg = f"{root}: {len(absent)} videos of {TEST_LIST} are missing, e.g. {absent[:3]}"
        raise ConfigError(msg)
    return records
