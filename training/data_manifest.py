"""The labelled video list that ``clipguard prepare`` starts from.

Two sources, one result (a list of :class:`VideoRecord`):

* a manifest file, CSV (with a header) or JSON lines, with the columns
  ``path, label, split, dataset`` and optionally ``source_video`` (the real
  video a fake was made from, for real/fake pairing) and ``video_id``.
  ``label`` is ``real``/``fake`` or ``0``/``1``; ``split`` is ``train``, ``val``
  or ``test``; ``path`` is relative to the video root (default: the manifest's
  folder).
* a FaceForensics++ folder (see :mod:`training.ffpp_layout`).

A video's id is ``<dataset>:<path>`` unless the manifest gives one: the whole
relative path, never a slice of it, so two videos can never share an id.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from clipguard.errors import ConfigError

SPLITS = ("train", "val", "test")
_LABELS = {"real": 0, "0": 0, "fake": 1, "1": 1}
_REQUIRED = ("path", "label", "split", "dataset")
_OPTIONAL = ("source_video", "video_id")


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
    """

    video_id: str
    path: str
    label: int
    split: str
    dataset: str
    source_video: str = ""


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
    unknown = set(row) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        msg = f"{where}: unknown columns {sorted(unknown)} (known: {list(_REQUIRED + _OPTIONAL)})"
        raise ConfigError(msg)
    split = str(row["split"]).strip()
    if split not in SPLITS:
        msg = f"{where}: split must be one of {SPLITS}, got {split!r}"
        raise ConfigError(msg)
    dataset = str(row["dataset"]).strip()
    path = relative_video_path(str(row["path"]).strip(), root, where)
    video_id = str(row.get("video_id") or "").strip() or f"{dataset}:{path}"
    label = parse_label(row["label"], where)
    source = str(row.get("source_video") or "").strip() or (video_id if label == 0 else "")
    return VideoRecord(video_id=video_id, path=path, label=label, split=split, dataset=dataset, source_video=source)


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
