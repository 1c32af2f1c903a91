"""Frozen tower weights cast once to bf16: same training step, same checkpoints (clipguard/model/frozen_weights.py).

CPU autocast runs bf16 here (slowly; the tiny tower keeps it short), which is the
only way to check on this machine what a CUDA run does with ``run.frozen_weights``.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from clipguard.errors import ConfigError
from clipguard.model import DetectorConfig, PreprocessConfig, build_detector, count_parameters
from clipguard.model.checkpoint import base_fingerprint, load_checkpoint, save_checkpoint
from clipguard.model.frozen_weights import cast_frozen_weights, resolve_frozen_dtype
from clipguard.model.lntuning import is_trained_param
from training.losses import PRESETS
from training.train_config import RunSection
from training.train_step import TrainForward, speed_up, train_step

BF16 = torch.bfloat16


def _detector(tuning: str = "ln"):
    torch.manual_seed(0)
    return build_detector(DetectorConfig(arch="ViT-Tiny-test", pretrained="none", tuning=tuning))


def test_auto_casts_exactly_under_bf16_autocast_and_bf16_without_it_is_refused():
    assert resolve_frozen_dtype("auto", BF16) is BF16
    assert resolve_frozen_dtype("auto", None) is None
    assert resolve_frozen_dtype("fp32", BF16) is None
    assert resolve_frozen_dtype("bf16", BF16) is BF16
    with pytest.raises(ConfigError, match="needs bf16 autocast"):
        resolve_frozen_dtype("bf16", None)
    # The config refuses it before any worker starts, naming the way out.
    with pytest.raises(ValidationError, match="frozen_weights='bf16' needs bf16 autocast"):
        RunSection(frozen_weights="bf16", precision="fp32", use_gpu=True)
    with pytest.raises(ValidationError, match="leave run.frozen_weights at auto"):
        RunSection(frozen_weights="bf16")  # auto precision on a CPU run is fp32
    assert RunSection(frozen_weights="bf16", use_gpu=True).frozen_weights == "bf16"


@pytest.mark.parametrize(("tuning", "cast_nothing"), [("ln", False), ("linear-probe", False), ("full", True)])
def test_only_frozen_parameters_are_cast(tuning, cast_nothing):
    detector = _detector(tuning)
    counts = count_parameters(detector)
    cast = cast_frozen_weights(detector, BF16)
    assert cast == counts.frozen and (cast == 0) == cast_nothing
    for name, param in detector.named_parameters():
        assert param.dtype == (torch.float32 if is_trained_param(name, tuning) else BF16), name
    assert cast_frozen_weights(detector, BF16) == 0  # idempotent
    assert cast_frozen_weights(_detector(tuning), None) == 0


def test_a_step_is_the_same_with_frozen_weights_in_bf16():
    """Autocast rounds fp32 weights to the very bf16 values the cast stores: losses and trained grads match."""
    crops = torch.randint(0, 256, (6, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    results = []
    for cast in (False, True):
        detector = _detector()
        if cast:
            cast_frozen_weights(detector, BF16)
        forward = TrainForward(detector, slerp=True, seed=3)
        trained = [p for p in detector.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trained, lr=0.0)  # keep the weights: compare the gradients
        step = train_step(forward, crops, labels, optimizer, PRESETS["paper"], preprocess=PreprocessConfig(),
                          autocast_dtype=BF16)  # fmt: skip
        assert not step.skipped
        grads = {n: p.grad.float().clone() for n, p in detector.named_parameters() if p.requires_grad}
        results.append((step.losses, grads))
    (losses_a, grads_a), (losses_b, grads_b) = results
    for name, value in losses_a.items():
        assert losses_b[name] == pytest.approx(value, rel=1e-3, abs=1e-4), name
    assert grads_a.keys() == grads_b.keys()
    for name, grad in grads_a.items():
        assert torch.allclose(grads_b[name], grad, rtol=2e-2, atol=1e-4), name
    assert all(g.dtype == torch.float32 for g in grads_b.values())  # trained parameters stay fp32


def test_a_checkpoint_of_a_cast_detector_names_its_fp32_base_and_loads_into_one(tmp_path):
    detector = _detector()
    fp32_base = base_fingerprint(detector)
    cast_frozen_weights(detector, BF16)
    assert detector.base_fingerprint_pin == fp32_base
    assert base_fingerprint(detector) == fp32_base
    with torch.no_grad():
        detector.head.fc.weight.add_(0.5)  # something trained
    manifest = save_checkpoint(detector, tmp_path / "ckpt", preprocess=PreprocessConfig())
    assert manifest.base_fingerprint == fp32_base
    fresh = _detector()
    load_checkpoint(fresh, tmp_path / "ckpt", preprocess=PreprocessConfig())
    assert torch.equal(fresh.head.fc.weight, detector.head.fc.weight)


def test_speed_up_casts_and_compiles_as_the_run_section_says():
    detector = _detector()
    speed_up(detector, RunSection(), None)  # a CPU run on defaults: untouched
    assert all(p.dtype == torch.float32 for p in detector.parameters())
    assert detector.tower._compiled_call_impl is None  # noqa: SLF001 - what nn.Module.compile sets
    speed_up(detector, RunSection(use_gpu=True, compile="default"), BF16)
    assert {p.dtype for p in detector.tower.parameters() if not p.requires_grad} == {BF16}
    assert detector.tower._compiled_call_impl is not None  # noqa: SLF001 - compiled at its first forward
    assert "tower.ln_pre.weight" in dict(detector.named_parameters())  # names (and checkpoints) unchanged
