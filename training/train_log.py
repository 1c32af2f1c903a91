"""Progress a person can follow: a per-epoch table on the console and a CSV file (TensorBoard optional).

Only rank 0 writes. Each console row ends with the run's ETA (the epochs left times the mean
epoch so far); within an epoch, the loop prints ``steps n/N``, a rate and the epoch's ETA
(:class:`training.progress.Progress`, plain lines: a Ray job's log is no terminal).

The CSV (``<run dir>/train_log.csv``) is appended to, so a run that resumed after a failure
shows the epochs of every attempt, each row saying which checkpoint epoch its attempt resumed
from (-1: from scratch).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from clipguard.errors import ConfigError
from training.progress import format_eta

# Console columns: (metric key, header, format spec); every cell is WIDTH wide.
WIDTH = 9
_TABLE = (
    ("epoch", "epoch", "d"),
    ("lr", "lr", ".2e"),
    ("train_loss", "loss", ".4f"),
    ("train_ce", "ce", ".4f"),
    ("skipped_steps", "skipped", "d"),
    ("val_video_auroc", "val_auc", ".4f"),
    ("val_video_map", "val_mAP", ".4f"),
    ("val_video_eer", "val_eer", ".4f"),
    ("train_video_auroc", "train_auc", ".4f"),
    ("epoch_s", "seconds", ".1f"),
    ("run_eta", "run ETA", "eta"),
)


def _cell(spec: str, value: Any) -> str:
    if value is None or value == "":
        return f"{'-':>{WIDTH}}"
    if spec == "eta":
        return f"{format_eta(float(value)):>{WIDTH}}"
    number = int(value) if spec == "d" else float(value)
    return f"{number:>{WIDTH}{spec}}"


class ProgressLog:
    """Appends one row per epoch to a CSV, prints it as a table row, and optionally logs to TensorBoard.

    Args:
        folder: where ``train_log.csv`` (and TensorBoard events) go.
        tensorboard: also write TensorBoard scalars; an error if the package is missing.
        total_epochs: the run's epochs, for the ETA column (None: no ETA).
    """

    def __init__(self, folder: Path, *, tensorboard: bool = False, total_epochs: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.csv_path = folder / "train_log.csv"
        self.total_epochs = total_epochs
        self._epoch_seconds: list[float] = []
        self._header_printed = False
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                msg = f"run.tensorboard is on but TensorBoard is not importable ({exc}); install tensorboard"
                raise ConfigError(msg) from exc
            self._writer = SummaryWriter(log_dir=str(folder / "tensorboard"))

    def write(self, row: dict[str, Any]) -> None:
        """Log one epoch's metrics."""
        self._append_csv(row)
        self._print(row)
        if self._writer is not None:
            for key, value in row.items():
                if isinstance(value, int | float):
                    self._writer.add_scalar(key, value, int(row["epoch"]))
            self._writer.flush()

    def _append_csv(self, row: dict[str, Any]) -> None:
        columns = list(row)
        exists = self.csv_path.is_file() and self.csv_path.stat().st_size > 0
        if exists:
            with self.csv_path.open(newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle))
            if header != columns:
                msg = f"{self.csv_path} has columns {header}, this run logs {columns}: use another run name"
                raise ConfigError(msg)
        with self.csv_path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            if not exists:
                writer.writeheader()
            writer.writerow(row)

    def _print(self, row: dict[str, Any]) -> None:
        if not self._header_printed:
            print(" ".join(f"{title:>{WIDTH}}" for _, title, _ in _TABLE), file=sys.stdout)
            self._header_printed = True
        shown = dict(row)
        if self.total_epochs is not None and row.get("epoch_s") is not None:
            self._epoch_seconds.append(float(row["epoch_s"]))
            left = self.total_epochs - 1 - int(row["epoch"])
            shown["run_eta"] = left * sum(self._epoch_seconds) / len(self._epoch_seconds)
        print(" ".join(_cell(spec, shown.get(key)) for key, _, spec in _TABLE), file=sys.stdout, flush=True)


def read_log(path: Path) -> list[dict[str, str]]:
    """The rows of a ``train_log.csv``."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
