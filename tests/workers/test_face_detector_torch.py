"""SCRFD in torch (batch-capable graph, device decoding + NMS) against insightface's onnxruntime path.

Parity musts (issue 13): on the shared photos and on test-video frames, the same
faces (box IoU >= 0.9 each), landmarks within 1.5 px, scores within 0.02. Runs on
the CPU here; the CUDA check runs where CUDA exists.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch

from clipguard.assets import asset_path
from clipguard.config import FacesConfig, SamplingConfig, SourceConfig
from clipguard.contracts import VideoJob
from clipguard.errors import ConfigError
from tests import video_factory as vf
from workers.face_detector import CPU, FaceDetector
from workers.face_detector_torch import TorchFaceDetector, batchable_scrfd
from workers.frame_decoder import FrameDecoder

PHOTOS = ("solvay", "astronaut", "newton", "gauss")


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def assert_same_faces(got, want) -> None:
    """Every reference face has exactly one torch face with IoU >= 0.9, landmarks <= 1.5 px, score +- 0.02."""
    assert len(got) == len(want)
    unmatched = list(got)
    for w in want:
        best = max(unmatched, key=lambda g: iou(g.box, w.box))
        assert iou(best.box, w.box) >= 0.9, (best.box, w.box)
        assert np.abs(best.landmarks - w.landmarks).max() <= 1.5
        assert abs(best.score - w.score) <= 0.02
        unmatched.remove(best)


@pytest.fixture(scope="module")
def reference():
    return FaceDetector(FacesConfig(), providers=[CPU], intra_op_threads=2)


@pytest.fixture(scope="module")
def torch_detector():
    return TorchFaceDetector(FacesConfig(), torch.device("cpu"), batch_size=8)


@pytest.fixture(scope="module")
def photos():
    return {name: vf.load_photo(name) for name in PHOTOS}


def test_rewritten_graph_runs_any_batch_with_onnxruntime_outputs_of_batch_one(photos):
    model = batchable_scrfd(asset_path("models/scrfd_2.5g_kps.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(node.op_type == "Resize" and len(node.input) > 3 for node in model.graph.node)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=[CPU])
    rng = np.random.default_rng(0)
    blob = rng.normal(0, 1, (3, 3, 640, 640)).astype(np.float32)
    batched = session.run(None, {"input.1": blob})
    single = session.run(None, {"input.1": blob[1:2]})
    for b, s in zip(batched, single, strict=True):
        assert b.shape[0] == 3
        np.testing.assert_allclose(b[1:2], s, atol=1e-4)


def test_photos_give_the_same_faces_as_insightface(reference, torch_detector, photos):
    got = torch_detector.detect_batch([photos[name] for name in PHOTOS])
    assert [len(g) for g in got] == [29, 1, 1, 1]
    for name, faces in zip(PHOTOS, got, strict=True):
        assert_same_faces(faces, reference.detect(photos[name]))
        scores = [f.score for f in faces]
        assert scores == sorted(scores, reverse=True)


def test_video_frames_batched_give_the_same_faces_as_insightface(reference, torch_detector, tmp_path):
    vf.make_pan_video(tmp_path / "crowd.mp4", "solvay", n_frames=6, size=(1280, 720))
    vf.make_portrait_video(tmp_path / "one.mp4", "newton", n_frames=6)
    decoder = FrameDecoder(SourceConfig(video_root=tmp_path), SamplingConfig(num_frames=3))
    for name, at_least in (("crowd.mp4", 20), ("one.mp4", 1)):
        frames = [f.image for f in decoder.decode(VideoJob(name)).frames]
        per_frame = torch_detector.detect_frames(torch.from_numpy(np.stack(frames)))  # one batch
        assert len(per_frame) == 3
        for image, faces in zip(frames, per_frame, strict=True):
            want = reference.detect(image)
            assert len(want) >= at_least
            assert_same_faces(faces.to_detections(), want)


def test_blank_frames_and_batch_edges(torch_detector):
    frames = torch.zeros((3, 90, 160, 3), dtype=torch.uint8)
    out = torch_detector.detect_frames(frames)
    assert [int(f.scores.numel()) for f in out] == [0, 0, 0]
    assert out[0].boxes.shape == (0, 4) and out[0].landmarks.shape == (0, 5, 2)
    with pytest.raises(ValueError, match="uint8"):
        torch_detector.detect_frames(frames.float())


def test_fixed_input_size_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="fixed input"):
        TorchFaceDetector(FacesConfig(input_size=320), torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on the GPU machine: bench/README.md)")
def test_cuda_detector_matches_the_cpu_one(torch_detector, photos):
    cuda = TorchFaceDetector(FacesConfig(), torch.device("cuda"), batch_size=8)
    got = cuda.detect_batch([photos["solvay"], photos["gauss"]])
    want = torch_detector.detect_batch([photos["solvay"], photos["gauss"]])
    for g, w in zip(got, want, strict=True):
        assert_same_faces(g, w)
