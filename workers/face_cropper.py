"""Frames in, aligned face crops out: detect -> policy -> align -> track.

This is the plain class the Ray face actor wraps. Per video:

* every sampled frame is run through the detector (batched when the model allows);
* the per-frame face policy of the video score (:class:`clipguard.config.VideoScoreConfig`,
  the definition the stream, ``prepare`` and ``evaluate`` share) keeps the largest face
  (``largest``, the paper's protocol) or up to ``max_faces`` faces by detection score
  (``all``, the moderation default);
* each kept face is aligned to a ``crop_size`` crop (docs/method.md §5) and gets a
  track id from a per-video IoU tracker;
* frames without a face are counted, never an error; a video without any face
  yields zero crops, which the stream reports as a ``no_face`` verdict.

Boxes and landmarks in :class:`FaceCrop` are in the coordinates of the original
(upright) video frame when its size is given, since decoded frames are
downscaled; crops are cut from the decoded frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipguard.config import FacesConfig, VideoScoreConfig
from clipguard.contracts import FaceCrop, FaceStageResult, SampledFrame
from workers.face_alignment import align_face
from workers.face_detector import Detection, FaceDetector
from workers.face_tracker import IoUTracker


def select_faces(detections: Sequence[Detection], policy: str, max_faces: int) -> list[Detection]:
    """Apply the per-frame face policy.

    Args:
        detections: One frame's detections.
        policy: ``largest`` (the single largest box) or ``all``.
        max_faces: Cap for ``all``; the highest-scoring faces are kept.

    Returns:
        The kept detections (``largest``: at most one; ``all``: by decreasing score).

    Raises:
        ValueError: Unknown policy.
    """
    if policy == "largest":
        return [max(detections, key=lambda d: d.area)] if detections else []
    if policy == "all":
        return sorted(detections, key=lambda d: d.score, reverse=True)[:max_faces]
    msg = f"unknown face policy {policy!r}"
    raise ValueError(msg)


class FaceCropper:
    """Turns a video's sampled frames into aligned, tracked face crops.

    Args:
        config: The faces section (detector, crop size, margin, tracking IoU...).
        detector: A ready detector; default ``FaceDetector(config)``.
        selection: The video score whose ``face_policy`` and ``max_faces`` pick the faces of each frame.
    """

    def __init__(
        self, config: FacesConfig, detector: FaceDetector | None = None, *, selection: VideoScoreConfig
    ) -> None:
        self._config = config
        self._selection = selection
        self._detector = detector if detector is not None else FaceDetector(config)

    def crop_video(
        self,
        video_id: str,
        frames: Sequence[SampledFrame],
        source_size: tuple[int, int] | None = None,
    ) -> FaceStageResult:
        """Detect, select, align and track the faces of one video.

        Args:
            video_id: Carried into every crop.
            frames: The video's sampled frames (RGB uint8), any order.
            source_size: (width, height) of the original upright video
                (``VideoInfo.width``, ``VideoInfo.height``) to report boxes and
                landmarks in; None keeps decoded-frame coordinates.

        Returns:
            The crops and the frame/face counts.
        """
        cfg = self._config
        ordered = sorted(frames, key=lambda f: f.index)
        detections = self._detector.detect_batch([f.image for f in ordered])
        tracker = IoUTracker(cfg.track_iou)
        crops: list[FaceCrop] = []
        frames_with_faces = faces_found = 0
        for frame, found in zip(ordered, detections, strict=True):
            faces_found += len(found)
            frames_with_faces += bool(found)
            kept = select_faces(found, self._selection.face_policy, self._selection.max_faces)
            scale = _scale_to_source(frame.image, source_size)
            boxes = [tuple(float(v) for v in np.asarray(d.box) * np.tile(scale, 2)) for d in kept]
            track_ids = tracker.update(boxes)
            for det, box, track_id in zip(kept, boxes, track_ids, strict=True):
                crops.append(
                    FaceCrop(
                        video_id=video_id,
                        frame_index=frame.index,
                        timestamp_s=frame.timestamp_s,
                        track_id=track_id,
                        box=box,
                        det_score=det.score,
                        landmarks=(det.landmarks * scale).astype(np.float32),
                        image=align_face(frame.image, det.landmarks, cfg.crop_size, cfg.margin_scale),
                    )
                )
        return FaceStageResult(
            crops=tuple(crops),
            frames_sampled=len(ordered),
            frames_with_faces=frames_with_faces,
            faces_found=faces_found,
        )


def _scale_to_source(image: np.ndarray, source_size: tuple[int, int] | None) -> np.ndarray:
    """(sx, sy) from decoded-frame pixels to original-video pixels."""
    if source_size is None:
        return np.ones(2)
    height, width = image.shape[:2]
    return np.array([source_size[0] / width, source_size[1] / height])
