"""Detection metrics (docs/method.md §6): pure functions of labels and scores, shared by training and evaluation.

Labels: 1 = fake (the positive class), 0 = real. Scores: p_fake. A video's
score is made from its crops' p_fake by :func:`clipguard.aggregation.video_score`,
the function the stream uses: under a :class:`clipguard.config.VideoScoreConfig`
(what ``evaluate`` and calibration use), or, given just ``mean``/``median``, the
aggregate of all its crops (the paper's score, what training selects checkpoints on).

Every ranking metric needs both classes; with one class missing it raises
``ValueError`` instead of returning a plausible number (no silent 0.5 or 1.0).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from clipguard.aggregation import Aggregation, video_score
from clipguard.config import VideoScoreConfig

TPR_AT_FPR = (0.001, 0.01, 0.05)  # 0.1 %, 1 %, 5 %


def checked_labels_scores(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, purpose: str = "metric"
) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int {0,1} and scores as finite float64, same length, both classes present."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        msg = f"labels and scores must be 1-D of one length, got shapes {y.shape} and {s.shape}"
        raise ValueError(msg)
    if not np.isin(y, (0, 1)).all():
        msg = f"labels must be 0 (real) or 1 (fake), got values {sorted(set(y.tolist()))[:5]}"
        raise ValueError(msg)
    if not np.isfinite(s).all():
        msg = f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite"
        raise ValueError(msg)
    y = y.astype(np.int64)
    counts = np.bincount(y, minlength=2)
    if counts.min() == 0:
        missing = "real (0)" if counts[0] == 0 else "fake (1)"
        msg = f"{purpose} needs both classes; no {missing} sample among {len(y)}"
        raise ValueError(msg)
    return y, s


def auroc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve of p_fake (ties count one half)."""
    y, s = checked_labels_scores(labels, scores)
    return float(roc_auc_score(y, s))


