"""Data contracts that travel between stages, written down once.

Kafka message -> :class:`VideoJob` -> :class:`SampledFrame` (decoder) ->
:class:`FaceCrop` (faces, in a :class:`FaceStageResult`) -> :class:`CropScore` (detector) -> :class:`Verdict` (Redis).
On a GPU node one fused stage turns a :class:`VideoJob` into a :class:`VideoAnalysis`
(frames and crops never leave the device; only these host values do).

All are frozen dataclasses of plain values and numpy arrays, so they pickle
cheaply through Ray's object store and carry the ids every log line needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

VerdictStatus = Literal["done", "no_face", "error"]
VerdictLabel = Literal["fake", "real", "uncertain"]


@dataclass(frozen=True)
class SourceRef:
    """Where a job came from in Kafka; every log line about a video carries it."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class VideoJob:
    """One parsed Kafka message: which video to judge and what to copy back.

    ``uri`` is None when the message carried only an ID: the ID is then a path
    relative to the configured video root.
    """

    video_id: str
    uri: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: SourceRef | None = None


@dataclass(frozen=True)
class VideoInfo:
    """What ffprobe says about a video, after rotation is applied to the size."""

    duration_s: float
    n_frames: int
    fps: float
    width: int
    height: int
    rotation: int = 0
    codec: str = ""


@dataclass(frozen=True)
class SampledFrame:
    """A decoded frame: RGB uint8 (H, W, 3), already downscaled to the max side."""

    index: int
    timestamp_s: float
    image: np.ndarray


@dataclass(frozen=True)
class FaceCrop:
    """An aligned face crop record (docs/method.md §5): 256x256x3 uint8 RGB.

    ``box`` is (x1, y1, x2, y2) in the coordinates of the original video frame;
    ``landmarks`` are the 5 detector keypoints there (eyes, nose, mouth corners).
    """

    video_id: str
    frame_index: int
    timestamp_s: float
    track_id: int
    box: tuple[float, float, float, float]
    det_score: float
    landmarks: np.ndarray
    image: np.ndarray


@dataclass(frozen=True)
class FaceStageResult:
    """The face stage's output for one video: its crops and the frame/face counts.

    Attributes:
        crops: Aligned crops in frame order (within a frame: by policy order).
        frames_sampled: Frames given to the face stage.
        frames_with_faces: Frames where the detector found at least one face.
        faces_found: Faces detected over all frames, before the per-frame policy.
    """

    crops: tuple[FaceCrop, ...]
    frames_sampled: int
    frames_with_faces: int
    faces_found: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "crops", tuple(self.crops))  # frozen: a list passed in becomes a tuple

    @property
    def n_tracks(self) -> int:
        """Distinct face tracks among the crops."""
        return len({c.track_id for c in self.crops})


@dataclass(frozen=True)
class CropScore:
    """The detector's output for one crop; the crop pixels are not carried on."""

    video_id: str
    frame_index: int
    track_id: int
    box: tuple[float, float, float, float]
    det_score: float
    p_fake: float


@dataclass(frozen=True)
class VideoAnalysis:
    """The fused GPU stage's output for one video (decode, faces, alignment and scores on one device).

    Attributes:
        crop_scores: One score per crop, in frame order (within a frame: by policy order).
        frames_sampled: Frames decoded.
        frames_with_faces: Frames where the detector found at least one face.
        faces_found: Faces detected over all frames, before the per-frame policy.
        timings_s: Seconds per stage inside the fused stage (``probe``, ``decode``, ``faces``, ``detect``).
        decoder: ``nvdec`` or ``ffmpeg``: what decoded this video.
    """

    crop_scores: tuple[CropScore, ...]
    frames_sampled: int
    frames_with_faces: int
    faces_found: int
    timings_s: dict[str, float] = field(default_factory=dict)
    decoder: str = ""


@dataclass(frozen=True)
class TrackScore:
    """Per-person summary: one face track across frames."""

    track_id: int
    p_fake: float
    n_crops: int
    first_frame: int
    last_frame: int


@dataclass(frozen=True)
class Verdict:
    """What Redis stores for one video (key layout in ``pipeline/verdict_keys.py``)."""

    video_id: str
    status: VerdictStatus
    model_version: str
    p_fake: float | None = None
    label: VerdictLabel | None = None
    # What produced p_fake and label: the video-score definition (clipguard.config.describe_video_score),
    # the thresholds applied, and the SHA-256 of the calibrated thresholds file they came from (None: no file).
    video_score: str = ""
    thresholds_fake: float | None = None
    thresholds_real: float | None = None
    thresholds_sha256: str | None = None
    tracks: tuple[TrackScore, ...] = ()
    top_track: int | None = None
    frames_sampled: int = 0
    frames_with_faces: int = 0
    faces_found: int = 0
    crop_scores: tuple[CropScore, ...] = ()
    timings_s: dict[str, float] = field(default_factory=dict)
    error_kind: str | None = None
    error_message: str | None = None
    source: SourceRef | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    received_at: str | None = None
    completed_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (nested dataclasses become dicts)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class StageLoad:
    """One stage actor's work so far, cumulative since it started (the autoscaler differences two samples).

    ``busy_s`` counts the seconds the actor was working on at least one video (a decoder
    decoding, a face actor cropping, a detector running its model), so that
    ``completed / busy_s`` is what one actor does while busy, whatever its idle time.
    """

    busy_s: float = 0.0
    completed: int = 0  # videos this actor finished its stage for
    in_flight: int = 0  # videos it is working on now
