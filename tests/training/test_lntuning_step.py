"""One optimiser step on a tiny detector changes only LayerNorm and head tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipguard.errors import ModelError
from clipguard.model import DetectorConfig, apply_ln_tuning, build_detector, count_parameters, is_layernorm_param
from clipguard.model.lntuning import is_trained_param


@pytest.fixture
def detector():
    torch.manual_seed(0)
    return build_detector(DetectorConfig(arch="ViT-Tiny-test", pretrained="none"))


def test_one_adamw_step_changes_only_layernorm_and_head(detector):
    before = {name: p.detach().clone() for name, p in detector.named_parameters()}
    optimiser = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    x = torch.randn(4, 3, 224, 224)
    y = torch.tensor([0, 1, 0, 1])

    loss = F.cross_entropy(detector(x).logits, y)
    loss.backward()
    optimiser.step()

    changed = {name for name, p in detector.named_parameters() if not torch.equal(p.detach(), before[name])}
    trained = {name for name, _ in detector.named_parameters() if is_trained_param(name)}
    assert changed == trained
    assert all(p.grad is None for p in detector.parameters() if not p.requires_grad)
    # 4 blocks x (ln_1, ln_2) + ln_pre + ln_post = 10 LayerNorms x (weight, bias), plus the head's 2 tensors.
    assert len(trained) == 10 * 2 + 2


def test_apply_ln_tuning_is_idempotent_and_refreezes(detector):
    first = apply_ln_tuning(detector)
    for p in detector.parameters():
        p.requires_grad_(True)
    assert count_parameters(detector).trainable == first.total
    second = apply_ln_tuning(detector)
    third = apply_ln_tuning(detector)
    assert first == second == third
    assert first.trainable == first.layernorm + first.head
    assert first.layernorm == 10 * 2 * 128 and first.head == 128 * 2 + 2


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ln_pre.weight", True),
        ("ln_post.bias", True),
        ("transformer.resblocks.11.ln_1.weight", True),
        ("tower.transformer.resblocks.0.ln_2.bias", True),
        ("transformer.resblocks.0.attn.in_proj_weight", False),
        ("transformer.resblocks.0.mlp.c_fc.weight", False),
        ("conv1.weight", False),
        ("class_embedding", False),
        ("kiln_1.weight", False),
    ],
)
def test_is_layernorm_param_names(name, expected):
    assert is_layernorm_param(name) is expected


def test_layernorm_the_predicate_misses_raises_model_error(detector):
    detector.tower.extra_norm = nn.LayerNorm(4)  # a LayerNorm whose name the predicate does not know
    with pytest.raises(ModelError, match="predicate disagrees"):
        apply_ln_tuning(detector)
