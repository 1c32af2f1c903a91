"""The prepared data on disk: crop PNGs, one done-marker per video, and the crop manifest.

Layout under the output folder::

    prepared.json                             which crops a video gives: face policy and frames sampled
                                              (VideoScoreConfig.crop_selection), fixed for the folder
    crops/<video key>/f<frame>_t<track>.png   one aligned 256x256 RGB face crop
    videos/<video key>.json                   done-marker: outcome + crop rows of one video
    crops.csv                                 one row per crop (CROP_COLUMNS, then the video manifest's
                                              extra columns), paths relative to it
    videos.csv                                one row per video: status, error kind, crop count (+ extras)

Crops are PNG: lossless, so training sees exactly the pixels the stream's face
stage produced, and each crop is one small file a person can open and a data
loader can read at random (a per-video array would have to be read whole).

A video counts as done once its marker exists; the marker is written last and
atomically, after its PNGs, so an interrupted run never leaves a half-written
video marked done. The manifests are rebuilt from the markers of the videos
asked for (their label, split and metadata from the records asked for now), so
they always agree with what is on disk and with the current video manifest.

``prepared.json`` records which crops the folder holds; a run asking for other
ones (another face policy or frame count) is refused rather than mixing them, and
``evaluate`` refuses to score a folder under a video score it was not made for.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from clipguard.config import video_score_differences
from clipguard.errors import ConfigError
from training.data_manifest import VideoRecord

CROP_COLUMNS = ("video_id", "crop_path", "label", "split", "dataset", "frame_index", "track_id", "source_video")
VIDEO_COLUMNS = ("video_id", "label", "split", "dataset", "status", "n_crops", "error_kind", "error_message")
PREPARED_FILE = "prepared.json"
PREPARED_FORMAT = "clipguard-prepared/1"
Status = Literal["done", "no_face", "skipped"]


@dataclass(frozen=True)
class CropRow:
    """One crop of the crop manifest; ``crop_path`` is relative to the manifest's folder."""

    video_id: str
    crop_path: str
    label: int
    split: str
    dataset: str
    frame_index: int
    track_id: int
    source_video: str
    metadata: dict[str, str] = field(default_factory=dict, hash=False)  # the video manifest's extra columns


@dataclass(frozen=True)
class EncodedCrop:
    """A crop as the preparing actor returns it: PNG bytes and where it came from."""

    frame_index: int
    track_id: int
    png: bytes


@dataclass(frozen=True)
class VideoOutcome:
    """What preparing one video gave: crops, no face at all, or a typed failure."""

    video_id: str
    status: Status
    frames_sampled: int = 0
    frames_with_faces: int = 0
    error_kind: str = ""
    error_message: str = ""
    crops: tuple[EncodedCrop, ...] = field(default=(), repr=False)


