"""The labelled video list that ``clipguard prepare`` starts from.

Two sources, one result (a list of :class:`VideoRecord`):

* a manifest file, CSV (with a header) or JSON lines, with the columns
  ``path, label, split, dataset`` and optionally ``source_video`` (the real
  video a fake was made from, for real/fake pairing) and ``video_id``.
  ``label`` is ``real``/``fake`` or ``0``/``1``; ``split`` is ``train``, ``val``
  or ``test``; ``path`` is relative to the video root (default: the manifest's
  folder). Any other column (``identity``, ``engine``...) is kept as the video's
  metadata and carried into the crop manifest.
* a dataset's official folder layout (:mod:`training.dataset_layouts`: FF++,
  Celeb-DF v2, DFD, DFDC, FFIW-10K, DeepSpeak v1).

A video's id is ``<dataset>:<path>`` unless the manifest gives one: the whole
relative path, never a slice of it, so two videos can never share an id.

A list with train and test but no validation split gets one from
:func:`carve_validation` (``clipguard prepare --val-fraction``): whole groups of
training videos (a real video and the fakes made from it, or every video of one
identity) move to ``val``, so no person is both trained on and selected on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from clipguard.errors import ConfigError

SPLITS = ("train", "val", "test")
_LABELS = {"real": 0, "0": 0, "fake": 1, "1": 1}
_REQUIRED = ("path", "label", "split", "dataset")
_OPTIONAL = ("source_video", "video_id")
# Names the crop manifest uses for its own columns: a metadata column may not take them.
_RESERVED = ("crop_path", "frame_index", "track_id", "status", "n_crops", "error_kind", "error_message")
VAL_FLAG = "--val-fraction"  # the prepare flag that carves a validation split (named in errors)


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video to prepare.

    Attributes:
        video_id: unique id, carried into every crop row.
        path: path relative to the video root, POSIX style.
        label: 0 = real, 1 = fake.
        split: train, val or test.
        dataset: dataset name (e.g. ``FF++/Deepfakes``), for per-dataset metrics.
        source_video: id of the real video this one derives from ('' if unknown);
            a real video is its own source.
        metadata: the manifest's other columns (or a layout's annotations), as strings.
    """

    video_id: str
    path: str
    label: int
    split: str
    dataset: str
    source_video: str = ""
    metadata: dict[str, str] = field(default_factory=dict, hash=False)


def parse_label(value: object, where: str) -> int:
    """'real'/'fake'/0/1 (any case) -> 0/1."""
    label = _LABELS.get(str(value).strip().lower())
    if label is None:
        msg = f"{where}: label must be real, fake, 0 or 1, got {value!r}"
        raise ConfigError(msg)
    return label


def relative_video_path(path: str, root: Path, where: str) -> str:
    """``path`` as a POSIX path relative to ``root``; absolute paths must lie inside it."""
    candidate = Path(path)
    if candidate.is_absolute():
        try:
            candidate = candidate.resolve().relative_to(root.resolve())
        except ValueError as exc:
            msg = f"{where}: {path} is not under the video root {root}"
            raise ConfigError(msg) from exc
    rel = PurePosixPath(candidate.as_posix())
    if not rel.parts or ".." in rel.parts:
        msg = f"{where}: video path {path!r} must be a relative path inside the video root"
        raise ConfigError(msg)
    return str(rel)


def record_from_row(row: dict[str, object], root: Path, where: str) -> VideoRecord:
    """Validate one manifest row into a :class:`VideoRecord`."""
    missing = [key for key in _REQUIRED if row.get(key) is None or not str(row[key]).strip()]
    if missing:
        msg = f"{where}: missing {missing}"
        raise ConfigError(msg)
    reserved = sorted(set(row) & set(_RESERVED))
    if reserved:
        msg = f"{where}: columns {reserved} are reserved for the crop manifest; rename them"
        raise ConfigError(msg)
    metadata = {str(k): "" if v is None else str(v) for k, v in row.items() if k not in _REQUIRED + _OPTIONAL}
    split = str(row["split"]).strip()
    if split not in SPLITS:
        msg = f"{where}: split must be one of {SPLITS}, got {split!r}"
        raise ConfigError(msg)
    dataset = str(row["dataset"]).strip()
    path = relative_video_path(str(row["path"]).strip(), root, where)
    video_id = str(row.get("video_id") or "").strip() or f"{dataset}:{path}"
    label = parse_label(row["label"], where)
    source = str(row.get("source_video") or "").strip() or (video_id if label == 0 else "")
    return VideoRecord(video_id=video_id, path=path, label=label, split=split, dataset=dataset, source_video=source,
                       metadata=metadata)  # fmt: skip


