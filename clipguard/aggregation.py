"""From crop scores to a video verdict (docs/method.md §6), free of Ray/Redis.

Crop probabilities (never logits) are aggregated by the mean (or median). How the
video's p_fake is made from them is :class:`clipguard.config.VideoScoreConfig`, the
one definition prepare, evaluate, calibration and the stream share:

* ``pooling=crops``: every crop of the video together (the paper's protocol);
* ``pooling=tracks``: each face track on its own, the video being its most
  suspicious track among those with at least ``min_track_crops`` crops (the
  longest tracks when none is that long), so one swapped face among several real
  ones is neither averaged away nor ignored.

Each face track keeps its own score either way, so a verdict says which person looks fake.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import numpy as np

from clipguard.config import ThresholdConfig, VideoScoreConfig
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


def counted_tracks(tracks: Sequence[TrackScore], min_track_crops: int) -> tuple[TrackScore, ...]:
    """The tracks ``pooling=tracks`` chooses among: those with >= ``min_track_crops`` crops, else the longest."""
    if not tracks:
        return ()
    enough = tuple(t for t in tracks if t.n_crops >= min_track_crops)
    if enough:
        return enough
    longest = max(t.n_crops for t in tracks)
    return tuple(t for t in tracks if t.n_crops == longest)


def most_suspicious(tracks: Sequence[TrackScore]) -> int | None:
    """The track with the highest p_fake (ties: the one with more crops, then the lower id)."""
    if not tracks:
        return None
    return max(tracks, key=lambda t: (t.p_fake, t.n_crops, -t.track_id)).track_id


def video_score(track_ids: Sequence[int], p_fake: Sequence[float], cfg: VideoScoreConfig) -> tuple[float, int | None]:
    """A video's p_fake under ``cfg`` from its crops' track ids and p_fake, and the track that gave it.

    Returns:
        (p_fake, track id) for ``pooling=tracks``; (p_fake, None) for ``pooling=crops``.

    Raises:
        ValueError: no crops, or track ids and scores of different lengths.
    """
    if len(track_ids) != len(p_fake):
        msg = f"{len(track_ids)} track ids for {len(p_fake)} crop scores"
        raise ValueError(msg)
    if cfg.pooling == "crops":
        return aggregate(p_fake, cfg.aggregation), None
    by_track: dict[int, list[float]] = defaultdict(list)
    for track_id, p in zip(track_ids, p_fake, strict=True):
        by_track[int(track_id)].append(float(p))
    tracks = [TrackScore(tid, aggregate(ps, cfg.aggregation), len(ps), 0, 0) for tid, ps in sorted(by_track.items())]
    if not tracks:
        msg = "cannot score a video with zero crops"
        raise ValueError(msg)
    top = most_suspicious(counted_tracks(tracks, cfg.min_track_crops))
    return next(t.p_fake for t in tracks if t.track_id == top), top


def label_for(p_fake: float, thresholds: ThresholdConfig) -> VerdictLabel:
    """``fake`` at or above ``thresholds.fake``, ``real`` at or below ``thresholds.real``, else ``uncertain``."""
    if p_fake >= thresholds.fake:
        return "fake"
    if p_fake <= thresholds.real:
        return "real"
    return "uncertain"
