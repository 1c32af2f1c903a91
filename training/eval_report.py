"""What ``clipguard evaluate`` writes: report.json, scores.csv, ROC/PR/histogram PNGs, a console table.

Plots are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``),
so no pyplot state or interactive backend is ever touched.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from clipguard.aggregation import label_for
from clipguard.config import ThresholdConfig
from training.evaluate import SetResult

SCORE_COLUMNS = ("test_set", "video_id", "label", "p_fake", "n_crops")


def verdict_counts(result: SetResult, thresholds: ThresholdConfig) -> dict[str, dict[str, int]]:
    """How the stream would label the scored videos: true class -> verdict label -> videos."""
    out = {"real": {"fake": 0, "uncertain": 0, "real": 0}, "fake": {"fake": 0, "uncertain": 0, "real": 0}}
    for label, score in zip(result.videos.labels.tolist(), result.videos.scores.tolist(), strict=True):
        out["fake" if label == 1 else "real"][label_for(score, thresholds)] += 1
    return out


def set_section(result: SetResult, thresholds: ThresholdConfig, plots: Sequence[str]) -> dict[str, Any]:
    """The report entry of one set (or of the union)."""
    return {
        **{k: v for k, v in result.info.items()},
        "counts": result.counts(),
        "metrics": result.metrics,
        "metrics_null_reason": result.null_reason,
        "verdicts": verdict_counts(result, thresholds),
        "videos_without_crops": list(result.without_crops),
        "plots": list(plots),
    }


def write_json(path: Path, doc: dict[str, Any]) -> Path:
    """Pretty JSON, written atomically; NaN is refused (it is not JSON)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_scores_csv(path: Path, results: Sequence[SetResult]) -> Path:
    """One row per scored video of every set (not the union): test_set, video_id, label, p_fake, n_crops."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SCORE_COLUMNS)
        for result in results:
            v = result.videos
            for video_id, label, score, n in zip(v.video_ids, v.labels, v.scores, v.n_crops, strict=True):
                writer.writerow([result.name, video_id, int(label), repr(float(score)), int(n)])
    return path


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)


def plot_set(out_dir: Path, result: SetResult) -> list[str]:
    """roc_<set>.png and pr_<set>.png (both classes needed) and hist_<set>.png; returns the file names."""
    y, s = result.videos.labels, result.videos.scores
    names = []
    if result.metrics is not None:
        m = result.metrics
        fpr, tpr, _ = roc_curve(y, s)
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
        ax.plot(fpr, tpr, label=f"video AUROC {m['video_auroc']:.3f}")
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
        ax.plot([m["video_eer"]], [1 - m["video_eer"]], "o", label=f"EER {m['video_eer']:.3f}")
        ax.set(xlabel="false-positive rate (real flagged)", ylabel="true-positive rate (fake flagged)",
               title=f"ROC: {result.name}", xlim=(0, 1), ylim=(0, 1.01))  # fmt: skip
        ax.legend(loc="lower right")
        _save(fig, out_dir / f"roc_{result.name}.png")
        names.append(f"roc_{result.name}.png")
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
        for positive, scores, title in ((1, s, "fake"), (0, 1.0 - s, "real")):
            precision, recall, _ = precision_recall_curve((y == positive).astype(int), scores)
            ax.plot(recall, precision, label=f"class {title}")
        ax.set(xlabel="recall", ylabel="precision", title=f"PR: {result.name} (macro mAP {m['video_map']:.3f})",
               xlim=(0, 1), ylim=(0, 1.01))  # fmt: skip
        ax.legend(loc="lower left")
        _save(fig, out_dir / f"pr_{result.name}.png")
        names.append(f"pr_{result.name}.png")
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 41)
    for label, colour, title in ((0, "tab:blue", "real"), (1, "tab:red", "fake")):
        ax.hist(s[y == label], bins=bins, alpha=0.6, color=colour, label=f"{title} ({int((y == label).sum())})")
    ax.set(xlabel="video p_fake", ylabel="videos", title=f"scores: {result.name}")
    ax.legend()
    _save(fig, out_dir / f"hist_{result.name}.png")
    names.append(f"hist_{result.name}.png")
    return names


def _fmt(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def console_table(results: Sequence[SetResult], validation: SetResult | None = None) -> str:
    """One row per set (the union, then the validation set, last): counts and the headline metrics."""
    header = ("set", "videos r/f", "crops", "no-crop", "AUROC", "mAP", "EER", "thr@EER", "TPR@.1%", "TPR@1%",
              "TPR@5%", "frameAUROC")  # fmt: skip
    keys = ("video_auroc", "video_map", "video_eer", "video_eer_threshold", "video_tpr_at_fpr_0_1pct",
            "video_tpr_at_fpr_1pct", "video_tpr_at_fpr_5pct", "frame_auroc")  # fmt: skip
    rows = [header]
    shown = [*results, *([validation] if validation is not None else [])]
    for r in shown:
        c = r.counts()
        m = r.metrics or {}
        name = f"{r.name} (validation)" if r is validation else r.name
        rows.append((name, f"{c['videos_scored_real']}/{c['videos_scored_fake']}", str(c["crops"]),
                     str(c["videos_without_crops"]), *(_fmt(m.get(k)) for k in keys)))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    notes = [f"  {r.name}: {r.null_reason}" for r in shown if r.null_reason]
    return "\n".join(lines + (["null metrics:", *notes] if notes else []))
