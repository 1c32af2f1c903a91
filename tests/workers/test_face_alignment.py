"""5-point similarity alignment (docs/method.md §5), pure: no model needed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from workers.face_alignment import (
    ARCFACE_TEMPLATE_112,
    ARCFACE_TEMPLATE_128,
    align_face,
    alignment_template,
    estimate_alignment,
)

ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def similarity(angle_deg, scale, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def test_template_is_arcface_112_shifted_8_px_in_x():
    np.testing.assert_array_equal(ARCFACE_TEMPLATE_112, ARCFACE_112)
    np.testing.assert_allclose(ARCFACE_TEMPLATE_128, ARCFACE_112 + [8.0, 0.0])
    eyes_mid_x = ARCFACE_TEMPLATE_128[:2, 0].mean()
    assert eyes_mid_x == pytest.approx(64.0, abs=0.1)  # centred on the 128 canvas


def test_alignment_template_follows_method_formula():
    size, scale = 256, 1.3
    dst = ARCFACE_TEMPLATE_128 / 128 * size
    margin = size * (scale - 1) / 2
    expected = (dst + margin) * (size / (size + 2 * margin))
    np.testing.assert_allclose(alignment_template(size, scale), expected)
    # Left eye on the 256 crop: ((38.2946 + 8) * 2 + 38.4) * 256 / 332.8, (51.6963 * 2 + 38.4) * 256 / 332.8
    assert alignment_template()[0] == pytest.approx([100.76, 109.07], abs=0.01)


def test_alignment_template_margin_zooms_out_around_the_centre():
    bare = alignment_template(256, 1.0)
    np.testing.assert_allclose(bare, ARCFACE_TEMPLATE_128 * 2)
    np.testing.assert_allclose(alignment_template(256, 1.3) - 128, (bare - 128) / 1.3)


@pytest.mark.parametrize(("angle", "scale", "tx", "ty"), [(0, 1, 0, 0), (25, 0.6, 300, 80), (-40, 2.5, -50, 400)])
def test_estimate_alignment_maps_exact_landmarks_onto_template(angle, scale, tx, ty):
    template = alignment_template(256, 1.3)
    landmarks = apply(similarity(angle, scale, tx, ty), template)  # the face, placed in some image
    matrix = estimate_alignment(landmarks, 256, 1.3)
    np.testing.assert_allclose(apply(matrix, landmarks), template, atol=1e-6)


def test_estimate_alignment_is_least_squares_umeyama_similarity():
    rng = np.random.default_rng(0)
    landmarks = apply(similarity(12, 1.7, 40, 60), alignment_template()) + rng.normal(0, 3, (5, 2))
    matrix = estimate_alignment(landmarks)
    reference = SimilarityTransform.from_estimate(landmarks, alignment_template())
    np.testing.assert_allclose(matrix, reference.params[:2])
    # A similarity: [[a, -b], [b, a]].
    assert matrix[0, 0] == pytest.approx(matrix[1, 1]) and matrix[0, 1] == pytest.approx(-matrix[1, 0])
    # Least squares beats the robust (LMEDS) fit on the sum of squared residuals.
    lmeds, _ = cv2.estimateAffinePartial2D(landmarks, alignment_template(), method=cv2.LMEDS)
    ls_err = ((apply(matrix, landmarks) - alignment_template()) ** 2).sum()
    assert ls_err <= ((apply(lmeds, landmarks) - alignment_template()) ** 2).sum() + 1e-9


def test_align_face_moves_landmark_pixels_onto_template_positions():
    # Paint 5 dots at known landmarks of a rotated, scaled face, then check where they land in the crop.
    image = np.zeros((600, 800, 3), np.uint8)
    landmarks = apply(similarity(30, 1.8, 250, 90), alignment_template())
    for x, y in landmarks:
        cv2.circle(image, (round(x), round(y)), 6, (255, 255, 255), -1)
    crop = align_face(image, landmarks)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    for x, y in alignment_template():
        assert crop[round(y), round(x)].min() > 200


def test_align_face_keeps_channels_and_dtype_of_input():
    gray = np.full((300, 300), 7, np.uint8)
    crop = align_face(gray, apply(similarity(0, 1, 20, 20), alignment_template()), size=128, margin_scale=1.0)
    assert crop.shape == (128, 128) and crop.dtype == np.uint8


@pytest.mark.parametrize(
    "landmarks",
    [np.zeros((4, 2)), np.zeros((5, 3)), np.full((5, 2), np.nan), np.ones((5, 2)) * 10],
)
def test_estimate_alignment_rejects_bad_landmarks(landmarks):
    with pytest.raises(ValueError, match="landmarks|similarity"):
        estimate_alignment(landmarks)
