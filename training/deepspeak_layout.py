"""DeepSpeak v1 (faridlab/deepspeak_v1 on Hugging Face) -> labelled video records.

The release ships three annotation files beside its video archives (the files every
reader of it loads, e.g. ``annotations-split-def.csv``, ``annotations-real.csv`` and
``annotations-fake.csv`` read by identity and ``video-file``)::

    annotations-real.csv        video-file, identity, ...                       real recordings
    annotations-fake.csv        video-file, kind, engine, identity-source, identity-target, ...   fakes
    annotations-split-def.csv   identity, split (train | test)                  the official split
    <the unpacked archives>     the .mp4 files, at any depth

Point the reader at the folder holding the three CSVs with the archives unpacked under it;
each ``video-file`` is found by its file name anywhere below (a name found twice is an
error). A real video takes its identity's split; a fake goes to ``test`` when either of
its identities is a test identity (no test person is ever trained on), else ``train``.
All annotation columns become metadata (``identity`` for a real, ``identity-target`` as
``identity`` for a fake, so ``--val-group-by identity`` carves by person). Fakes have no
source video (the annotations name recordings, not files).
"""

from __future__ import annotations

import csv
from pathlib import Path

from clipguard.errors import ConfigError
from training.data_manifest import VideoRecord

DATASET = "DeepSpeak-v1"
REAL_CSV = "annotations-real.csv"
FAKE_CSV = "annotations-fake.csv"
SPLIT_CSV = "annotations-split-def.csv"


def _read_csv(path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or ())
            rows = [{k: (v or "").strip() for k, v in row.items()} for row in reader]
    except OSError as exc:
        msg = f"cannot read DeepSpeak annotations {path}: {exc}"
        raise ConfigError(msg) from exc
    if not set(needed) <= columns:
        msg = f"{path}: columns {sorted(columns)} lack {sorted(set(needed) - columns)}"
        raise ConfigError(msg)
    return rows


def _video_index(root: Path) -> dict[str, str]:
    """File name -> path relative to ``root`` of every .mp4 below it."""
    index: dict[str, str] = {}
    for path in sorted(root.rglob("*.mp4")):
        rel = path.relative_to(root).as_posix()
        if path.name in index:
            msg = f"{root}: {path.name} is both {index[path.name]} and {rel}"
            raise ConfigError(msg)
        index[path.name] = rel
    return index


def scan_deepspeak(root: Path) -> list[VideoRecord]:
    """Every annotated DeepSpeak v1 video with its official split (a missing file keeps its bare name).

    Raises:
        ConfigError: an annotation file or column is missing, an identity has no split, or a split is not
            train/test.
    """
    splits = {row["identity"]: row["split"].lower() for row in _read_csv(root / SPLIT_CSV, ("identity", "split"))}
    bad = sorted({s for s in splits.values() if s not in ("train", "test")})
    if bad:
        msg = f"{root / SPLIT_CSV}: splits must be train or test, got {bad}"
        raise ConfigError(msg)
    index = _video_index(root)

    def split_of(identities: list[str], where: str) -> str:
        unknown = [i for i in identities if i not in splits]
        if unknown:
            msg = f"{where}: identities {unknown} are not in {SPLIT_CSV}"
            raise ConfigError(msg)
        return "test" if any(splits[i] == "test" for i in identities) else "train"

    records = []
    for label, name, needed in ((0, REAL_CSV, ("video-file", "identity")),
                                (1, FAKE_CSV, ("video-file", "identity-source", "identity-target"))):  # fmt: skip
        for number, row in enumerate(_read_csv(root / name, needed), start=2):
            where = f"{root / name}:{number}"
            file_name = Path(row["video-file"]).name
            if not file_name:
                msg = f"{where}: empty video-file"
                raise ConfigError(msg)
            if label == 0:
                split, metadata = split_of([row["identity"]], where), dict(row)
            else:
                split = split_of([row["identity-source"], row["identity-target"]], where)
                metadata = {**row, "identity": row["identity-target"]}
            metadata.pop("video-file")
            rel = index.get(file_name, file_name)
            engine = row.get("engine") or ("real" if label == 0 else "fake")
            video_id = f"{DATASET}:{file_name}"
            records.append(VideoRecord(video_id, rel, label, split, f"{DATASET}/{engine}",
                                       video_id if label == 0 else "", metadata))  # fmt: skip
    return records
