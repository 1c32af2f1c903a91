"""One video's path through the stages, as plain async code (no Ray, Kafka or Redis).

``process_video`` turns a :class:`VideoJob` into exactly one :class:`Verdict`:
``done`` with scores, ``no_face``, or ``error`` with a kind and message. It
never raises for a bad video; the stage callables are injected, so the Ray
decoder actor passes remote calls and tests pass local functions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from clipguard.aggregation import label_for, most_suspicious, track_scores, video_score
from clipguard.config import ClipguardConfig, describe_video_score
from clipguard.contracts import CropScore, FaceStageResult, SampledFrame, Verdict, VideoAnalysis, VideoJob
from clipguard.errors import ClipguardError, DecodeTimeoutError, WorkerLostError

log = logging.getLogger(__name__)


@dataclass
class Stages:
    """The stage calls; each may raise a ClipguardError for the video.

    Either the three CPU-path stages (decode, faces, score) or, on a GPU node,
    ``analyse``: the fused GPU stage that takes the job and returns its crop scores.
    """

    # -> (frames, (width, height) of the upright source video, for reporting boxes)
    decode: Callable[[VideoJob], Awaitable[tuple[list[SampledFrame], tuple[int, int] | None]]] | None = None
    faces: Callable[[str, list[SampledFrame], tuple[int, int] | None], Awaitable[FaceStageResult]] | None = None
    score: Callable[[np.ndarray], Awaitable[np.ndarray]] | None = None
    # exception types that mean "a worker died" (e.g. ray.exceptions.RayActorError)
    worker_errors: tuple[type[BaseException], ...] = ()
    analyse: Callable[[VideoJob], Awaitable[VideoAnalysis]] | None = None

    def __post_init__(self) -> None:
        split = (self.decode, self.faces, self.score)
        if (self.analyse is None) == (None in split):
            msg = "Stages needs either decode, faces and score, or analyse (the fused GPU stage), not both"
            raise ValueError(msg)


def _log_stage(job: VideoJob, stage: str, seconds: float, **counts: int) -> None:
    log.debug("%s done in %.3fs", stage, seconds,
              extra={"video_id": job.video_id, "stage": stage, "source": str(job.source), "seconds": round(seconds, 3),
                     **counts})  # fmt: skip


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def error_verdict(job: VideoJob, model_version: str, exc: ClipguardError, **extra: Any) -> Verdict:
    return Verdict(
        video_id=job.video_id,
        status="error",
        model_version=model_version,
        error_kind=exc.kind,
        error_message=exc.message,
        source=job.source,
        metadata=job.metadata,
        completed_at=now_iso(),
        **extra,
    )


def _verdict(job: VideoJob, cfg: ClipguardConfig, scores: tuple[CropScore, ...], common: dict[str, Any]) -> Verdict:
    """``done`` with the scores aggregated, or ``no_face`` when there are none."""
    if not scores:
        return Verdict(status="no_face", completed_at=now_iso(), **common)
    definition = cfg.video_score  # the one the thresholds were calibrated for (clipguard/thresholds.py checks)
    video_p, top = video_score([s.track_id for s in scores], [s.p_fake for s in scores], definition)
    tracks = track_scores(scores, definition.aggregation)
    thresholds = cfg.thresholds
    return Verdict(
        status="done",
        p_fake=video_p,
        label=label_for(video_p, thresholds),
        video_score=describe_video_score(definition.definition(cfg.sampling)),
        thresholds_fake=thresholds.fake,
        thresholds_real=thresholds.real,
        thresholds_sha256=thresholds.file_sha256,
        tracks=tracks,
        top_track=top if top is not None else most_suspicious(tracks),
        crop_scores=scores,
        completed_at=now_iso(),
        **common,
    )


def _common(job: VideoJob, model_version: str, received_at: str, timings: dict[str, float],
            counts: FaceStageResult | VideoAnalysis) -> dict[str, Any]:  # fmt: skip
    return {
        "video_id": job.video_id,
        "model_version": model_version,
        "frames_sampled": counts.frames_sampled,
        "frames_with_faces": counts.frames_with_faces,
        "faces_found": counts.faces_found,
        "source": job.source,
        "metadata": job.metadata,
        "received_at": received_at,
        "timings_s": timings,
    }


async def _run_fused(job: VideoJob, stages: Stages, cfg: ClipguardConfig, model_version: str, received_at: str,
                     timings: dict[str, float]) -> Verdict:  # fmt: skip
    t0 = time.perf_counter()
    analysis = await stages.analyse(job)
    timings.update(analysis.timings_s)
    timings["gpu_stage"] = time.perf_counter() - t0
    _log_stage(job, "gpu_stage", timings["gpu_stage"], crops=len(analysis.crop_scores),
               faces_found=analysis.faces_found)  # fmt: skip
    return _verdict(job, cfg, analysis.crop_scores, _common(job, model_version, received_at, timings, analysis))


async def _run_stages(job: VideoJob, stages: Stages, cfg: ClipguardConfig, model_version: str, received_at: str,
                      timings: dict[str, float]) -> Verdict:  # fmt: skip
    if stages.analyse is not None:
        return await _run_fused(job, stages, cfg, model_version, received_at, timings)
    t0 = time.perf_counter()
    frames, source_size = await stages.decode(job)
    t1 = time.perf_counter()
    timings["decode"] = t1 - t0
    _log_stage(job, "decode", timings["decode"], frames=len(frames))
    faces = await stages.faces(job.video_id, frames, source_size)
    del frames  # the frames are not needed past the face stage
    t2 = time.perf_counter()
    timings["faces"] = t2 - t1
    _log_stage(job, "faces", timings["faces"], crops=len(faces.crops), faces_found=faces.faces_found)
    common = _common(job, model_version, received_at, timings, faces)
    if not faces.crops:
        return _verdict(job, cfg, (), common)
    p_fake = await stages.score(np.stack([c.image for c in faces.crops]))
    timings["detect"] = time.perf_counter() - t2
    _log_stage(job, "detect", timings["detect"], crops=len(p_fake))
    scores = tuple(
        CropScore(job.video_id, c.frame_index, c.track_id, c.box, c.det_score, float(p))
        for c, p in zip(faces.crops, p_fake, strict=True)
    )
    return _verdict(job, cfg, scores, common)


async def process_video(job: VideoJob, stages: Stages, cfg: ClipguardConfig, model_version: str,
                        attempts: int = 3, backoff_s: tuple[float, ...] = (1.0, 3.0)) -> Verdict:  # fmt: skip
    """Run one job to a verdict. A dead worker is retried ``attempts`` times in all.

    The pauses between attempts let Ray restart the actor, and keep a decoder whose
    own driver just died (it is killed a moment later) from storing a `worker_lost`
    verdict for a video the next run will judge properly.
    """
    received_at = now_iso()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    for attempt in range(1, attempts + 1):
        try:
            verdict = await asyncio.wait_for(
                _run_stages(job, stages, cfg, model_version, received_at, timings), cfg.stream.video_timeout_s
            )
            timings["total"] = time.perf_counter() - start
            return verdict
        except ClipguardError as exc:
            # Ray re-raises remote errors as RayTaskError subclasses of the cause's type;
            # the original (with its message) is on .cause.
            exc = getattr(exc, "cause", None) if isinstance(getattr(exc, "cause", None), ClipguardError) else exc
            return error_verdict(job, model_version, exc, received_at=received_at, timings_s=timings)
        except TimeoutError:
            exc = DecodeTimeoutError(f"video not finished within {cfg.stream.video_timeout_s:.0f}s")
            return error_verdict(job, model_version, exc, received_at=received_at, timings_s=timings)
        except stages.worker_errors as exc:
            log.warning("video %s (%s): worker lost on attempt %d/%d: %s", job.video_id, job.source, attempt,
                        attempts, exc)  # fmt: skip
            if attempt == attempts:
                lost = WorkerLostError(f"a stage worker died {attempts} times: {type(exc).__name__}")
                return error_verdict(job, model_version, lost, received_at=received_at, timings_s=timings)
            await asyncio.sleep(backoff_s[min(attempt - 1, len(backoff_s) - 1)] if backoff_s else 0)
    msg = "unreachable: the last attempt returns"
    raise AssertionError(msg)
