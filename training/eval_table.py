"""``clipguard evaluate --table``: the same evaluation for each checkpoint given, then one comparison table.

Each checkpoint gets the full evaluation (:func:`training.eval_run.run_evaluation`: report,
scores, plots; in ``--out/<label>/`` when there are several); the sets are prepared once, in
the first run's ``prepared/`` folders, and reused (finished videos are skipped). The table
(:mod:`training.paper_table`) is printed and written to ``--out/table.md`` and ``table.csv``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from clipguard.config import ModelConfig, describe_video_score
from clipguard.logging_setup import ray_logging_args
from clipguard.ray_connection import ray_connection
from training.dataset_layouts import LAYOUTS
from training.eval_run import EvalOptions, EvalOutcome, ProgressFactory, run_evaluation
from training.eval_sets import SetSpec
from training.paper_table import CheckpointColumn, SetRow, as_text, comparison_rows, paper_column, write_table


def checkpoint_labels(checkpoints: Sequence[Path | None], arch: str) -> list[str]:
    """A short, unique, file-name-safe column label per checkpoint (``base <arch>`` for none)."""
    labels = []
    for checkpoint in checkpoints:
        if checkpoint is None:
            labels.append(f"base-{arch}")
            continue
        stem = checkpoint.name.removesuffix(".safetensors").removesuffix(".manifest.json")
        labels.append(stem if [c.name if c else None for c in checkpoints].count(checkpoint.name) == 1
                      else f"{checkpoint.parent.name}-{stem}")  # fmt: skip
    labels = [re.sub(r"[^A-Za-z0-9_.-]+", "_", label) for label in labels]
    return [label if labels.count(label) == 1 else f"{label}-{i}" for i, label in enumerate(labels)]


def set_rows(specs: Sequence[SetSpec]) -> list[SetRow]:
    """The table's rows: each test set with the docs/method.md §8 column it matches."""
    return [SetRow(s.name, paper_column(s.name, LAYOUTS[s.layout].paper_column if s.layout else None)) for s in specs]


def column_of(label: str, outcome: EvalOutcome) -> CheckpointColumn:
    """A checkpoint's video AUROC per test set (None where a set has one class only)."""
    return CheckpointColumn(label, {r.name: (r.metrics or {}).get("video_auroc") for r in outcome.results})


def run_table(
    base: EvalOptions,
    checkpoints: Sequence[Path | None],
    model_for: Callable[[Path | None], ModelConfig],
    echo: Callable[[str], None],
    progress: ProgressFactory | None = None,
) -> list[list[str]]:
    """Evaluate every checkpoint on ``base``'s sets, then print and write the comparison table.

    Args:
        base: the run's options (its model and output folder are replaced per checkpoint).
        checkpoints: the checkpoints, in column order (None: the base model).
        model_for: the model section to evaluate a checkpoint with.
        echo: the console.
        progress: counters for preparing and scoring.

    Returns:
        The table's cells, header first.
    """
    labels = checkpoint_labels(checkpoints, model_for(None).arch)
    columns = []
    with ray_connection(address=base.ray_address, **ray_logging_args(base.log)):  # one Ray for every run
        for label, checkpoint in zip(labels, checkpoints, strict=True):
            out = base.out_dir / label if len(checkpoints) > 1 else base.out_dir
            echo(f"== {label}: {checkpoint or 'base model'}")
            opts = dataclasses.replace(base, model=model_for(checkpoint), out_dir=out)
            if len(checkpoints) > 1 and columns:  # reuse the sets the first run prepared
                opts = dataclasses.replace(opts, prepared_root=base.out_dir / labels[0] / "prepared")
            columns.append(column_of(label, run_evaluation(opts, echo, progress)))
    rows = comparison_rows(set_rows(base.sets), columns)
    score = base.prepare.video_score
    definition = describe_video_score(score.definition(base.prepare.sampling))
    protocol = score.definition(base.prepare.sampling) == type(score).paper().definition(base.prepare.sampling)
    note = (f"Video AUROC (%) per test set; video score: {definition}"
            + ("" if protocol and base.prepare.sampling.num_frames == 32 else
               " (not the paper's protocol: 32 frames, the largest face, the mean of its crops)")
            + ". Paper: docs/method.md §8, models trained on FaceForensics++.")  # fmt: skip
    md, csv_path = write_table(base.out_dir, rows, note)
    echo(note)
    echo(as_text(rows))
    echo(f"table: {md} {csv_path}")
    return rows
