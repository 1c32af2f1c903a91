"""5-point face alignment (docs/method.md §5): a pure function of an image and its landmarks.

The destination is the ArcFace template (112x112 positions shifted +8 in x, so
defined on a 128x128 canvas), scaled to the crop size, then zoomed out around
the crop centre by the margin scale:

    dst = template / 128 * size
    margin = size * (scale - 1) / 2
    dst += margin
    dst *= size / (size + 2 * margin)

The 5 detected landmarks (left eye, right eye, nose tip, left and right mouth
corners, in image left/right) are mapped onto ``dst`` by the least-squares
similarity transform (Umeyama; rotation, uniform scale, translation), and the
image is warped to ``size x size`` with bilinear interpolation and black
borders.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

# The ArcFace 5-point template on its 112x112 canvas (insightface's arcface_dst).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],  # left eye
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float64,
)
# Shifted +8 px in x it is centred on a 128x128 canvas (eye midpoint x = 64), as
# insightface's estimate_norm does for 128 crops; this is what gets scaled.
ARCFACE_TEMPLATE_128 = ARCFACE_TEMPLATE_112 + np.array([8.0, 0.0])
TEMPLATE_CANVAS = 128.0


def alignment_template(size: int = 256, margin_scale: float = 1.3) -> np.ndarray:
    """Where the 5 landmarks land in a ``size x size`` crop with ``margin_scale``.

    Args:
        size: Crop side in pixels.
        margin_scale: Zoom-out factor (1.0 = the bare template).

    Returns:
        A (5, 2) float64 array of (x, y) positions.
    """
    dst = ARCFACE_TEMPLATE_128 / TEMPLATE_CANVAS * size
    margin = size * (margin_scale - 1.0) / 2.0
    dst = dst + margin
    dst = dst * (size / (size + 2.0 * margin))
    return dst


def estimate_alignment(landmarks: np.ndarray, size: int = 256, margin_scale: float = 1.3) -> np.ndarray:
    """The 2x3 similarity matrix taking image ``landmarks`` to the crop template.

    Args:
        landmarks: (5, 2) landmark positions in the image.
        size: Crop side in pixels.
        margin_scale: Zoom-out factor of the template.

    Returns:
        A (2, 3) float64 affine matrix (for ``cv2.warpAffine``).

    Raises:
        ValueError: Wrong landmark shape, non-finite values, or landmarks too
            degenerate (e.g. all equal) for a similarity transform.
    """
    src = np.asarray(landmarks, dtype=np.float64)
    if src.shape != (5, 2) or not np.isfinite(src).all():
        msg = f"landmarks must be a finite (5, 2) array, got shape {src.shape}"
        raise ValueError(msg)
    tform = SimilarityTransform.from_estimate(src, alignment_template(size, margin_scale))
    if not tform:
        msg = f"cannot estimate a similarity transform from landmarks {src.tolist()}: {tform}"
        raise ValueError(msg)
    return tform.params[:2, :]


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 256, margin_scale: float = 1.3) -> np.ndarray:
    """Warp the face with ``landmarks`` in ``image`` to an aligned ``size x size`` crop.

    Args:
        image: (H, W, C) or (H, W) uint8 image (any channel order; kept as is).
        landmarks: (5, 2) landmarks in ``image`` pixel coordinates.
        size: Crop side (256 for the detector).
        margin_scale: Zoom-out factor (1.3 for the detector).

    Returns:
        The aligned crop, (size, size[, C]), same dtype as ``image``.

    Raises:
        ValueError: As :func:`estimate_alignment`.
    """
    matrix = estimate_alignment(landmarks, size, margin_scale)
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
