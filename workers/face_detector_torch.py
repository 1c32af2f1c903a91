"""SCRFD in torch on any device: the shared ONNX made batch-capable, decoding and NMS on the device.

The same weights as :class:`workers.face_detector.FaceDetector` (insightface on
onnxruntime), converted with ``onnx2torch`` after two graph rewrites that make
the shipped model batch-capable:

* its ``Resize`` nodes (the FPN's 2x nearest upsampling) carry fixed output
  sizes ``[1, C, h, w]``; they are rewritten to ``scales = [1, 1, 2, 2]``, the
  same operation for every batch size;
* its ``Reshape`` nodes hard-code batch 1 (``[1, -1, k]``); the batch entry
  becomes ``0`` (ONNX: copy that dimension from the input).

Everything after the network also stays on the device: letterboxing (resize to
fit ``input_size``, pad right/bottom, as insightface does), the anchor decoding
of boxes and 5 landmarks, the score threshold and NMS over all frames of a
batch at once (``torchvision.ops.batched_nms``). Boxes are offset by one pixel
on their far corner before NMS so the overlaps equal insightface's, whose NMS
counts a box as ``x2 - x1 + 1`` pixels wide. Only the (few) kept detections
ever leave the device, when the caller asks for them.

Parity with insightface (tests/workers/test_face_detector_torch.py): the same
faces on the shared photos and test videos, boxes IoU >= 0.9, landmarks within
1.5 px, scores within 0.02.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torchvision.ops import batched_nms

from clipguard.config import FacesConfig
from clipguard.errors import ConfigError
from clipguard.model_files import find_model_file
from workers.face_detector import Detection

logger = logging.getLogger(__name__)

# insightface's SCRFD input normalisation: (pixel - 127.5) / 128.
INPUT_MEAN = 127.5
INPUT_STD = 128.0
STRIDES = (8, 16, 32)
ANCHORS_PER_PLACE = 2


@dataclass(frozen=True)
class FrameFaces:
    """One frame's detections as device tensors, highest score first, in frame pixels.

    Attributes:
        boxes: (K, 4) float32 (x1, y1, x2, y2).
        scores: (K,) float32.
        landmarks: (K, 5, 2) float32 (eyes, nose, mouth corners).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor

    def to_detections(self) -> list[Detection]:
        """Host :class:`Detection` objects, as the onnxruntime detector returns them."""
        boxes, scores, lms = (t.detach().cpu().numpy() for t in (self.boxes, self.scores, self.landmarks))
        return [
            Detection(box=tuple(float(v) for v in b), score=float(s), landmarks=lm.astype(np.float32))
            for b, s, lm in zip(boxes, scores, lms, strict=True)
        ]


def batchable_scrfd(path: Path) -> onnx.ModelProto:
    """The SCRFD ONNX at ``path`` with a dynamic batch dimension (see the module docstring).

    Raises:
        ConfigError: the graph is not the 3-stride, 5-keypoint SCRFD layout these rewrites expect.
    """
    model = onnx.load(str(path))
    graph = model.graph
    if len(graph.output) != 9:
        msg = f"{path}: expected the 3-stride SCRFD with keypoints (9 outputs), got {len(graph.output)} outputs"
        raise ConfigError(msg)
    for value in [*graph.input, *graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    inits = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            if shape[0] == 1:
                shape[0] = 0  # copy the batch size from the input
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
        elif node.op_type == "Resize":
            mode = next((a.s for a in node.attribute if a.name == "mode"), b"")
            sizes = numpy_helper.to_array(inits[node.input[3]]) if len(node.input) > 3 else None
            if mode != b"nearest" or sizes is None:
                msg = f"{path}: unexpected Resize node {node.name!r} (mode {mode!r}); cannot make it batch-capable"
                raise ConfigError(msg)
            scales_name = f"{node.output[0]}_batchable_scales"
            graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), scales_name))
            node.input[2] = scales_name
            del node.input[3]  # sizes and scales are exclusive
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    onnx.checker.check_model(model)
    return model


def _anchor_centers(size: int, device: torch.device) -> list[torch.Tensor]:
    """(x, y) of every anchor per stride, row-major, each place repeated ANCHORS_PER_PLACE times."""
    out = []
    for stride in STRIDES:
        side = size // stride
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        centers = torch.stack([xs, ys], dim=-1).reshape(-1, 2).float() * stride
        out.append(centers.repeat_interleave(ANCHORS_PER_PLACE, dim=0).to(device))
    return out


