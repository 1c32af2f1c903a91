"""SCRFD face detection (insightface) with 5 landmarks, on CPU or CUDA.

The model is loaded with ``insightface.model_zoo.get_model(path)``, which
returns insightface's ``SCRFD`` class; we use its letterboxing (resize to fit
``input_size`` x ``input_size``, pad right/bottom), thresholds and NMS
(``prepare(det_thresh=..., nms_thresh=...)``). ``SCRFD.detect`` returns all
faces after NMS; the per-frame policy (largest / all, max faces) is the
cropper's job, so ``max_num`` is left at 0 here.

Batching: insightface's ``detect`` runs one image per ``session.run``. The
shared ``scrfd_2.5g_kps.onnx`` has a fixed input of 1x3x640x640 and its
Reshape nodes hard-code batch 1, so it cannot batch: frames are looped. For a
model whose input batch dimension is dynamic, up to ``batch_size``
letterboxed frames go through one ``session.run`` and are decoded with the
same anchor/NMS arithmetic as insightface (a test checks both paths agree).

Execution provider: CUDA when onnxruntime offers it, else CPU, chosen
explicitly and logged; if CUDA was chosen but the session did not activate it
(missing CUDA/cuDNN libraries), that is an error, not a quiet CPU run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import insightface
import numpy as np
import onnxruntime
from insightface.model_zoo.scrfd import SCRFD, distance2bbox, distance2kps

from clipguard.config import FacesConfig
from clipguard.errors import ConfigError, ModelError
from clipguard.model_files import find_model_file

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Feature-map strides by number of output groups, as in insightface's SCRFD.
_STRIDES = {3: (8, 16, 32), 5: (8, 16, 32, 64, 128)}


@dataclass(frozen=True, eq=False)  # identity equality: arrays have no single truth value
class Detection:
    """One detected face, in the pixel coordinates of the image given to the detector.

    Attributes:
        box: (x1, y1, x2, y2).
        score: Detection confidence in [0, 1].
        landmarks: (5, 2) float32: left eye, right eye, nose, left and right mouth corners.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def choose_providers(available: Sequence[str] | None = None) -> list[str]:
    """CUDA (with CPU behind it for unsupported ops) when available, else CPU only."""
    available = list(available if available is not None else onnxruntime.get_available_providers())
    if CUDA in available:
        return [CUDA, CPU]
    if CPU not in available:
        msg = f"onnxruntime offers neither CUDA nor CPU execution (available: {available})"
        raise ModelError(msg)
    return [CPU]


