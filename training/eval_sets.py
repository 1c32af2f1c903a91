"""The labelled sets ``clipguard evaluate`` scores: ``NAME=PATH`` specs, and loading them as crop rows.

A set is a crop manifest (``crops.csv`` from ``clipguard prepare``), a raw labelled
video manifest (CSV/JSONL, :mod:`training.data_manifest`) or a dataset in its
official layout (``LAYOUT:ROOT``, :mod:`training.dataset_layouts`); the last two are
first prepared with :func:`training.prepare.prepare_videos` into the output folder,
under the video score being evaluated. A crop manifest is loaded only under the
video score its ``prepared.json`` says it was made for (other faces or frames give
other numbers). Videos without crops are listed from ``videos.csv``, never dropped.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipguard.config import (
    FacesConfig,
    SamplingConfig,
    SourceConfig,
    VideoScoreConfig,
    describe_video_score,
    video_score_differences,
)
from clipguard.errors import ConfigError
from training.crop_manifest import (
    CROP_COLUMNS,
    CropRow,
    VideoOutcome,
    crop_manifest_header,
    read_crop_manifest,
    read_prepared,
)
from training.data_manifest import VAL_FLAG, read_video_manifest
from training.dataset_layouts import read_layout, split_layout_spec
from training.prepare import prepare_videos
from training.progress import Progress

logger = logging.getLogger(__name__)

ALL = "all"  # name of the union of every test set in the report
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SPLITS = ("all", "train", "val", "test")


@dataclass(frozen=True)
class SetSpec:
    """A labelled set as given on the command line: ``NAME=PATH`` (or ``PATH``, named by its folder/stem).

    ``PATH`` is a crop or video manifest, or ``LAYOUT:ROOT`` for a dataset in its official layout
    (``layout`` is then set and ``path`` is the dataset's folder).
    """

    name: str
    path: Path
    layout: str | None = None

    def default_split(self, validation: bool = False) -> str:
        """The split used when none is asked for: a dataset's test (or, as a validation set, val) split, a
        manifest's every row."""
        if self.layout is None:
            return ALL
        return "val" if validation else "test"


def parse_set_spec(text: str) -> SetSpec:
    """``NAME=PATH`` or ``PATH`` -> :class:`SetSpec`; the name becomes part of file names.

    Raises:
        ConfigError: an empty part, a name with characters other than ``A-Za-z0-9_.-``, or the reserved ``all``.
    """
    name, sep, path = text.partition("=")
    if not sep:
        path = text
        layout = split_layout_spec(text)
        stem = layout[0] if layout is not None else Path(text).stem
        name = Path(text).parent.name if stem == "crops" and Path(text).parent.name else stem
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "set"
    if not sep and not path:
        msg = f"test set {text!r}: expected NAME=PATH"
        raise ConfigError(msg)
    if sep and (not name or not path):
        msg = f"test set {text!r}: expected NAME=PATH with both parts non-empty"
        raise ConfigError(msg)
    if not _NAME.match(name):
        msg = f"test set {text!r}: NAME must match {_NAME.pattern} (it is used in file names)"
        raise ConfigError(msg)
    if name == ALL:
        msg = f"test set {text!r}: the name {ALL!r} is reserved for the union of all sets"
        raise ConfigError(msg)
    layout = split_layout_spec(path)
    if layout is not None:
        return SetSpec(name=name, path=layout[1], layout=layout[0])
    return SetSpec(name=name, path=Path(path))


@dataclass(frozen=True)
class PrepareSettings:
    """How a raw video manifest is turned into crops (the stream's decode and face settings)."""

    source: SourceConfig
    sampling: SamplingConfig
    faces: FacesConfig
    video_score: VideoScoreConfig = VideoScoreConfig()  # its face policy picks the crops, its pooling scores them
    video_root: Path | None = None  # None: each manifest's own folder
    workers: int = 2
    cpus_per_worker: float = 1.0
    model_dir: Path | None = None  # where the face detector is looked up (None: $CLIPGUARD_MODEL_DIR, ./models)


@dataclass(frozen=True)
class LoadedSet:
    """A test set's crops (one split), and the videos of it that have none."""

    name: str
    path: Path  # as given
    kind: str  # 'crops', 'videos' or the dataset layout's name
    crops_csv: Path
    split: str
    rows: tuple[CropRow, ...]
    without_crops: tuple[dict[str, Any], ...]  # video_id, label, status, error_kind, error_message


def is_crop_manifest(path: Path) -> bool:
    """True for a CSV whose header has every crop-manifest column (extra metadata columns allowed)."""
    return path.suffix.lower() == ".csv" and set(CROP_COLUMNS) <= set(crop_manifest_header(path))


def check_prepared_for(crops_csv: Path, name: str, prepare: PrepareSettings) -> None:
    """Refuse crops made for another video score than the one evaluated (other faces or frames).

    Raises:
        ConfigError: no ``prepared.json`` beside the manifest, or one recording other settings.
    """
    wanted = prepare.video_score.crop_selection(prepare.sampling)
    recorded = read_prepared(crops_csv)
    if recorded is None:
        msg = (
            f"test set {name!r}: {crops_csv} has no prepared.json saying which faces and frames its crops are; "
            "prepare it again with `clipguard prepare` (or give the video manifest, prepared here)"
        )
        raise ConfigError(msg)
    differences = video_score_differences(recorded, wanted)
    if differences:
        msg = (
            f"test set {name!r}: {crops_csv} holds crops for another video score than "
            f"{describe_video_score(prepare.video_score.definition(prepare.sampling))}: {'; '.join(differences)}. "
            "Evaluate with the video-score and frame flags it was prepared with, or prepare it again"
        )
        raise ConfigError(msg)


def _videos_without_crops(crops_csv: Path, split: str, selected: set[str] | None) -> list[dict[str, Any]]:
    """Rows of ``videos.csv`` beside a crop manifest with no crops (none listed if that file is absent)."""
    videos_csv = crops_csv.with_name("videos.csv")
    if not videos_csv.is_file():
        return []
    with videos_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        if (split != ALL and row.get("split") != split) or (selected is not None and row["video_id"] not in selected):
            continue
        if int(row.get("n_crops") or 0) == 0:
            out.append({"video_id": row["video_id"], "label": int(row["label"]), "status": row["status"],
                        "error_kind": row.get("error_kind", ""),
                        "error_message": row.get("error_message", "")})  # fmt: skip
    return out


def _no_rows(name: str, path: Path, split: str, what: str) -> ConfigError:
    hint = f" (carve one from train with `clipguard prepare {VAL_FLAG} 0.1`)" if split == "val" else ""
    return ConfigError(f"test set {name!r}: {path} has no {what} in split {split!r}{hint}")


def load_set(
    spec: SetSpec,
    split: str | None,
    prepared_root: Path,
    prepare: PrepareSettings,
    on_video: Callable[[VideoOutcome], None] | None = None,
    progress: Progress | None = None,
    *,
    validation: bool = False,
) -> LoadedSet:
    """Read a crop manifest, or prepare a video manifest or dataset tree into ``prepared_root/<name>`` (Ray up).

    Args:
        spec: the set.
        split: rows of this split only (``all``: every row); None: the set's :meth:`SetSpec.default_split`.
        prepared_root: where video manifests and datasets are prepared.
        prepare: decode, face and video-score settings.
        on_video: called after each video prepared.
        progress: counts the videos prepared.
        validation: the set is the validation set (a dataset's default split is then ``val``, never ``test``).
    """
    split = spec.default_split(validation) if split is None else split
    if spec.layout is None and not spec.path.is_file():
        msg = f"test set {spec.name!r}: {spec.path} is not a file"
        raise ConfigError(msg)
    if spec.layout is None and is_crop_manifest(spec.path):
        check_prepared_for(spec.path, spec.name, prepare)
        kind, crops_csv, selected = "crops", spec.path, None
    else:
        if spec.layout is not None:
            records = read_layout(spec.layout, spec.path, None if split == ALL else (split,))
            kind, root = spec.layout, spec.path.resolve()
        else:
            records = [r for r in read_video_manifest(spec.path, prepare.video_root) if split in (ALL, r.split)]
            kind, root = "videos", (prepare.video_root or spec.path.parent).resolve()
        if not records:
            raise _no_rows(spec.name, spec.path, split, "videos")
        summary = prepare_videos(
            records,
            (prepared_root / spec.name).resolve(),
            source=prepare.source.model_copy(update={"video_root": root}),
            sampling=prepare.sampling,
            faces=prepare.faces,
            video_score=prepare.video_score,
            workers=prepare.workers,
            cpus_per_worker=prepare.cpus_per_worker,
            on_video=on_video,
            model_dir=prepare.model_dir,
            progress=progress,
        )
        crops_csv, selected = summary.crops_csv, {r.video_id for r in records}
    rows = [r for r in read_crop_manifest(crops_csv) if split == ALL or r.split == split]
    without = _videos_without_crops(crops_csv, split, selected)
    if not rows and not without:
        raise _no_rows(spec.name, spec.path, split, "crops")
    return LoadedSet(spec.name, spec.path, kind, crops_csv, split, tuple(rows), tuple(without))
