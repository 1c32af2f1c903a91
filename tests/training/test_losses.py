"""Losses against brute-force float64 double loops (docs/method.md §3), edge cases and presets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipguard.errors import ConfigError, NonFiniteLossError
from training.losses import (
    PRESETS,
    LossWeights,
    alignment_loss,
    detector_loss,
    ensure_finite,
    loss_weights,
    nonfinite_terms,
    uniformity_loss,
)


def brute_alignment(z, labels, alpha=2.0):
    z = z.double().tolist()
    total, pairs = 0.0, 0
    for i in range(len(z)):
        for j in range(i + 1, len(z)):
            if labels[i] == labels[j]:
                total += math.sqrt(sum((a - b) ** 2 for a, b in zip(z[i], z[j], strict=True))) ** alpha
                pairs += 1
    return total / pairs if pairs else 0.0


def brute_uniformity(z, t=2.0):
    z = z.double().tolist()
    terms = [
        math.exp(-t * sum((a - b) ** 2 for a, b in zip(z[i], z[j], strict=True)))
        for i in range(len(z))
        for j in range(i + 1, len(z))
    ]
    return math.log(max(1e-6, sum(terms) / len(terms)))


def unit(batch, dim, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, dim, generator=g), dim=-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alignment_and_uniformity_match_brute_force(seed):
    z = unit(9, 16, seed)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1])
    assert alignment_loss(z, labels).item() == pytest.approx(brute_alignment(z, labels.tolist()), rel=1e-5)
    assert uniformity_loss(z).item() == pytest.approx(brute_uniformity(z), rel=1e-5, abs=1e-6)


def test_alignment_has_no_half_factor():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert alignment_loss(z, torch.tensor([1, 1])).item() == pytest.approx(2.0)  # ||e1 - e2||² = 2


def test_one_sample_gives_zero_alignment_and_uniformity():
    z = unit(1, 8, 0).requires_grad_(True)
    labels = torch.tensor([1])
    align, unif = alignment_loss(z, labels), uniformity_loss(z)
    assert align.item() == 0.0 and unif.item() == 0.0
    (align + unif).backward()
    assert torch.isfinite(z.grad).all()


def test_one_class_aligns_over_all_pairs():
    z = unit(6, 5, 3)
    labels = torch.zeros(6, dtype=torch.long)
    assert alignment_loss(z, labels).item() == pytest.approx(brute_alignment(z, [0] * 6), rel=1e-5)


def test_no_same_label_pair_gives_zero_alignment():
    z = unit(2, 5, 4)
    assert alignment_loss(z, torch.tensor([0, 1])).item() == 0.0


def test_identical_vectors_are_finite_with_finite_gradients():
    z = unit(1, 8, 5).repeat(4, 1).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1])
    align, unif = alignment_loss(z, labels), uniformity_loss(z)
    assert align.item() == 0.0
    assert unif.item() == pytest.approx(0.0, abs=1e-7)  # log(mean(exp(0))) = 0
    (align + unif).backward()
    assert torch.isfinite(z.grad).all()


def test_uniformity_floor_bounds_the_log():
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # exp(-40 * 4) underflows below 1e-6
    assert uniformity_loss(z, t=40.0).item() == pytest.approx(math.log(1e-6))


def test_detector_loss_weights_terms_and_reports_each():
    z = unit(6, 8, 6)
    logits = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    weights = loss_weights("paper")
    terms = detector_loss(logits, z, labels, weights)
    ce = F.cross_entropy(logits, labels).item()
    expected = ce + 0.1 * brute_alignment(z, labels.tolist()) + 0.1 * brute_uniformity(z)
    assert terms.ce.item() == pytest.approx(ce, rel=1e-6)
    assert terms.total.item() == pytest.approx(expected, rel=1e-5)
    assert set(terms.as_floats()) == {"ce", "align", "unif", "total"}


def test_presets_match_method_table():
    assert PRESETS["paper"] == LossWeights(ce=1.0, unif=0.1, align=0.1, slerp=True)
    assert PRESETS["gend"] == LossWeights(ce=1.0, unif=0.5, align=0.1, slerp=False)
    assert PRESETS["ce-only"] == LossWeights(ce=1.0, unif=0.0, align=0.0, slerp=True)


def test_loss_weights_overrides_and_explicit_values():
    assert loss_weights("gend", align=0.3) == LossWeights(ce=1.0, unif=0.5, align=0.3, slerp=False)
    assert loss_weights(None, ce=2.0, unif=0.2) == LossWeights(ce=2.0, unif=0.2, align=0.0, slerp=True)
    with pytest.raises(ConfigError, match="unknown loss preset"):
        loss_weights("papper")
    with pytest.raises(ConfigError, match="unknown loss weight"):
        loss_weights("paper", uniformity=0.1)
    with pytest.raises(ConfigError, match="finite and >= 0"):
        LossWeights(ce=float("nan"))


def test_zero_weight_term_cannot_poison_total():
    z = torch.full((3, 4), float("nan"))
    logits = torch.zeros(3, 2)
    terms = detector_loss(logits, z, torch.tensor([0, 0, 1]), loss_weights("ce-only"))
    assert math.isfinite(terms.total.item())
    assert set(nonfinite_terms(terms)) == {"align", "unif"}


def test_ensure_finite_passes_finite_and_rejects_nan():
    z = unit(4, 8, 7)
    labels = torch.tensor([0, 1, 0, 1])
    ok = detector_loss(torch.zeros(4, 2), z, labels, loss_weights("paper"))
    assert ensure_finite(ok) is ok
    bad = detector_loss(torch.tensor([[float("nan"), 0.0]] * 4), z, labels, loss_weights("paper"))
    with pytest.raises(NonFiniteLossError, match="ce=nan") as info:
        ensure_finite(bad)
    assert info.value.kind == "non_finite_loss"
    assert nonfinite_terms(bad) == ("ce", "total")


def test_terms_with_an_autograd_graph_can_be_checked_and_logged():
    # Training losses carry a graph; `dataclasses.asdict` would deep-copy them and raise.
    z = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(3)), dim=-1).requires_grad_()
    logits = torch.randn(4, 2, generator=torch.Generator().manual_seed(4), requires_grad=True)
    terms = detector_loss(logits, z, torch.tensor([0, 1, 0, 1]), loss_weights("paper"))
    assert terms.total.grad_fn is not None
    assert ensure_finite(terms) is terms
    assert nonfinite_terms(terms) == ()
    floats = terms.as_floats()
    assert floats["total"] == pytest.approx(terms.total.item())
    terms.total.backward()  # the graph is intact after the checks
    assert z.grad is not None and logits.grad is not None
