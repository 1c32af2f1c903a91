"""From crop scores to a video verdict (docs/method.md §6), free of Ray/Redis.

Video p_fake = mean (or median) of crop probabilities, never of logits. Each
face track gets its own score so a verdict can say which person looks fake.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import numpy as np

from clipguard.config import ThresholdConfig
from clipguard.contracts import CropScore, TrackScore, VerdictLabel

Aggregation = Literal["mean", "median"]


def aggregate(p_fake: Sequence[float], method: Aggregation = "mean") -> float:
    """Video score from crop probabilities."""
    if len(p_fake) == 0:
        msg = "cannot aggregate zero crop scores"
        raise ValueError(msg)
    values = np.asarray(p_fake, dtype=np.float64)
    if method == "mean":
        return float(values.mean())
    if method == "median":
        return float(np.median(values))
    msg = f"unknown aggregation {method!r}"
    raise ValueError(msg)


def track_scores(scores: Sequence[CropScore], method: Aggregation = "mean") -> tuple[TrackScore, ...]:
    """One score per face track, ordered by track id."""
    by_track: dict[int, list[CropScore]] = defaultdict(list)
    for s in scores:
        by_track[s.track_id].append(s)
    return tuple(
        TrackScore(
            track_id=tid,
            p_fake=aggregate([s.p_fake for s in items], method),
            n_crops=len(items),
            first_frame=min(s.frame_index for s in items),
            last_frame=max(s.frame_index for s in items),
        )
        for tid, items in sorted(by_track.items())
    )


def most_suspicious(tracks: Sequence[TrackScore]) -> int | None:
    """The track with the highest p_fake (ties: the one with more crops)."""
    if not tracks:
        return None
    return max(tracks, key=lambda t: (t.p_fake, t.n_crops, -t.track_id)).track_id


def label_for(p_fake: float, thresholds: ThresholdConfig) -> VerdictLabel:
    if p_fake >= thresholds.fake:
        return "fake"
    if p_fake <= thresholds.real:
        return "real"
    return "uncertain"
