"""The comparison table of ``evaluate --table``: the paper's numbers as docs/method.md §8 prints them, and the cells."""

from __future__ import annotations

import re

import pytest

from clipguard.assets import REPO_ROOT
from training.eval_sets import parse_set_spec
from training.eval_table import checkpoint_labels, set_rows
from training.paper_table import (
    PAPER_AUROC,
    PAPER_SETS,
    CheckpointColumn,
    SetRow,
    as_markdown,
    comparison_rows,
    paper_column,
)


def method_page_table() -> dict[str, dict[str, float]]:
    """The rows of the table in docs/method.md §8, by method name (bold marks stripped)."""
    text = (REPO_ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    section = text.split("## §8 ", 1)[1].split("\n## ", 1)[0]
    first_table = section[section.index("\n|") + 1 :].split("\n\n", 1)[0]  # §8 also maps rows to presets, below
    lines = [line for line in first_table.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    table = {}
    for line in lines[2:]:
        cells = [re.sub(r"\*\*", "", cell).strip() for cell in line.strip("|").split("|")]
        table[cells[0]] = {col: float(v) for col, v in zip(header[1:], cells[1:], strict=True) if v not in ("–", "-")}
    return table


def test_paper_numbers_are_the_method_page_table():
    page = method_page_table()
    assert tuple(next(iter(page.values()))) == PAPER_SETS
    for method, numbers in PAPER_AUROC.items():
        assert page[method] == numbers, method


def test_rows_per_set_means_and_paper_columns():
    sets = [SetRow("cdf", "CDFv2"), SetRow("DFDC", "DFDC"), SetRow("ffpp", None)]
    columns = [CheckpointColumn("a", {"cdf": 0.9, "DFDC": 0.8, "ffpp": 0.99}),
               CheckpointColumn("b", {"cdf": 0.95, "DFDC": None, "ffpp": 1.0})]  # fmt: skip
    rows = comparison_rows(sets, columns)
    assert rows[0][:3] == ["test set", "a", "b"] and len(rows[0]) == 3 + len(PAPER_AUROC)
    assert rows[1] == ["cdf (CDFv2)", "90.00", "95.00", "78.13", "94.88", "96.21", "96.62"]
    assert rows[2] == ["DFDC", "80.00", "-", "73.62", "86.41", "87.82", "87.15"]  # a set with one class: "-"
    assert rows[3] == ["ffpp", "99.00", "100.00", "-", "-", "-", "-"]
    assert rows[4][:3] == ["mean of all sets (3)", f"{100 * (0.9 + 0.8 + 0.99) / 3:.2f}", "-"]
    assert rows[4][3:] == ["-"] * 4  # the paper has no FF++ number: no mean over these three sets
    assert rows[5][0] == "mean of the sets in the paper (2)"
    assert rows[5][1] == "85.00" and rows[5][-1] == f"{(96.62 + 87.15) / 2:.2f}"
    assert as_markdown(rows).splitlines()[1] == "|" + "---|" * len(rows[0])


def test_sets_meet_paper_columns_by_layout_or_name():
    specs = [
        parse_set_spec(s) for s in ("x=dfd:/d", "dsv1=data/ds.csv", "cdf=crops.csv", "mine=ffiw:/f", "other=o.csv")
    ]
    assert [r.paper for r in set_rows(specs)] == ["DFD", "DSv1", "CDFv2", "FFIW", None]
    assert paper_column("Celeb-DF-v2", None) == "CDFv2" and paper_column("ffpp", None) is None


@pytest.mark.parametrize(
    ("paths", "labels"),
    [
        (["runs/a/best.safetensors", "runs/b/last.safetensors"], ["best", "last"]),
        (["runs/a/best.safetensors", "runs/b/best.safetensors"], ["a-best", "b-best"]),
        ([None, "x/ckpt one.safetensors"], ["base-ViT-L-14", "ckpt_one"]),
    ],
)
def test_checkpoint_columns_get_unique_labels(paths, labels):
    from pathlib import Path

    assert checkpoint_labels([Path(p) if p else None for p in paths], "ViT-L-14") == labels
