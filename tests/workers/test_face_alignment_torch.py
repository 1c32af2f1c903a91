"""Device alignment: batched Umeyama and the one-warp crops against the cv2/skimage path (docs/method.md §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipguard.config import FacesConfig
from tests import video_factory as vf
from workers.face_alignment import align_face, alignment_template, estimate_alignment
from workers.face_alignment_torch import similarity_matrices, warp_crops
from workers.face_detector import CPU, FaceDetector


@pytest.fixture(scope="module")
def faces():
    """(photo, its detected landmarks) for the shared photos: 29 + 1 + 1 faces."""
    detector = FaceDetector(FacesConfig(), providers=[CPU], intra_op_threads=2)
    out = []
    for name in ("solvay", "gauss", "astronaut"):
        image = vf.load_photo(name)
        out.append((image, np.stack([d.landmarks for d in detector.detect(image)])))
    return out


def test_batched_similarity_equals_the_cpu_least_squares_fit(faces):
    for _, landmarks in faces:
        got = similarity_matrices(torch.from_numpy(landmarks), 256, 1.3).numpy()
        want = np.stack([estimate_alignment(lm, 256, 1.3) for lm in landmarks])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_reflected_landmarks_still_give_a_rotation_not_a_mirror():
    mirrored = alignment_template() * [-1.0, 1.0] + [400.0, 0.0]  # left/right swapped
    got = similarity_matrices(torch.from_numpy(mirrored)[None]).numpy()[0]
    np.testing.assert_allclose(got, estimate_alignment(mirrored), atol=1e-6)
    assert np.linalg.det(got[:, :2]) > 0


def test_device_crops_match_cv2_crops_within_two_grey_levels(faces):
    for image, landmarks in faces:
        frames = torch.from_numpy(np.stack([np.zeros_like(image), image]))  # the faces are in frame 1
        matrices = similarity_matrices(torch.from_numpy(landmarks))
        crops = warp_crops(frames, torch.ones(len(landmarks), dtype=torch.long), matrices, 256, chunk=8)
        assert crops.shape == (len(landmarks), 3, 256, 256) and crops.dtype == torch.uint8
        want = np.stack([align_face(image, lm) for lm in landmarks]).astype(np.int16)
        diff = np.abs(crops.permute(0, 2, 3, 1).numpy().astype(np.int16) - want)
        assert diff.reshape(len(landmarks), -1).mean(axis=1).max() <= 2.0
        assert diff.max() <= 2


def test_crops_at_frame_edges_blend_with_black_not_with_the_next_frame():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, 120, 160, 3), dtype=np.uint8)
    # a face template placed so the crop hangs over the top-left corner of frame 1
    landmarks = alignment_template(64, 1.3) * 0.8 - [20.0, 25.0]
    matrices = similarity_matrices(torch.from_numpy(landmarks)[None], 64, 1.3)
    crop = warp_crops(torch.from_numpy(frames), torch.tensor([1]), matrices, 64)[0].permute(1, 2, 0).numpy()
    want = align_face(frames[1], landmarks, 64, 1.3)
    assert np.abs(crop.astype(int) - want).mean() <= 2.0
    assert (want == 0).mean() > 0.2 and (crop == 0).mean() > 0.2  # the outside is black in both


def test_degenerate_landmarks_give_a_non_finite_matrix_and_no_crops_give_an_empty_batch():
    assert not torch.isfinite(similarity_matrices(torch.full((1, 5, 2), 7.0))).any()
    frames = torch.zeros((2, 32, 32, 3), dtype=torch.uint8)
    empty = warp_crops(frames, torch.zeros(0, dtype=torch.long), torch.zeros((0, 2, 3)), 16)
    assert empty.shape == (0, 3, 16, 16)
