"""The serving API: CropScorer, device and precision resolution, and import isolation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from clipguard.assets import REPO_ROOT
from clipguard.errors import ConfigError, ModelError
from clipguard.model import (
    CropScorer,
    DetectorConfig,
    PreprocessConfig,
    as_uint8_nchw,
    clip_preprocess,
    resolve_autocast_dtype,
    resolve_device,
    save_checkpoint,
)
from clipguard.model.lntuning import is_trained_param

CONFIG = DetectorConfig(arch="ViT-Tiny-test", pretrained="none", device="cpu", max_batch_size=32)


def crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)


@pytest.fixture
def scorer():
    torch.manual_seed(0)
    return CropScorer.from_config(CONFIG)


def test_untrained_scorer_has_an_explicit_version(scorer):
    assert scorer.version == "ViT-Tiny-test-none-untrained-head"
    assert scorer.device == torch.device("cpu") and scorer.autocast_dtype is None


def test_score_returns_float32_probabilities_equal_to_the_manual_pipeline(scorer):
    batch = crops(5)
    scores = scorer.score(batch)
    assert scores.shape == (5,) and scores.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    with torch.no_grad():
        logits = scorer.detector(clip_preprocess(as_uint8_nchw(batch), PreprocessConfig())).logits
    np.testing.assert_allclose(scores, torch.softmax(logits, dim=-1)[:, 1].numpy(), rtol=0, atol=1e-6)


def test_chunking_and_input_layouts_do_not_change_scores(scorer):
    batch = crops(7, seed=1)
    expected = scorer.score(batch)
    torch.manual_seed(0)
    small = CropScorer(scorer.detector, CONFIG.model_copy(update={"max_batch_size": 3}), version="x")
    np.testing.assert_allclose(small.score(batch), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scorer.score(list(batch)), expected, rtol=0, atol=0)
    np.testing.assert_allclose(scorer.score(torch.from_numpy(batch).permute(0, 3, 1, 2)), expected, rtol=0, atol=0)


def test_score_runs_in_inference_mode(scorer):
    seen = []
    scorer.detector.tower.register_forward_hook(lambda *_: seen.append(torch.is_inference_mode_enabled()))
    scorer.score(crops(2))
    assert seen == [True]


def test_empty_batch_and_bad_inputs(scorer):
    assert scorer.score(np.empty((0, 256, 256, 3), np.uint8)).shape == (0,)
    assert scorer.score([]).shape == (0,)
    with pytest.raises(ModelError, match="256x256"):
        scorer.score(np.zeros((1, 224, 224, 3), np.uint8))
    with pytest.raises(ModelError, match="uint8"):
        scorer.score(np.zeros((1, 256, 256, 3), np.float32))


def test_non_finite_scores_raise_instead_of_returning_a_number(scorer):
    with torch.no_grad():
        scorer.detector.head.fc.bias.fill_(float("nan"))
    with pytest.raises(ModelError, match="non-finite"):
        scorer.score(crops(1))


def test_scorer_with_checkpoint_reports_its_version_and_uses_its_weights(tmp_path, scorer):
    torch.manual_seed(0)
    trained = CropScorer.from_config(CONFIG).detector
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if is_trained_param(name):
                param.add_(0.2)
    manifest = save_checkpoint(trained, tmp_path / "best", preprocess=CONFIG.preprocess)

    torch.manual_seed(0)
    served = CropScorer.from_config(CONFIG, tmp_path / "best.safetensors")

    assert served.version == manifest.version and served.version.startswith("clipguard-ViT-Tiny-test-")
    batch = crops(3)
    expected = CropScorer(trained, CONFIG, version="ref").score(batch)
    np.testing.assert_allclose(served.score(batch), expected, rtol=0, atol=0)
    assert not np.allclose(served.score(batch), scorer.score(batch))


def test_cuda_requested_without_cuda_raises(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ModelError, match="CUDA is not available"):
        CropScorer.from_config(DetectorConfig(arch="ViT-Tiny-test", pretrained="none", device="cuda"))
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_device_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("precision", "device", "expected"),
    [
        ("auto", "cuda", torch.bfloat16),
        ("auto", "cpu", None),
        ("bf16", "cuda", torch.bfloat16),
        ("fp32", "cuda", None),
        ("fp32", "cpu", None),
    ],
)
def test_autocast_dtype_per_device(precision, device, expected):
    assert resolve_autocast_dtype(precision, torch.device(device)) is expected


def test_bf16_on_cpu_is_refused():
    with pytest.raises(ModelError, match="needs CUDA"):
        resolve_autocast_dtype("bf16", torch.device("cpu"))


@pytest.mark.parametrize(
    "kwargs", [{"device": "gpu"}, {"precision": "fp16"}, {"max_batch_size": 0}, {"num_classes": 3}, {"arch": ""}]
)
def test_bad_config_values_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        DetectorConfig(**kwargs)


def test_model_package_imports_no_training_only_code():
    code = (
        "import sys, clipguard.model, clipguard.model.inference, clipguard.model.convert_hf\n"
        "from clipguard.model import CropScorer\n"
        "bad = [m for m in sys.modules if m in ('training.losses', 'training.slerp') or m.split('.')[0] == 'ray']\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=REPO_ROOT)


def test_config_module_imports_without_torch():
    code = "import sys, clipguard.model.config\nassert 'torch' not in sys.modules and 'open_clip' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO_ROOT)
