"""Link faces across sampled frames into tracks by box overlap (greedy IoU).

One tracker per video. Frames are fed in order; each box is matched to the
track whose last box overlaps it most, greedily over all (track, box) pairs
in decreasing IoU, if that IoU is at least the threshold; each track takes at
most one box per frame. Unmatched boxes start new tracks. A track not seen for
more than ``max_missed`` consecutive frames is closed (a face the detector
missed once can still rejoin its track).

Sampled frames can be seconds apart, so a moving person may get several
tracks; the ids group crops for explanation, they are not identities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = Sequence[float]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection-over-union of boxes ``(x1, y1, x2, y2)``.

    Args:
        a: (N, 4) boxes.
        b: (M, 4) boxes.

    Returns:
        (N, M) IoU values in [0, 1]; 0 where a union is empty.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    missed: int = 0


class IoUTracker:
    """Greedy IoU tracker; assigns a track id to every box of every frame.

    Args:
        iou_threshold: Minimum IoU to continue a track (``FacesConfig.track_iou``).
        max_missed: Frames a track may go unmatched before it is closed.
    """

    def __init__(self, iou_threshold: float, max_missed: int = 2) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            msg = f"iou_threshold must be in (0, 1], got {iou_threshold}"
            raise ValueError(msg)
        if max_missed < 0:
            msg = f"max_missed must be >= 0, got {max_missed}"
            raise ValueError(msg)
        self._threshold = iou_threshold
        self._max_missed = max_missed
        self._tracks: list[_Track] = []
        self._next_id = 0

    @property
    def n_tracks(self) -> int:
        """How many track ids have been handed out so far."""
        return self._next_id

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """Match one frame's boxes to tracks.

        Args:
            boxes: The frame's boxes ``(x1, y1, x2, y2)``, possibly none.

        Returns:
            The track id of each box, in input order.
        """
        boxes_arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids = [-1] * len(boxes_arr)
        matched_tracks: set[int] = set()
        if self._tracks and len(boxes_arr):
            ious = iou_matrix(np.stack([t.box for t in self._tracks]), boxes_arr)
            # Stable sort: ties go to the older track and the earlier box.
            for flat in np.argsort(-ious, axis=None, kind="stable"):
                ti, bi = divmod(int(flat), len(boxes_arr))
                if ious[ti, bi] < self._threshold:
                    break
                if ti in matched_tracks or ids[bi] != -1:
                    continue
                matched_tracks.add(ti)
                ids[bi] = self._tracks[ti].track_id
                self._tracks[ti].box = boxes_arr[bi]
                self._tracks[ti].missed = 0
        for ti, track in enumerate(self._tracks):
            if ti not in matched_tracks:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self._max_missed]
        for bi, box in enumerate(boxes_arr):
            if ids[bi] == -1:
                ids[bi] = self._next_id
                self._tracks.append(_Track(self._next_id, box))
                self._next_id += 1
        return ids