class TorchFaceDetector:
    """SCRFD (5 keypoints) as a torch module on ``device``, batched over frames.

    Args:
        config: The faces section (``detector_path``, ``input_size``, ``det_thresh``, ``nms_thresh``).
        device: Where the network, decoding and NMS run.
        batch_size: Frames per forward pass at most.
        model_dir: The configured model directory (None: ``$CLIPGUARD_MODEL_DIR``, then ``./models``).

    Raises:
        ConfigError: missing model file, or a model other than the shipped SCRFD layout.
    """

    def __init__(
        self, config: FacesConfig, device: torch.device, *, batch_size: int = 32, model_dir: Path | None = None
    ) -> None:
        from onnx2torch import convert  # heavy; only the device face path needs it

        if batch_size < 1:
            msg = f"batch_size must be >= 1, got {batch_size}"
            raise ConfigError(msg)
        path = find_model_file(
            config.detector_path, what="SCRFD face detector", setting="faces.detector_path", configured_dir=model_dir
        )
        graph = batchable_scrfd(path)
        fixed = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim[2:]]
        if all(fixed) and tuple(fixed) != (config.input_size, config.input_size):
            msg = f"{path} has a fixed input of {tuple(fixed)}; set faces.input_size to match"
            raise ConfigError(msg)
        self.network = convert(graph).eval().requires_grad_(False).to(device)
        self.device = device
        self.path = path
        self.batch_size = batch_size
        self._size = config.input_size
        self._threshold = config.det_thresh
        self._nms = config.nms_thresh
        self._centers = _anchor_centers(config.input_size, device)
        logger.info(
            "SCRFD %s in torch on %s, input %dx%d, det_thresh %.2f, nms %.2f, up to %d frames per pass",
            path.name, device, self._size, self._size, self._threshold, self._nms, batch_size,
        )  # fmt: skip

    def detect_frames(self, frames: torch.Tensor) -> list[FrameFaces]:
        """Faces in each of a batch of same-sized frames.

        Args:
            frames: uint8 (B, H, W, 3) RGB, on any device (moved to the detector's once).

        Returns:
            One :class:`FrameFaces` per frame, on the detector's device.
        """
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[1:3]) < 1:
            msg = f"expected uint8 (B, H, W, 3) RGB frames, got {frames.dtype} {tuple(frames.shape)}"
            raise ValueError(msg)
        out: list[FrameFaces] = []
        with torch.inference_mode():
            for start in range(0, frames.shape[0], self.batch_size):
                chunk = frames[start : start + self.batch_size].to(self.device, non_blocking=True)
                canvas, scale = self._letterbox(chunk)
                out.extend(self._decode(self.network(canvas), scale))
        return out

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Host images of any sizes -> host detections (the onnxruntime detector's interface)."""
        results = []
        for image in images:
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
                msg = f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}"
                raise ValueError(msg)
            (faces,) = self.detect_frames(torch.from_numpy(np.ascontiguousarray(image))[None])
            results.append(faces.to_detections())
        return results

    def _letterbox(self, frames: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Resize to fit the square input (bilinear, as cv2.resize), pad right/bottom, normalise."""
        height, width = frames.shape[1:3]
        # The same arithmetic as insightface's SCRFD.detect for a square input.
        if height / width > 1.0:
            new_h, new_w = self._size, int(self._size / (height / width))
        else:
            new_w, new_h = self._size, int(self._size * (height / width))
        x = frames.permute(0, 3, 1, 2).float()
        if (new_h, new_w) != (height, width):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
            x = x.round_().clamp_(0, 255)  # cv2.resize yields uint8 levels
        # The padding is black pixels normalised, as insightface's blob of a zero-padded canvas.
        canvas = torch.full((x.shape[0], 3, self._size, self._size), -INPUT_MEAN / INPUT_STD, device=x.device)
        canvas[:, :, :new_h, :new_w] = (x - INPUT_MEAN) / INPUT_STD
        return canvas, new_h / height

    def _decode(self, outs: Sequence[torch.Tensor], scale: float) -> list[FrameFaces]:
        """Anchor decoding, threshold and NMS for a batch; one FrameFaces per frame."""
        n_levels = len(STRIDES)
        scores, boxes, kpss = [], [], []
        for level, (stride, centers) in enumerate(zip(STRIDES, self._centers, strict=True)):
            score = outs[level].reshape(outs[level].shape[0], -1)  # (B, A)
            dist = outs[level + n_levels] * stride  # (B, A, 4)
            kp = (outs[level + 2 * n_levels] * stride).reshape(score.shape[0], -1, 5, 2)
            boxes.append(torch.cat([centers - dist[..., :2], centers + dist[..., 2:]], dim=-1))
            kpss.append(centers[None, :, None, :] + kp)
            scores.append(score)
        score = torch.cat(scores, dim=1)
        box = torch.cat(boxes, dim=1) / scale
        kps = torch.cat(kpss, dim=1) / scale
        frame_idx, anchor_idx = torch.nonzero(score >= self._threshold, as_tuple=True)
        cand_scores = score[frame_idx, anchor_idx]
        cand_boxes = box[frame_idx, anchor_idx]
        # insightface's NMS counts inclusive pixels: widen by one so the IoUs agree.
        widened = cand_boxes + torch.tensor([0.0, 0.0, 1.0, 1.0], device=cand_boxes.device)
        keep = batched_nms(widened, cand_scores, frame_idx, self._nms)  # by decreasing score
        # Group by frame with one stable sort (score order kept within a frame) and one host sync.
        keep = keep[torch.sort(frame_idx[keep], stable=True).indices]
        counts = torch.bincount(frame_idx[keep], minlength=score.shape[0]).tolist()
        parts = zip(
            torch.split(cand_boxes[keep], counts),
            torch.split(cand_scores[keep], counts),
            torch.split(kps[frame_idx[keep], anchor_idx[keep]], counts),
            strict=True,
        )
        return [FrameFaces(boxes=b, scores=sc, landmarks=k) for b, sc, k in parts]