def video_key(video_id: str) -> str:
    """A file-name-safe, collision-free folder name for a video id."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id).strip("._")[-80:]
    return f"{readable}-{hashlib.sha256(video_id.encode()).hexdigest()[:10]}"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class CropStore:
    """Reads and writes the prepared-data folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.crops_csv = root / "crops.csv"
        self.videos_csv = root / "videos.csv"
        self.prepared_json = root / PREPARED_FILE

    def claim(self, selection: dict[str, Any]) -> None:
        """Record which crops this folder holds, or refuse a folder that holds other ones.

        Args:
            selection: ``VideoScoreConfig.crop_selection(sampling)`` of this run.

        Raises:
            ConfigError: the folder was prepared with another selection, or holds crops from a
                run that did not record one.
        """
        recorded = read_prepared(self.crops_csv)
        if recorded is not None:
            if recorded != selection:
                differences = video_score_differences(recorded, selection)
                msg = (
                    f"{self.root} holds crops prepared with other settings ({'; '.join(differences)}): "
                    "use another output folder, or the settings it was prepared with"
                )
                raise ConfigError(msg)
            return
        if (self.root / "videos").is_dir() and any((self.root / "videos").iterdir()):
            msg = f"{self.root} holds crops but no {PREPARED_FILE} saying how they were made: use another output folder"
            raise ConfigError(msg)
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {"format": PREPARED_FORMAT, "crop_selection": selection}
        _atomic_write(self.prepared_json, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())

    def marker_path(self, video_id: str) -> Path:
        """Where the done-marker of a video lives."""
        return self.root / "videos" / f"{video_key(video_id)}.json"

    def read_marker(self, video_id: str) -> dict | None:
        """The done-marker of a video, or None if it was never finished."""
        path = self.marker_path(video_id)
        if not path.is_file():
            return None
        marker = json.loads(path.read_text(encoding="utf-8"))
        if marker.get("video_id") != video_id:
            msg = f"{path} belongs to video {marker.get('video_id')!r}, not {video_id!r}"
            raise ConfigError(msg)
        return marker

    def is_done(self, video_id: str, *, retry_skipped: bool = False) -> bool:
        """True if the video has a marker (a skipped one counts unless ``retry_skipped``)."""
        marker = self.read_marker(video_id)
        return marker is not None and not (retry_skipped and marker["status"] == "skipped")

    def write_video(self, record: VideoRecord, outcome: VideoOutcome) -> list[CropRow]:
        """Write a video's PNGs, then its marker; returns its crop rows."""
        key = video_key(record.video_id)
        folder = self.root / "crops" / key
        rows = []
        if outcome.crops:
            folder.mkdir(parents=True, exist_ok=True)
        for crop in outcome.crops:
            name = f"f{crop.frame_index:06d}_t{crop.track_id:03d}.png"
            _atomic_write(folder / name, crop.png)
            rows.append(
                CropRow(
                    video_id=record.video_id,
                    crop_path=f"crops/{key}/{name}",
                    label=record.label,
                    split=record.split,
                    dataset=record.dataset,
                    frame_index=crop.frame_index,
                    track_id=crop.track_id,
                    source_video=record.source_video,
                    metadata=dict(record.metadata),
                )
            )
        marker = {
            "video_id": record.video_id,
            "record": asdict(record),
            "status": outcome.status,
            "frames_sampled": outcome.frames_sampled,
            "frames_with_faces": outcome.frames_with_faces,
            "error_kind": outcome.error_kind,
            "error_message": outcome.error_message,
            "crops": [asdict(row) for row in rows],
        }
        self.marker_path(record.video_id).parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.marker_path(record.video_id), json.dumps(marker, indent=1).encode())
        return rows

    def write_manifests(self, records: list[VideoRecord]) -> tuple[int, int]:
        """Rebuild crops.csv and videos.csv from the markers of ``records``.

        Returns:
            (crops, videos) written; videos without a marker are left out.
        """
        crop_rows: list[dict] = []
        video_rows: list[dict] = []
        extra = sorted({key for record in records for key in record.metadata})
        for record in records:
            marker = self.read_marker(record.video_id)
            if marker is None:
                continue
            # Label, split and metadata as the records say now (a split carved anew, a corrected label).
            current = {k: getattr(record, k) for k in ("label", "split", "dataset", "source_video")}
            for crop in marker["crops"]:
                crop_rows.append({**{k: crop[k] for k in CROP_COLUMNS}, **current, **record.metadata})
            video_rows.append(
                {
                    **{k: getattr(record, k) for k in ("video_id", "label", "split", "dataset")},
                    "status": marker["status"],
                    "n_crops": len(marker["crops"]),
                    "error_kind": marker["error_kind"],
                    "error_message": marker["error_message"],
                    **record.metadata,
                }
            )
        _write_csv(self.crops_csv, CROP_COLUMNS + tuple(extra), crop_rows)
        _write_csv(self.videos_csv, VIDEO_COLUMNS + tuple(extra), video_rows)
        return len(crop_rows), len(video_rows)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_prepared(crops_csv: Path) -> dict[str, Any] | None:
    """The crop selection recorded beside a crop manifest (``prepared.json``), or None if there is none.

    Raises:
        ConfigError: the file exists but is not a prepared-folder record.
    """
    path = crops_csv.parent / PREPARED_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        msg = f"cannot read {path}: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(doc, dict) or doc.get("format") != PREPARED_FORMAT or not isinstance(doc.get("crop_selection"),
                                                                                          dict):  # fmt: skip
        msg = f"{path}: not a {PREPARED_FORMAT} record"
        raise ConfigError(msg)
    return doc["crop_selection"]


def crop_manifest_header(path: Path) -> tuple[str, ...]:
    """The header row of a CSV file (empty when the file is empty)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return tuple(next(csv.reader(handle), []))


def read_crop_manifest(path: Path) -> list[CropRow]:
    """Read crops.csv into typed rows; columns beyond :data:`CROP_COLUMNS` become each row's ``metadata``.

    Raises:
        ConfigError: missing file, a missing column, or a bad value.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = tuple(reader.fieldnames or ())
            missing = [c for c in CROP_COLUMNS if c not in header]
            if missing:
                msg = f"{path}: columns {list(header)} lack {missing} (a crop manifest has {list(CROP_COLUMNS)})"
                raise ConfigError(msg)
            rows = list(reader)
    except OSError as exc:
        msg = f"cannot read crop manifest {path}: {exc}"
        raise ConfigError(msg) from exc
    extra = [c for c in header if c not in CROP_COLUMNS]
    out = []
    for number, row in enumerate(rows, start=2):
        try:
            out.append(
                CropRow(
                    video_id=row["video_id"],
                    crop_path=row["crop_path"],
                    label=int(row["label"]),
                    split=row["split"],
                    dataset=row["dataset"],
                    frame_index=int(row["frame_index"]),
                    track_id=int(row["track_id"]),
                    source_video=row["source_video"],
                    metadata={k: row[k] for k in extra},
                )
            )
        except (TypeError, ValueError) as exc:
            msg = f"{path}:{number}: bad crop row: {exc}"
            raise ConfigError(msg) from exc
    return out
