"""Slerp latent augmentation within each class (docs/method.md §4), training only.

Each unit embedding is replaced by a point on the great circle towards a random
embedding of the same class; batch size and labels are unchanged, and the losses
and head see the augmented embeddings.
"""

from __future__ import annotations

import torch

DOT_EPS = 1e-7  # dot product clamped to [-1 + eps, 1 - eps] so theta and sin(theta) stay > 0


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of unit rows: sin((1-t)θ)/sin θ · a + sin(tθ)/sin θ · b.

    Args:
        a, b: (N, D) unit vectors.
        t: (N,) interpolation positions; t=0 gives a, t=1 gives b.

    Returns:
        (N, D) in fp32 (or the inputs' wider float type). Identical or opposite rows
        stay finite thanks to the clamp: for a == b the result is a.
    """
    a = a.float() if a.dtype in (torch.float16, torch.bfloat16) else a
    b = b.to(a.dtype)
    t = t.to(a.dtype).unsqueeze(-1)
    dot = (a * b).sum(dim=-1, keepdim=True).clamp(-1.0 + DOT_EPS, 1.0 - DOT_EPS)
    theta = torch.arccos(dot)
    sin_theta = torch.sin(theta)
    return torch.sin((1.0 - t) * theta) / sin_theta * a + torch.sin(t * theta) / sin_theta * b


def slerp_within_class(
    z: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    t_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Replace each embedding by a slerp towards a random same-class partner.

    For each class with at least two samples: a random permutation of its samples
    gives each one a partner (self-pairs allowed), t ~ U(t0, t1) per sample.
    Samples of a class seen once are returned unchanged.

    Args:
        z: (B, D) unit embeddings (any device).
        labels: (B,) integer labels.
        generator: a CPU ``torch.Generator``; the same seed gives the same batch.
        t_range: (t0, t1) of the uniform draw of t.

    Returns:
        (B, D) augmented embeddings, differentiable with respect to ``z``.
    """
    t0, t1 = t_range
    if not 0.0 <= t0 <= t1 <= 1.0:
        msg = f"t_range must satisfy 0 <= t0 <= t1 <= 1, got {t_range}"
        raise ValueError(msg)
    partner = torch.arange(z.shape[0])
    t = torch.zeros(z.shape[0], dtype=torch.float64)
    labels_cpu = labels.detach().to("cpu")
    for cls in torch.unique(labels_cpu, sorted=True).tolist():
        members = torch.nonzero(labels_cpu == cls, as_tuple=False).flatten()
        if members.numel() < 2:
            continue
        partner[members] = members[torch.randperm(members.numel(), generator=generator)]
        t[members] = t0 + (t1 - t0) * torch.rand(members.numel(), generator=generator, dtype=torch.float64)
    augmented = slerp(z, z[partner.to(z.device)], t.to(z.device))
    return augmented.to(z.dtype)
