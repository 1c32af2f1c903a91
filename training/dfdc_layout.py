"""DeepFake Detection Challenge (DFDC) test set -> labelled video records.

The public test set of the full DFDC release (ai.meta.com/datasets/dfdc; 5,000 videos) unpacks to::

    labels.csv          filename,label[,...]   label 1 = fake, 0 = real
    videos/<filename>   aaqaifqrwn.mp4 ...

as benchmark code reads it (SelfBlendedImages' ``init_dfdc``: ``labels.csv`` with
``filename`` and ``label`` columns, the videos in ``videos/``). Point the reader at that
folder. Every video is ``test``; other ``labels.csv`` columns become metadata. The
training parts (``dfdc_train_part_N/metadata.json``) are not read.
"""

from __future__ import annotations

import csv
from pathlib import Path

from clipguard.errors import ConfigError
from training.data_manifest import VideoRecord, parse_label

DATASET = "DFDC"
LABELS = "labels.csv"
VIDEOS = "videos"


def scan_dfdc(root: Path) -> list[VideoRecord]:
    """The DFDC test videos listed in ``labels.csv``, all in ``test``.

    Raises:
        ConfigError: ``labels.csv`` is missing or lacks ``filename``/``label``, or a label is not 0/1.
    """
    path = root / LABELS
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or ())
            rows = list(reader)
    except OSError as exc:
        msg = f"cannot read the DFDC labels {path}: {exc} (point at the test folder holding {LABELS} and {VIDEOS}/)"
        raise ConfigError(msg) from exc
    if not {"filename", "label"} <= set(columns):
        msg = f"{path}: columns {columns} lack 'filename' and 'label'"
        raise ConfigError(msg)
    records = []
    for number, row in enumerate(rows, start=2):
        name = (row["filename"] or "").strip()
        if not name or "/" in name or name.startswith("."):
            msg = f"{path}:{number}: bad filename {name!r}"
            raise ConfigError(msg)
        label = parse_label(row["label"], f"{path}:{number}")
        rel = f"{VIDEOS}/{name}"
        metadata = {k: v or "" for k, v in row.items() if k not in ("filename", "label")}
        video_id = f"{DATASET}:{rel}"
        records.append(VideoRecord(video_id, rel, label, "test", DATASET, video_id if label == 0 else "", metadata))
    return records
