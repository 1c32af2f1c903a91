"""The official folder layouts of the paper's datasets, by name: ``LAYOUT:ROOT`` -> labelled video records.

``clipguard prepare --dataset celebdf:/data/Celeb-DF-v2`` and
``clipguard evaluate --test-set cdf=celebdf:/data/Celeb-DF-v2`` read a dataset as its
authors publish it; each reader (one module per layout) documents its tree, its label
file and where that layout was checked. Paths in the records are relative to ROOT,
which becomes the video root.

=============  =======================  ======================================================
name           dataset                  split
=============  =======================  ======================================================
``ffpp``       FaceForensics++          official train/val/test.json in ROOT, else by pair
``celebdf``    Celeb-DF v2              ``List_of_testing_videos.txt`` -> test, rest train
``dfd``        DeepFakeDetection        all test
``dfdc``       DFDC test set            all test (``labels.csv``)
``ffiw``       FFIW-10K                 train -> train, val -> test
``deepspeak``  DeepSpeak v1             ``annotations-split-def.csv`` (by identity)
=============  =======================  ======================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clipguard.errors import ConfigError
from training.celebdf_layout import scan_celebdf
from training.data_manifest import VideoRecord, check_unique
from training.deepspeak_layout import scan_deepspeak
from training.dfd_layout import scan_dfd
from training.dfdc_layout import scan_dfdc
from training.ffiw_layout import scan_ffiw
from training.ffpp_layout import scan_ffpp


def _scan_ffpp(root: Path) -> list[VideoRecord]:
    """FF++ with the official split lists when ROOT holds them (train.json, val.json, test.json)."""
    return scan_ffpp(root, splits_dir=root if (root / "test.json").is_file() else None)


@dataclass(frozen=True)
class DatasetLayout:
    """A dataset's reader and the column of docs/method.md §8 its test set fills (None: not in the table)."""

    name: str
    title: str
    scan: Callable[[Path], list[VideoRecord]]
    paper_column: str | None


LAYOUTS: dict[str, DatasetLayout] = {
    layout.name: layout
    for layout in (
        DatasetLayout("ffpp", "FaceForensics++ (c23)", _scan_ffpp, None),
        DatasetLayout("celebdf", "Celeb-DF v2", scan_celebdf, "CDFv2"),
        DatasetLayout("dfd", "DeepFakeDetection (c23)", scan_dfd, "DFD"),
        DatasetLayout("dfdc", "DFDC test set", scan_dfdc, "DFDC"),
        DatasetLayout("ffiw", "FFIW-10K", scan_ffiw, "FFIW"),
        DatasetLayout("deepspeak", "DeepSpeak v1", scan_deepspeak, "DSv1"),
    )
}


def split_layout_spec(text: str) -> tuple[str, Path] | None:
    """``LAYOUT:ROOT`` -> (layout name, root) when the prefix names a layout; None for anything else (a path)."""
    name, sep, root = text.partition(":")
    if not sep or name not in LAYOUTS:
        return None
    if not root:
        msg = f"{text!r}: expected {name}:ROOT, the folder of the dataset"
        raise ConfigError(msg)
    return name, Path(root)


def read_layout(name: str, root: Path, splits: Sequence[str] | None = None) -> list[VideoRecord]:
    """The records of a dataset tree, optionally only some splits, every video file checked to exist.

    Raises:
        ConfigError: an unknown layout, a tree that is not that layout, no videos in the splits asked
            for, or video files missing.
    """
    if name not in LAYOUTS:
        msg = f"unknown dataset layout {name!r}; known: {', '.join(LAYOUTS)}"
        raise ConfigError(msg)
    if not root.is_dir():
        msg = f"{name}: {root} is not a folder"
        raise ConfigError(msg)
    records = LAYOUTS[name].scan(root)
    if splits is not None:
        records = [r for r in records if r.split in splits]
    if not records:
        msg = f"{name}: {root} has no videos in split(s) {list(splits or [])}"
        raise ConfigError(msg)
    missing = [r.path for r in records if not (root / r.path).is_file()]
    if missing:
        msg = f"{name}: {len(missing)} of {len(records)} videos are missing under {root}, e.g. {missing[:3]}"
        raise ConfigError(msg)
    return check_unique(records, f"{name}:{root}")
