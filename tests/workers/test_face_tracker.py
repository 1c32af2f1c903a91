"""Greedy IoU tracker, pure."""

from __future__ import annotations

import numpy as np
import pytest

from workers.face_tracker import IoUTracker, iou_matrix


def shifted(box, dx=0.0, dy=0.0):
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


A = (0.0, 0.0, 10.0, 10.0)
B = (100.0, 100.0, 120.0, 130.0)


def test_iou_matrix_known_values():
    ious = iou_matrix(np.array([A, A]), np.array([A, shifted(A, 5), B]))
    np.testing.assert_allclose(ious, [[1.0, 50 / 150, 0.0], [1.0, 50 / 150, 0.0]])
    assert iou_matrix(np.zeros((0, 4)), np.array([A])).shape == (0, 1)
    assert iou_matrix(np.array([(0, 0, 0, 0)]), np.array([(0, 0, 0, 0)]))[0, 0] == 0.0  # empty union


def test_moving_face_keeps_its_track():
    tracker = IoUTracker(0.3)
    ids = [tracker.update([shifted(A, 2 * k)])[0] for k in range(6)]
    assert ids == [0] * 6 and tracker.n_tracks == 1


def test_ids_follow_boxes_not_list_order():
    tracker = IoUTracker(0.3)
    assert tracker.update([A, B]) == [0, 1]
    assert tracker.update([shifted(B, 1), shifted(A, 1)]) == [1, 0]


def test_new_face_gets_a_new_id():
    tracker = IoUTracker(0.3)
    tracker.update([A])
    assert tracker.update([A, B]) == [0, 1]


def test_low_overlap_starts_a_new_track():
    tracker = IoUTracker(0.5)
    tracker.update([A])
    assert tracker.update([shifted(A, 6)]) == [1]  # IoU 40/160 = 0.25 < 0.5


def test_missed_frames_within_limit_rejoin_the_track():
    tracker = IoUTracker(0.3, max_missed=2)
    tracker.update([A])
    tracker.update([])
    tracker.update([B])
    assert tracker.update([A, B]) == [0, 1]


def test_track_closed_after_too_many_missed_frames():
    tracker = IoUTracker(0.3, max_missed=1)
    tracker.update([A])
    tracker.update([])
    tracker.update([])
    assert tracker.update([A]) == [1]


def test_greedy_gives_the_track_to_the_best_overlap_and_each_track_one_box():
    tracker = IoUTracker(0.1)
    tracker.update([A])
    assert tracker.update([shifted(A, 4), shifted(A, 1)]) == [1, 0]


def test_empty_frames_are_fine():
    tracker = IoUTracker(0.3)
    assert tracker.update([]) == []
    assert tracker.n_tracks == 0


@pytest.mark.parametrize(("iou", "missed"), [(0.0, 2), (1.5, 2), (0.3, -1)])
def test_invalid_parameters_raise(iou, missed):
    with pytest.raises(ValueError):
        IoUTracker(iou, max_missed=missed)