def read_video_manifest(path: Path, video_root: Path | None = None) -> list[VideoRecord]:
    """Read a CSV (``.csv``) or JSON-lines (``.jsonl``/``.json``) video manifest.

    Args:
        path: the manifest file.
        video_root: folder the video paths are relative to; default the manifest's folder.

    Raises:
        ConfigError: unreadable file, bad row, or a duplicated video id.
    """
    root = video_root if video_root is not None else path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read video manifest {path}: {exc}"
        raise ConfigError(msg) from exc
    rows: list[tuple[str, object]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        rows = [(f"{path}:{number}", row) for number, row in enumerate(reader, start=2)]
    elif path.suffix.lower() in (".jsonl", ".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                msg = f"{path}:{number}: not valid JSON: {exc}"
                raise ConfigError(msg) from exc
    else:
        msg = f"{path}: video manifest must be .csv or .jsonl"
        raise ConfigError(msg)
    records = []
    for where, row in rows:
        if not isinstance(row, dict):
            msg = f"{where}: each row must be an object with path, label, split, dataset"
            raise ConfigError(msg)
        records.append(record_from_row(row, root, where))
    return check_unique(records, str(path))


def check_unique(records: list[VideoRecord], where: str) -> list[VideoRecord]:
    """Refuse two records with one video id (their crops would mix)."""
    seen: set[str] = set()
    for record in records:
        if record.video_id in seen:
            msg = f"{where}: video id {record.video_id!r} appears twice"
            raise ConfigError(msg)
        seen.add(record.video_id)
    if not records:
        msg = f"{where}: no videos"
        raise ConfigError(msg)
    return records


def _group_key(record: VideoRecord, group_by: str, where: str) -> str:
    if group_by == "source_video":
        return record.source_video or record.video_id
    if group_by not in record.metadata or not record.metadata[group_by].strip():
        msg = f"{where}: video {record.video_id!r} has no {group_by!r} to group the validation split by"
        raise ConfigError(msg)
    return record.metadata[group_by].strip()


def carve_validation(
    records: list[VideoRecord], fraction: float, group_by: str = "source_video", where: str = "manifest"
) -> list[VideoRecord]:
    """Move ``fraction`` of the training groups to a new ``val`` split; other splits are untouched.

    A group is a real video with the fakes made from it (``source_video``, the default) or the
    videos sharing a metadata column such as ``identity``. The groups moved are the first
    ``ceil(fraction * groups)`` by a SHA-256 of their key: deterministic, with no seed, and a
    group never straddles train and val.

    Raises:
        ConfigError: the records already have a ``val`` split, the fraction is not in (0, 1),
            a video lacks the grouping column, or the carved split misses a class.
    """
    if not 0.0 < fraction < 1.0:
        msg = f"{VAL_FLAG} must be within (0, 1), got {fraction}"
        raise ConfigError(msg)
    if any(r.split == "val" for r in records):
        msg = f"{where} already has a val split; {VAL_FLAG} carves one only from a list without"
        raise ConfigError(msg)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        if record.split == "train":
            groups[_group_key(record, group_by, where)].append(index)
    if len(groups) < 2:
        msg = f"{where}: {len(groups)} training group(s) by {group_by!r}: too few to carve a validation split from"
        raise ConfigError(msg)
    order = sorted(groups, key=lambda key: hashlib.sha256(key.encode()).hexdigest())
    chosen = {i for key in order[: min(len(order) - 1, math.ceil(fraction * len(order)))] for i in groups[key]}
    out = [replace(r, split="val") if i in chosen else r for i, r in enumerate(records)]
    labels = {r.label for r in out if r.split == "val"}
    if labels != {0, 1}:
        msg = (
            f"{where}: the carved validation split ({len(chosen)} videos by {group_by!r}) has only "
            f"{'fake' if labels == {1} else 'real'} videos; raise {VAL_FLAG} or group by another column"
        )
        raise ConfigError(msg)
    return out
