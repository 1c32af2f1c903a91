"""DeviceScorer: batch buckets, bf16 weights with an fp32 head, and its parity with the fp32 scorer.

The bf16 runs here use a tiny tower on the CPU (test-only: serving refuses bf16 on
the CPU); the compiled bf16 run on CUDA is the GPU machine's (bench/README.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipguard.config import FacesConfig, VideoScoreConfig
from clipguard.errors import ConfigError, ModelError
from clipguard.model import CropScorer, DetectorConfig, DeviceScorer, plan_batches
from tests import video_factory as vf
from workers.face_cropper import FaceCropper
from workers.face_detector import CPU, FaceDetector

SCALE = 4.0  # p_fake spread 0.40-0.85 on the face crops below
CONFIG = DetectorConfig(arch="ViT-Tiny-test", pretrained="none", device="cpu", max_batch_size=32)


def scorer_with_a_real_head(config: DetectorConfig = CONFIG) -> CropScorer:
    """A tiny scorer whose head spreads p_fake over (0, 1), so a precision error would show."""
    scorer = CropScorer.from_config(config)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        scorer.detector.head.fc.weight.copy_(torch.randn(scorer.detector.head.fc.weight.shape, generator=gen) * SCALE)
    return scorer


@pytest.fixture(scope="module")
def face_crops():
    """Real aligned face crops: the Solvay photo's 29 faces and the three portraits."""
    cropper = FaceCropper(FacesConfig(), FaceDetector(FacesConfig(), providers=[CPU], intra_op_threads=2),
                          selection=VideoScoreConfig())  # fmt: skip
    from clipguard.contracts import SampledFrame

    frames = [SampledFrame(i, 0.0, vf.load_photo(n)) for i, n in enumerate(("solvay", "newton", "gauss", "astronaut"))]
    return np.stack([c.image for c in cropper.crop_video("photos", frames).crops])


def test_plan_cuts_by_the_largest_bucket_and_pads_the_rest_to_the_smallest_that_fits():
    assert plan_batches(0, (16, 64)) == []
    assert plan_batches(1, (64, 16)) == [(0, 1, 16)]
    assert plan_batches(16, (16, 64)) == [(0, 16, 16)]
    assert plan_batches(17, (16, 64)) == [(0, 17, 64)]
    assert plan_batches(300, (16, 64, 128, 256)) == [(0, 256, 256), (256, 300, 64)]
    with pytest.raises(ConfigError):
        plan_batches(3, (0, 8))


def test_padded_buckets_do_not_change_fp32_scores(face_crops):
    want = scorer_with_a_real_head().score(face_crops)
    padded = DeviceScorer(scorer_with_a_real_head(), weights_dtype=None, buckets=(8, 16), pad_to_buckets=True)
    assert padded.warm_up() >= 0
    got = padded.score(face_crops)  # 32 crops: 16 + 16; then 5 crops: one bucket of 8
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(padded.score(face_crops[:5]), want[:5], atol=1e-5)
    assert padded.score(face_crops[:0]).shape == (0,)


def test_bf16_weights_keep_an_fp32_head_and_stay_within_002_of_fp32(face_crops):
    want = scorer_with_a_real_head().score(face_crops)
    assert want.max() - want.min() > 0.3  # a head that separates, not a constant 0.5
    fast = DeviceScorer(scorer_with_a_real_head(), weights_dtype=torch.bfloat16, buckets=(16, 32), pad_to_buckets=True)
    detector = fast.scorer.detector
    assert detector.tower.conv1.weight.dtype == torch.bfloat16
    assert detector.head.fc.weight.dtype == torch.float32
    got = fast.score(face_crops)
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= 0.02


def test_serving_setup_on_the_cpu_is_fp32_uncompiled_and_unpadded():
    fast = DeviceScorer.for_serving(scorer_with_a_real_head(), buckets=(16,), compile_mode="reduce-overhead")
    assert fast.weights_dtype is None and fast.compile_mode == "none" and not fast.pad_to_buckets
    assert fast.warm_up() == 0.0
    with pytest.raises(ModelError, match="256x256"):
        fast.score(np.zeros((2, 128, 128, 3), np.uint8))
    with pytest.raises(ConfigError, match="compile mode"):
        DeviceScorer(scorer_with_a_real_head(), weights_dtype=None, compile_mode="turbo")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on the GPU machine: bench/README.md)")
def test_cuda_compiled_bf16_with_cuda_graphs_within_002_of_fp32(face_crops):
    config = CONFIG.model_copy(update={"device": "cuda", "precision": "fp32"})
    want = scorer_with_a_real_head(config).score(face_crops)
    fast = DeviceScorer(
        scorer_with_a_real_head(config), weights_dtype=torch.bfloat16, buckets=(16, 32), compile_mode="reduce-overhead"
    )
    fast.warm_up()
    host = fast.score(face_crops)  # through the pinned buffers
    device = fast.score(torch.from_numpy(face_crops).cuda())  # crops already on the GPU
    assert np.abs(host - want).max() <= 0.02 and np.abs(device - want).max() <= 0.02
    np.testing.assert_allclose(host, device, atol=1e-6)
