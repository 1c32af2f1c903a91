"""``clipguard evaluate --table``: video AUROC per test set and their mean, one column per checkpoint,
beside the numbers the paper publishes (docs/method.md §8).

The published numbers are copied here from docs/method.md §8 (``tests/training/test_paper_table.py``
checks the copy against that page), because the page is documentation, not package data. A test
set meets a paper column through its dataset layout (``cdf=celebdf:/data/...`` -> CDFv2) or, for a
manifest, its name (``cdf``, ``dfdc``...); a set of no paper column shows ``-`` there.

The comparison is like for like only under the paper's protocol (32 frames, the largest face,
the mean of its crops: ``--video-score-face-policy largest --video-score-pooling crops``); the
table says which video score its numbers are.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PAPER_SETS = ("CDFv2", "DFD", "DFDC", "FFIW", "DSv1")
# Video-level AUROC (%) of models trained on FaceForensics++, docs/method.md §8, the authors' own rows.
PAPER_AUROC: dict[str, dict[str, float]] = {
    "linear probe (frozen CLIP)": {"CDFv2": 78.13, "DFD": 88.15, "DFDC": 73.62, "FFIW": 79.28, "DSv1": 63.65},
    "LN-tuning": {"CDFv2": 94.88, "DFD": 96.83, "DFDC": 86.41, "FFIW": 92.24, "DSv1": 83.57},
    "LN-tuning + L2": {"CDFv2": 96.21, "DFD": 98.18, "DFDC": 87.82, "FFIW": 92.72, "DSv1": 88.81},
    "full method (LN + L2 + UnAl + slerp)": {"CDFv2": 96.62, "DFD": 98.0, "DFDC": 87.15, "FFIW": 91.52, "DSv1": 92.01},
}
# Set names that mean a paper column when the set is a manifest rather than a dataset layout.
_ALIASES = {
    "cdf": "CDFv2", "cdfv2": "CDFv2", "celebdf": "CDFv2", "celeb-df-v2": "CDFv2", "celeb-df": "CDFv2",
    "dfd": "DFD", "deepfakedetection": "DFD",
    "dfdc": "DFDC",
    "ffiw": "FFIW", "ffiw10k": "FFIW", "ffiw-10k": "FFIW",
    "dsv1": "DSv1", "deepspeak": "DSv1", "deepspeak-v1": "DSv1", "deepspeakv1": "DSv1",
}  # fmt: skip


def paper_column(set_name: str, layout_column: str | None) -> str | None:
    """The docs/method.md §8 column a test set stands for, if any (its layout's, else by its name)."""
    return layout_column or _ALIASES.get(set_name.lower())


@dataclass(frozen=True)
class SetRow:
    """One row of the table: a test set and the paper column it matches (None: none)."""

    name: str
    paper: str | None


@dataclass(frozen=True)
class CheckpointColumn:
    """One evaluated model: its label and video AUROC (0-1) per test set name (None: not measurable)."""

    label: str
    auroc: dict[str, float | None]


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100.0 * value:.2f}"


def _mean(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def comparison_rows(sets: Sequence[SetRow], columns: Sequence[CheckpointColumn]) -> list[list[str]]:
    """Header, one row per test set, the mean over all sets and, when they differ, over the paper's sets.

    Cells are AUROC in % with two decimals, as the paper prints them; a mean is ``-`` unless every
    value it averages exists.
    """
    header = ["test set", *[c.label for c in columns], *[f"paper: {m}" for m in PAPER_AUROC]]
    rows = [header]
    for s in sets:
        label = f"{s.name} ({s.paper})" if s.paper and s.paper.lower() != s.name.lower() else s.name
        rows.append([label, *[_pct(c.auroc.get(s.name)) for c in columns],
                     *[_pct(PAPER_AUROC[m][s.paper] / 100 if s.paper else None) for m in PAPER_AUROC]])  # fmt: skip

    def mean_row(title: str, chosen: Sequence[SetRow]) -> list[str]:
        ours = [_pct(_mean([c.auroc.get(s.name) for s in chosen])) for c in columns]
        paper = [_pct(_mean([PAPER_AUROC[m][s.paper] / 100 if s.paper else None for s in chosen]))
                 for m in PAPER_AUROC]  # fmt: skip
        return [title, *ours, *paper]

    rows.append(mean_row(f"mean of all sets ({len(sets)})", sets))
    in_paper = [s for s in sets if s.paper]
    if in_paper and len(in_paper) < len(sets):
        rows.append(mean_row(f"mean of the sets in the paper ({len(in_paper)})", in_paper))
    return rows


def as_markdown(rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def as_text(rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns for the console."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def write_table(out_dir: Path, rows: Sequence[Sequence[str]], note: str) -> tuple[Path, Path]:
    """``table.md`` (the note, then the table) and ``table.csv`` (the cells) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "table.md"
    md.write_text(f"{note}\n\n{as_markdown(rows)}\n", encoding="utf-8")
    path = out_dir / "table.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return md, path