class FaceDetector:
    """SCRFD with thresholds, input size and NMS from :class:`FacesConfig`.

    Args:
        config: The faces section (``detector_path``: a file name in the model
            directory or a path; ``input_size``,
            ``det_thresh``, ``nms_thresh``).
        providers: onnxruntime providers; default :func:`choose_providers`.
        intra_op_threads: onnxruntime threads per session run (None: its default);
            set it to the CPUs a Ray actor owns.
        batch_size: Frames per ``session.run`` when the model batches.
        model_dir: the configured model directory (None: ``$CLIPGUARD_MODEL_DIR``, then ``./models``).
    """

    def __init__(
        self,
        config: FacesConfig,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        batch_size: int = 8,
        model_dir: Path | None = None,
    ) -> None:
        path = find_model_file(
            config.detector_path, what="SCRFD face detector", setting="faces.detector_path", configured_dir=model_dir
        )
        if batch_size < 1:
            msg = f"batch_size must be >= 1, got {batch_size}"
            raise ConfigError(msg)
        requested = list(providers) if providers is not None else choose_providers()
        options = onnxruntime.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        model = insightface.model_zoo.get_model(str(path), providers=requested, sess_options=options)
        if not isinstance(model, SCRFD) or not model.use_kps:
            msg = f"{path} is not an SCRFD detector with 5 keypoints (got {type(model).__name__})"
            raise ConfigError(msg)
        size = config.input_size
        if model.static_input_size is not None and tuple(model.static_input_size) != (size, size):
            msg = f"{path} has a fixed input of {model.static_input_size}; set faces.input_size to match"
            raise ConfigError(msg)
        model.prepare(
            ctx_id=0 if requested[0] == CUDA else -1,
            input_size=(size, size),
            det_thresh=config.det_thresh,
            nms_thresh=config.nms_thresh,
        )
        active = list(model.session.get_providers())
        if active[0] != requested[0]:
            msg = f"onnxruntime activated {active} instead of {requested} for {path} (CUDA/cuDNN libraries missing?)"
            raise ModelError(msg)
        batch_dim = model.session.get_inputs()[0].shape[0]
        self._model = model
        self._size = size
        self._threshold = config.det_thresh
        self._batch_size = batch_size if not (isinstance(batch_dim, int) and batch_dim > 0) else 1
        self.path = path
        self.providers = active
        logger.info(
            "SCRFD %s on %s, input %dx%d, det_thresh %.2f, nms %.2f, batch %d%s",
            path.name,
            active,
            size,
            size,
            config.det_thresh,
            config.nms_thresh,
            self._batch_size,
            "" if self._batch_size > 1 else " (fixed batch dimension: frames are looped)",
        )

    @property
    def batch_size(self) -> int:
        """Frames per ``session.run``: 1 for fixed-batch models."""
        return self._batch_size

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in one RGB uint8 image, highest score first.

        Args:
            image: (H, W, 3) RGB uint8.

        Returns:
            Detections after thresholding and NMS, in ``image`` coordinates.
        """
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces in each of several RGB uint8 images (any sizes).

        Args:
            images: (H, W, 3) RGB uint8 arrays.

        Returns:
            One list of detections per image, highest score first.
        """
        for image in images:
            _check_image(image)
        if self._batch_size == 1:
            # insightface's own path; it expects BGR.
            return [self._from_arrays(*self._model.detect(np.ascontiguousarray(img[..., ::-1]))) for img in images]
        out: list[list[Detection]] = []
        for start in range(0, len(images), self._batch_size):
            out.extend(self._detect_batched(images[start : start + self._batch_size]))
        return out

    def _detect_batched(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        canvases, scales = zip(*(self._letterbox(img) for img in images), strict=True)
        # RGB input, so no channel swap (insightface swaps its BGR input to RGB).
        blob = cv2.dnn.blobFromImages(
            list(canvases),
            1.0 / self._model.input_std,
            (self._size, self._size),
            (self._model.input_mean,) * 3,
            swapRB=False,
        )
        outs = self._model.session.run(self._model.output_names, {self._model.input_name: blob})
        return [self._decode_one(outs, b, scale) for b, scale in enumerate(scales)]

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        # Same arithmetic as SCRFD._detect_candidates for a square input.
        height, width = image.shape[:2]
        if height / width > 1.0:
            new_h, new_w = self._size, int(self._size / (height / width))
        else:
            new_w, new_h = self._size, int(self._size * (height / width))
        canvas = np.zeros((self._size, self._size, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
        return canvas, new_h / height

    def _decode_one(self, outs: list[np.ndarray], b: int, scale: float) -> list[Detection]:
        m = self._model
        scores, boxes, kpss = [], [], []
        for idx, stride in enumerate(_STRIDES[m.fmc]):
            side = self._size // stride
            centers = np.stack(np.mgrid[:side, :side][::-1], axis=-1).astype(np.float32).reshape(-1, 2) * stride
            score = outs[idx][b].reshape(-1)
            # Anchors per location (2 for the 3-stride models), each centre repeated that often.
            centers = np.repeat(centers, len(score) // len(centers), axis=0)
            keep = np.where(score >= self._threshold)[0]
            scores.append(score[keep])
            boxes.append(distance2bbox(centers, outs[idx + m.fmc][b] * stride)[keep])
            kpss.append(distance2kps(centers, outs[idx + 2 * m.fmc][b] * stride).reshape(-1, 5, 2)[keep])
        score = np.concatenate(scores)
        if score.size == 0:
            return []
        order = np.argsort(-score, kind="stable")
        pre_det = np.hstack([np.concatenate(boxes) / scale, score[:, None]]).astype(np.float32)[order]
        kps = (np.concatenate(kpss) / scale).astype(np.float32)[order]
        keep = m.nms(pre_det)
        return self._from_arrays(pre_det[keep], kps[keep])

    @staticmethod
    def _from_arrays(dets: np.ndarray, kpss: np.ndarray | None) -> list[Detection]:
        if kpss is None:
            msg = "the SCRFD model returned no keypoints"
            raise ModelError(msg)
        return [
            Detection(
                box=(float(d[0]), float(d[1]), float(d[2]), float(d[3])),
                score=float(d[4]),
                landmarks=np.asarray(k, dtype=np.float32).reshape(5, 2),
            )
            for d, k in zip(dets, kpss, strict=True)
        ]


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        msg = f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}"
        raise ValueError(msg)
