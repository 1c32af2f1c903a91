"""``clipguard evaluate``: score labelled sets with a checkpoint (or the base model) on Ray, then metrics.

The sets come from :mod:`training.eval_sets`. Crops are read on the driver and
scored in batches by a few Ray actors, each holding one
:class:`~clipguard.model.CropScorer` built exactly as the stream's scorer builds it
(:meth:`~clipguard.model.DetectorConfig.for_stream`). A video's score is the
stream's (:class:`clipguard.config.VideoScoreConfig`,
:func:`clipguard.aggregation.video_score`).

Videos without crops (no face found, undecodable) cannot be scored; they are
counted and listed per set, never silently dropped. A set with one class only
gets null metrics and a reason; the metric functions themselves still raise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.util import ActorPool

from clipguard.config import ModelConfig, VideoScoreConfig
from clipguard.errors import ClipguardError, ConfigError
from clipguard.logging_setup import quiet_third_party
from clipguard.model import CropScorer, DetectorConfig
from training.crop_dataset import load_crop
from training.crop_manifest import CropRow
from training.eval_metrics import VideoScores, detection_metrics, video_scores
from training.eval_sets import ALL, LoadedSet
from training.progress import Progress

logger = logging.getLogger(__name__)


# --- scoring on Ray --------------------------------------------------------------------------
class BatchScorer:
    """What each scoring actor holds: the stream's detector, built once from the model section.

    A refused model (``CheckpointError``, ``ModelError``) is kept and raised by every
    call instead of failing ``__init__``: Ray reports a failed constructor only as
    text (``ActorDiedError``), a failed call as the error itself, which the driver re-raises.
    """

    def __init__(self, model: ModelConfig, batch_size: int) -> None:
        quiet_third_party()  # format and level come from the job's LoggingConfig (ray.init on the driver)
        self.scorer: CropScorer | None = None
        self.error: ClipguardError | None = None
        try:
            self.scorer = CropScorer.from_config(DetectorConfig.for_stream(model, batch_size), model.checkpoint)
        except ClipguardError as exc:
            self.error = exc

    def _ready(self) -> CropScorer:
        if self.scorer is None:
            raise self.error
        return self.scorer

    def version(self) -> str:
        """The model version verdicts would record."""
        return self._ready().version

    def score(self, crops: np.ndarray) -> np.ndarray:
        """p_fake of a (N, H, W, 3) uint8 batch."""
        return self._ready().score(crops)


def start_scorers(model: ModelConfig, workers: int, batch_size: int, cpus: float, gpus: float) -> list[Any]:
    """``workers`` scoring actors; waits until each has loaded the model (errors surface here)."""
    actor_cls = ray.remote(BatchScorer).options(num_cpus=cpus, num_gpus=gpus)
    actors = [actor_cls.remote(model, batch_size) for _ in range(workers)]
    try:
        versions = set(ray.get([a.version.remote() for a in actors]))
    except ray.exceptions.RayError as exc:
        for actor in actors:
            ray.kill(actor)
        cause = getattr(exc, "cause", None)  # RayTaskError: the actor's own exception
        if isinstance(cause, ClipguardError):  # e.g. CheckpointError: raise it as itself, not a Ray trace
            raise cause from None
        msg = f"a scoring actor failed to start: {exc}"
        raise ConfigError(msg) from exc
    if len(versions) != 1:
        msg = f"scoring actors loaded different models: {sorted(versions)}"
        raise ConfigError(msg)
    return actors


def _batches(rows: Sequence[CropRow], root: Path, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), size):
        yield np.stack([load_crop(root / r.crop_path) for r in rows[start : start + size]])


def score_rows(
    actors: Sequence[Any], rows: Sequence[CropRow], root: Path, batch_size: int, progress: Progress | None = None
) -> np.ndarray:
    """p_fake for every crop row, in row order; crops are read here and sent to the actors in batches."""
    if not rows:
        return np.empty(0, dtype=np.float32)
    pool = ActorPool(list(actors))
    parts = []
    if progress is not None:
        progress.start(len(rows))
    try:
        for part in pool.map(lambda actor, batch: actor.score.remote(batch), _batches(rows, root, batch_size)):
            parts.append(part)
            if progress is not None:
                progress.advance(len(part))
    finally:
        if progress is not None:
            progress.close()
    return np.concatenate(parts).astype(np.float64)


# --- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetResult:
    """Scores and metrics of one test set (or of the union)."""

    name: str
    videos: VideoScores
    crop_video_ids: tuple[str, ...]
    crop_labels: np.ndarray
    crop_scores: np.ndarray
    crop_track_ids: np.ndarray
    without_crops: tuple[dict[str, Any], ...]
    metrics: dict[str, float] | None
    null_reason: str | None
    info: dict[str, Any] = field(default_factory=dict)  # path, kind, crops_csv, split

    def counts(self) -> dict[str, int]:
        """Videos (scored, by class), crops and videos without crops."""
        y = self.videos.labels
        missing = [v["label"] for v in self.without_crops]
        return {
            "videos": len(y) + len(missing),
            "videos_scored": len(y),
            "videos_real": int((y == 0).sum()) + missing.count(0),
            "videos_fake": int((y == 1).sum()) + missing.count(1),
            "videos_scored_real": int((y == 0).sum()),
            "videos_scored_fake": int((y == 1).sum()),
            "crops": len(self.crop_scores),
            "videos_without_crops": len(self.without_crops),
        }


def set_result(
    name: str,
    video_ids: Sequence[str],
    labels: Sequence[int],
    crop_scores: np.ndarray,
    without_crops: Sequence[dict[str, Any]],
    video_score: VideoScoreConfig,
    info: dict[str, Any] | None = None,
    track_ids: Sequence[int] | None = None,
) -> SetResult:
    """Video scores and :func:`training.eval_metrics.detection_metrics`, or null metrics with the reason.

    ``track_ids`` (one per crop) are needed for ``video_score.pooling == 'tracks'``; None means one track per video.
    """
    tracks = np.zeros(len(video_ids), dtype=np.int64) if track_ids is None else np.asarray(track_ids, dtype=np.int64)
    videos = video_scores(video_ids, labels, crop_scores, video_score, track_ids=tracks)
    y = videos.labels
    n_real, n_fake = int((y == 0).sum()), int((y == 1).sum())
    metrics, reason = None, None
    if n_real == 0 or n_fake == 0:
        only = "no scored videos" if len(y) == 0 else f"only {'fake' if n_real == 0 else 'real'} videos ({len(y)})"
        reason = f"{only}: AUROC, mAP, EER and TPR@FPR need both real and fake videos"
    else:
        metrics = asdict(detection_metrics(list(video_ids), list(labels), crop_scores, video_score, track_ids=tracks))
    return SetResult(name, videos, tuple(video_ids), np.asarray(labels, dtype=np.int64),
                     np.asarray(crop_scores, dtype=np.float64), tracks, tuple(without_crops), metrics, reason,
                     dict(info or {}))  # fmt: skip


def evaluate_set(
    loaded: LoadedSet,
    actors: Sequence[Any],
    batch_size: int,
    video_score: VideoScoreConfig,
    progress: Progress | None = None,
) -> SetResult:
    """Score one loaded set and compute its metrics."""
    scores = score_rows(actors, loaded.rows, loaded.crops_csv.parent, batch_size, progress)
    info = {"path": str(loaded.path), "kind": loaded.kind, "crops_csv": str(loaded.crops_csv), "split": loaded.split}
    return set_result(loaded.name, [r.video_id for r in loaded.rows], [r.label for r in loaded.rows], scores,
                      loaded.without_crops, video_score, info, [r.track_id for r in loaded.rows])  # fmt: skip


def union_result(results: Sequence[SetResult], video_score: VideoScoreConfig) -> SetResult:
    """The ``all`` row: every set's crops together, video ids prefixed by their set's name."""
    ids = [f"{r.name}/{v}" for r in results for v in r.crop_video_ids]
    labels = np.concatenate([r.crop_labels for r in results]) if results else np.empty(0, dtype=np.int64)
    scores = np.concatenate([r.crop_scores for r in results]) if results else np.empty(0)
    tracks = np.concatenate([r.crop_track_ids for r in results]) if results else np.empty(0, dtype=np.int64)
    without = [{**v, "video_id": f"{r.name}/{v['video_id']}"} for r in results for v in r.without_crops]
    return set_result(ALL, ids, labels.tolist(), scores, without, video_score, {"sets": [r.name for r in results]},
                      tracks.tolist())  # fmt: skip