def macro_map(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Mean of the average precision of 'fake' (scored by p_fake) and of 'real' (scored by 1 - p_fake)."""
    y, s = checked_labels_scores(labels, scores)
    ap_fake = average_precision_score(y, s)
    ap_real = average_precision_score(1 - y, 1.0 - s)
    return float((ap_fake + ap_real) / 2.0)


def _roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # All thresholds kept: the interpolations below then run between true operating points.
    return roc_curve(y, s, drop_intermediate=False)


def eer(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Equal error rate and its threshold, where 1 - TPR = FPR, interpolated linearly on the ROC.

    The ROC runs from (FPR 0, FNR 1) to (FPR 1, FNR 0), so FNR - FPR goes from 1
    to -1 along it; the EER is where the segment crossing zero meets FNR = FPR,
    and the threshold is interpolated at the same position on that segment. When
    the crossing lies on the first segment, whose start is sklearn's "nothing is
    positive" point (threshold +inf), the threshold of the segment's end is returned.

    Returns:
        (eer, threshold): the rate in [0, 1] and the p_fake threshold at which it holds.
    """
    y, s = checked_labels_scores(labels, scores)
    fpr, tpr, thresholds = _roc(y, s)
    gap = (1.0 - tpr) - fpr
    i = int(np.argmax(gap <= 0))  # first ROC point with FNR <= FPR; gap[-1] = -1 so one exists
    if gap[i] == 0 or i == 0:
        return float(fpr[i]), float(thresholds[i])
    w = gap[i - 1] / (gap[i - 1] - gap[i])  # fraction of the segment i-1 -> i where the gap is 0
    rate = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    if not np.isfinite(thresholds[i - 1]):
        return float(rate), float(thresholds[i])
    threshold = thresholds[i - 1] + w * (thresholds[i] - thresholds[i - 1])
    return float(rate), float(threshold)


def tpr_at_fpr(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, target_fpr: float) -> float:
    """TPR at a given FPR, interpolated linearly on the ROC.

    At an FPR the ROC reaches exactly (a vertical segment), the highest TPR
    there is returned: the best operating point with that false-positive rate.
    """
    if not 0.0 <= target_fpr <= 1.0:
        msg = f"target_fpr must be within [0, 1], got {target_fpr}"
        raise ValueError(msg)
    y, s = checked_labels_scores(labels, scores)
    fpr, tpr, _ = _roc(y, s)
    j = int(np.searchsorted(fpr, target_fpr, side="right")) - 1  # last point with fpr <= target
    if fpr[j] == target_fpr or j == len(fpr) - 1:
        return float(tpr[j])
    w = (target_fpr - fpr[j]) / (fpr[j + 1] - fpr[j])
    return float(tpr[j] + w * (tpr[j + 1] - tpr[j]))


@dataclass(frozen=True)
class VideoScores:
    """Per-video scores aggregated from crops, in first-seen video order."""

    video_ids: tuple[str, ...]
    labels: np.ndarray  # (V,) int
    scores: np.ndarray  # (V,) float64 p_fake
    n_crops: np.ndarray  # (V,) int


def _definition(method: Aggregation | VideoScoreConfig) -> VideoScoreConfig:
    """A bare aggregation means the paper's pooling: every crop of the video together."""
    if isinstance(method, VideoScoreConfig):
        return method
    return VideoScoreConfig(pooling="crops", aggregation=method)


def video_scores(
    video_ids: Iterable[str],
    labels: Iterable[int],
    crop_scores: Iterable[float],
    method: Aggregation | VideoScoreConfig = "mean",
    *,
    track_ids: Iterable[int] | None = None,
) -> VideoScores:
    """Each video's p_fake from its crops (the mean of all of them by default; see the module docstring).

    Args:
        video_ids, labels, crop_scores: one entry per crop.
        method: ``mean``/``median`` over all crops, or a whole video-score definition.
        track_ids: each crop's face track (needed for ``pooling='tracks'``; None: one track per video).

    Raises:
        ValueError: a video whose crops carry different labels, or mismatched lengths.
    """
    definition = _definition(method)
    scores_by: dict[str, list[float]] = defaultdict(list)
    tracks_by: dict[str, list[int]] = defaultdict(list)
    label_of: dict[str, int] = {}
    ids_list, labels_list, scores_list = list(video_ids), list(labels), list(crop_scores)
    tracks = [0] * len(ids_list) if track_ids is None else list(track_ids)
    for video_id, label, score, track in zip(ids_list, labels_list, scores_list, tracks, strict=True):
        if label_of.setdefault(video_id, int(label)) != int(label):
            msg = f"video {video_id!r} has crops labelled both {label_of[video_id]} and {int(label)}"
            raise ValueError(msg)
        scores_by[video_id].append(float(score))
        tracks_by[video_id].append(int(track))
    ids = tuple(scores_by)
    return VideoScores(
        video_ids=ids,
        labels=np.array([label_of[v] for v in ids], dtype=np.int64),
        scores=np.array([video_score(tracks_by[v], scores_by[v], definition)[0] for v in ids], dtype=np.float64),
        n_crops=np.array([len(scores_by[v]) for v in ids], dtype=np.int64),
    )


@dataclass(frozen=True)
class DetectionMetrics:
    """The numbers a validation or evaluation run reports."""

    video_auroc: float
    video_map: float  # checkpoint-selection metric
    video_eer: float
    video_eer_threshold: float
    video_tpr_at_fpr_0_1pct: float
    video_tpr_at_fpr_1pct: float
    video_tpr_at_fpr_5pct: float
    frame_auroc: float
    n_videos: int
    n_real_videos: int
    n_fake_videos: int
    n_crops: int

    def to_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{prefix + name: value}`` for logs and ``ray.train.report``."""
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def detection_metrics(
    video_ids: Sequence[str],
    labels: Sequence[int],
    crop_scores: Sequence[float],
    method: Aggregation | VideoScoreConfig = "mean",
    *,
    track_ids: Sequence[int] | None = None,
) -> DetectionMetrics:
    """Video-level and frame-level metrics from per-crop labels and p_fake (video scores as :func:`video_scores`).

    Raises:
        ValueError: either class missing (at video level or crop level).
    """
    videos = video_scores(video_ids, labels, crop_scores, method, track_ids=track_ids)
    y, s = videos.labels, videos.scores
    rate, threshold = eer(y, s)
    tprs = [tpr_at_fpr(y, s, target) for target in TPR_AT_FPR]
    return DetectionMetrics(
        video_auroc=auroc(y, s),
        video_map=macro_map(y, s),
        video_eer=rate,
        video_eer_threshold=threshold,
        video_tpr_at_fpr_0_1pct=tprs[0],
        video_tpr_at_fpr_1pct=tprs[1],
        video_tpr_at_fpr_5pct=tprs[2],
        frame_auroc=auroc(labels, crop_scores),
        n_videos=len(videos.video_ids),
        n_real_videos=int((y == 0).sum()),
        n_fake_videos=int((y == 1).sum()),
        n_crops=int(videos.n_crops.sum()),
    )
