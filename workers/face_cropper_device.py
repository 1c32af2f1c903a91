"""A video's device frames in, aligned face crops out, on the device: detect -> policy -> track -> one warp.

The device twin of :class:`workers.face_cropper.FaceCropper`, with the same
per-frame policy (:func:`~workers.face_cropper.select_faces`), the same IoU
tracker and the same box/landmark reporting in source-video pixels. The frames
stay on the device: SCRFD runs batched over them
(:class:`~workers.face_detector_torch.TorchFaceDetector`), only the kept
detections' boxes, scores and landmarks come to the host (one copy per video)
for the policy and the tracker, and every crop is cut by one batched warp
(:mod:`workers.face_alignment_torch`). The crops stay on the device for the detector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from clipguard.config import FacesConfig, VideoScoreConfig
from workers.face_alignment_torch import similarity_matrices, warp_crops
from workers.face_cropper import select_faces
from workers.face_detector import Detection
from workers.face_detector_torch import TorchFaceDetector
from workers.face_tracker import IoUTracker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropPlacement:
    """Where one device crop came from (a :class:`~clipguard.contracts.FaceCrop` without its pixels)."""

    frame_index: int
    timestamp_s: float
    track_id: int
    box: tuple[float, float, float, float]
    det_score: float


@dataclass(frozen=True)
class DeviceFaceResult:
    """The device face stage's output for one video.

    Attributes:
        crops: uint8 (N, 3, crop_size, crop_size) on the device, aligned (docs/method.md §5).
        placements: One per crop, same order.
        frames_sampled, frames_with_faces, faces_found: As in :class:`~clipguard.contracts.FaceStageResult`.
    """

    crops: torch.Tensor
    placements: tuple[CropPlacement, ...]
    frames_sampled: int
    frames_with_faces: int
    faces_found: int


class DeviceFaceCropper:
    """Detect, select, track and align the faces of one video's device frames.

    Args:
        config: The faces section (crop size, margin, tracking IoU...).
        detector: The torch SCRFD on the frames' device.
        selection: The video score whose ``face_policy`` and ``max_faces`` pick the faces of each frame.
    """

    def __init__(self, config: FacesConfig, detector: TorchFaceDetector, *, selection: VideoScoreConfig) -> None:
        self._config = config
        self._selection = selection
        self.detector = detector

    def crop_video(
        self,
        video_id: str,
        frames: torch.Tensor,
        indices: tuple[int, ...],
        timestamps_s: tuple[float, ...],
        source_size: tuple[int, int] | None = None,
    ) -> DeviceFaceResult:
        """Faces of one video's sampled frames.

        Args:
            video_id: For log lines.
            frames: uint8 (F, H, W, 3) RGB frames in index order, on the detector's device.
            indices: Frame index of each frame.
            timestamps_s: Timestamp of each frame.
            source_size: (width, height) of the upright source video, to report boxes in; None keeps frame pixels.

        Returns:
            The crops (on the device) and where each came from.
        """
        cfg = self._config
        if frames.is_cuda:
            # Decoded on another thread's stream: keep the memory from that stream's reuse until our kernels ran.
            frames.record_stream(torch.cuda.current_stream(frames.device))
        found = _to_host(self.detector.detect_frames(frames))
        height, width = frames.shape[1:3]
        scale = np.ones(2) if source_size is None else np.array([source_size[0] / width, source_size[1] / height])
        tracker = IoUTracker(cfg.track_iou)
        placements: list[CropPlacement] = []
        crop_frames: list[int] = []
        crop_landmarks: list[np.ndarray] = []
        frames_with_faces = faces_found = 0
        for pos, detections in enumerate(found):
            faces_found += len(detections)
            frames_with_faces += bool(detections)
            kept = select_faces(detections, self._selection.face_policy, self._selection.max_faces)
            boxes = [tuple(float(v) for v in np.asarray(d.box) * np.tile(scale, 2)) for d in kept]
            for det, box, track_id in zip(kept, boxes, tracker.update(boxes), strict=True):
                placements.append(CropPlacement(indices[pos], timestamps_s[pos], track_id, box, det.score))
                crop_frames.append(pos)
                crop_landmarks.append(det.landmarks)
        if not placements:
            crops = torch.empty((0, 3, cfg.crop_size, cfg.crop_size), dtype=torch.uint8, device=frames.device)
        else:
            lms = torch.as_tensor(np.stack(crop_landmarks), device=frames.device)
            matrices = similarity_matrices(lms, cfg.crop_size, cfg.margin_scale)
            usable = torch.isfinite(matrices).flatten(1).all(dim=1).cpu().numpy()
            if not usable.all():
                # SCRFD never puts 5 landmarks on one point; if it did, cv2's path would raise for that face.
                logger.warning("video %r: %d faces with degenerate landmarks left out", video_id, int((~usable).sum()))
                keep = np.flatnonzero(usable)
                placements = [placements[i] for i in keep]
                crop_frames = [crop_frames[i] for i in keep]
                matrices = matrices[torch.as_tensor(keep, device=matrices.device)]
            which = torch.as_tensor(crop_frames, dtype=torch.long, device=frames.device)
            crops = warp_crops(frames, which, matrices, cfg.crop_size)
        return DeviceFaceResult(
            crops=crops,
            placements=tuple(placements),
            frames_sampled=int(frames.shape[0]),
            frames_with_faces=frames_with_faces,
            faces_found=faces_found,
        )


def _to_host(per_frame: list) -> list[list[Detection]]:
    """All frames' detections to the host in one copy, split back per frame."""
    counts = [int(f.scores.shape[0]) for f in per_frame]
    if not sum(counts):
        return [[] for _ in per_frame]
    packed = (
        torch.cat([torch.cat([f.boxes, f.scores[:, None], f.landmarks.reshape(-1, 10)], dim=1) for f in per_frame])
        .cpu()
        .numpy()
    )
    out, start = [], 0
    for count in counts:
        rows = packed[start : start + count]
        start += count
        out.append([
            Detection(box=tuple(float(v) for v in r[:4]), score=float(r[4]), landmarks=r[5:].reshape(5, 2).copy())
            for r in rows
        ])  # fmt: skip
    return out
