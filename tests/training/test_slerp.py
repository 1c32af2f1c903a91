"""Slerp latent augmentation (docs/method.md §4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.slerp import slerp, slerp_within_class


def unit(batch, dim, seed):
    return F.normalize(torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def brute_slerp(a, b, t):
    a, b = a.double(), b.double()
    dot = max(-1 + 1e-7, min(1 - 1e-7, float((a * b).sum())))
    theta = math.acos(dot)
    return math.sin((1 - t) * theta) / math.sin(theta) * a + math.sin(t * theta) / math.sin(theta) * b


def test_slerp_matches_formula_and_endpoints():
    a, b = unit(5, 7, 0), unit(5, 7, 1)
    t = torch.tensor([0.0, 0.25, 0.5, 0.8, 1.0])
    out = slerp(a, b, t)
    for k in range(5):
        torch.testing.assert_close(out[k].double(), brute_slerp(a[k], b[k], t[k].item()), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[0], a[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[4], b[4], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5), atol=1e-5, rtol=0)


def test_slerp_midpoint_of_orthogonal_vectors():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(slerp(a, b, torch.tensor([0.5])), torch.tensor([[1.0, 1.0]]) / math.sqrt(2))


def test_slerp_identical_and_opposite_vectors_stay_finite():
    a = unit(3, 6, 2).requires_grad_(True)
    same = slerp(a, a, torch.tensor([0.1, 0.5, 0.9]))
    torch.testing.assert_close(same, a.detach(), atol=1e-6, rtol=0)
    same.sum().backward()
    assert torch.isfinite(a.grad).all()
    opposite = slerp(a.detach(), -a.detach(), torch.tensor([0.2, 0.5, 0.7]))
    assert torch.isfinite(opposite).all()


def test_within_class_with_t_one_permutes_each_class():
    z = unit(8, 4, 3)
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 1, 2])
    out = slerp_within_class(z, labels, torch.Generator().manual_seed(0), t_range=(1.0, 1.0))
    for cls in (0, 1):
        members = (labels == cls).nonzero().flatten()
        # every output row of class c is (up to float error) some input row of class c, each used once
        dists = torch.cdist(out[members], z[members])
        assert (dists.min(dim=1).values < 1e-4).all()
        assert sorted(dists.argmin(dim=1).tolist()) == sorted(set(dists.argmin(dim=1).tolist()))
    torch.testing.assert_close(out[7], z[7], atol=0, rtol=0)  # singleton class unchanged


def test_within_class_replaces_features_keeps_shape_and_unit_norm():
    z = unit(16, 8, 4)
    labels = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(1))
    out = slerp_within_class(z, labels, torch.Generator().manual_seed(2))
    assert out.shape == z.shape and out.dtype == z.dtype
    assert not torch.allclose(out, z)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(16), atol=1e-5, rtol=0)


def test_within_class_stays_on_the_arc_between_same_class_vectors():
    z = unit(2, 8, 5)
    labels = torch.tensor([3, 3])
    out = slerp_within_class(z, labels, torch.Generator().manual_seed(0), t_range=(0.3, 0.3))
    # each row is either itself (self-pair) or 30% of the way to the other one
    for k in range(2):
        candidates = [brute_slerp(z[k], z[m], 0.3).float() for m in range(2)]
        assert min((out[k] - c).abs().max().item() for c in candidates) < 1e-5


def test_within_class_is_deterministic_per_generator_seed():
    z = unit(12, 8, 6)
    labels = torch.tensor([0, 1] * 6)
    a = slerp_within_class(z, labels, torch.Generator().manual_seed(7))
    b = slerp_within_class(z, labels, torch.Generator().manual_seed(7))
    c = slerp_within_class(z, labels, torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)


def test_within_class_gradient_flows_and_is_finite_for_identical_rows():
    z = unit(1, 8, 7).repeat(4, 1).requires_grad_(True)
    out = slerp_within_class(z, torch.zeros(4, dtype=torch.long), torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_within_class_keeps_bf16_dtype():
    z = unit(6, 8, 8).to(torch.bfloat16)
    out = slerp_within_class(z, torch.tensor([0, 0, 0, 1, 1, 1]), torch.Generator().manual_seed(0))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_within_class_rejects_bad_t_range():
    with pytest.raises(ValueError, match="t_range"):
        slerp_within_class(unit(2, 4, 0), torch.tensor([0, 0]), torch.Generator(), t_range=(0.8, 0.2))
