"""Training losses on unit embeddings (docs/method.md §3): CE + label-aware alignment + uniformity.

Alignment and uniformity follow Wang & Isola, "Understanding Contrastive
Representation Learning through Alignment and Uniformity" (arXiv 2005.10242),
with the label-aware alignment of Yermakov et al. (arXiv 2503.19683). Each term
is a small pure function; :func:`detector_loss` combines them with a preset's
weights and returns every term for logging.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from clipguard.errors import ConfigError, NonFiniteLossError

ALIGN_ALPHA = 2.0
UNIFORMITY_T = 2.0
UNIFORMITY_FLOOR = 1e-6


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms, and whether the preset uses slerp augmentation."""

    ce: float = 1.0
    unif: float = 0.0
    align: float = 0.0
    slerp: bool = True

    def __post_init__(self) -> None:
        for name in ("ce", "unif", "align"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                msg = f"loss weight {name} must be finite and >= 0, got {value}"
                raise ConfigError(msg)

    def to_dict(self) -> dict[str, float | bool]:
        """JSON-able form, as recorded in the checkpoint manifest."""
        return asdict(self)


PRESETS: dict[str, LossWeights] = {
    "paper": LossWeights(ce=1.0, unif=0.1, align=0.1, slerp=True),  # released checkpoint, per the authors
    "gend": LossWeights(ce=1.0, unif=0.5, align=0.1, slerp=False),  # WACV follow-up
    "ce-only": LossWeights(ce=1.0, unif=0.0, align=0.0, slerp=True),  # reference example config
}


def loss_weights(preset: str | None = None, **overrides: float | bool) -> LossWeights:
    """Weights of a named preset, with explicit overrides (or explicit values alone).

    Args:
        preset: 'paper', 'gend', 'ce-only', or None to start from CE only.
        **overrides: any of ``ce``, ``unif``, ``align``, ``slerp``.

    Raises:
        ConfigError: unknown preset or field.
    """
    if preset is not None and preset not in PRESETS:
        msg = f"unknown loss preset {preset!r}; choose one of {sorted(PRESETS)}"
        raise ConfigError(msg)
    base = asdict(PRESETS[preset]) if preset is not None else asdict(LossWeights())
    unknown = set(overrides) - set(base)
    if unknown:
        msg = f"unknown loss weight(s) {sorted(unknown)}; known: {sorted(base)}"
        raise ConfigError(msg)
    return LossWeights(**{**base, **overrides})


@dataclass(frozen=True)
class LossTerms:
    """Every term (0-d fp32 tensors) and the weighted total that is optimised."""

    ce: torch.Tensor
    align: torch.Tensor
    unif: torch.Tensor
    total: torch.Tensor

    def values(self) -> dict[str, torch.Tensor]:
        """The terms by name, detached. Not ``dataclasses.asdict``: it deep-copies, which
        raises on tensors that carry an autograd graph (every training loss)."""
        return {f.name: getattr(self, f.name).detach() for f in fields(self)}

    def as_floats(self) -> dict[str, float]:
        """Plain floats for logging (synchronises with the device)."""
        return {name: float(value) for name, value in self.values().items()}


def _pair_sq_dists(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """||z_i - z_j||² for all pairs i<j (computed from differences, exact for equal rows), and i, j."""
    i, j = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    return (z[i] - z[j]).pow(2).sum(dim=-1), i, j


def alignment_loss(z: torch.Tensor, labels: torch.Tensor, alpha: float = ALIGN_ALPHA) -> torch.Tensor:
    """Mean over same-label pairs i<j of ||z_i - z_j||^alpha (no ½); 0 when there is no such pair."""
    z = z.float()
    sq, i, j = _pair_sq_dists(z)
    same = labels[i] == labels[j]
    if not bool(same.any()):
        return z.sum() * 0.0  # zero that keeps the graph (and the device)
    dist_pow = sq[same] if alpha == 2.0 else sq[same].clamp_min(0).pow(alpha / 2.0)
    return dist_pow.mean()


def uniformity_loss(z: torch.Tensor, t: float = UNIFORMITY_T) -> torch.Tensor:
    """log(max(1e-6, mean over pairs i<j of exp(-t ||z_i - z_j||²))); 0 for a batch of one."""
    z = z.float()
    if z.shape[0] < 2:
        return z.sum() * 0.0  # no pair: the term is undefined, contribute nothing
    sq, _, _ = _pair_sq_dists(z)
    return torch.exp(-t * sq).mean().clamp_min(UNIFORMITY_FLOOR).log()


def detector_loss(logits: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, weights: LossWeights) -> LossTerms:
    """L = w_ce·CE + w_align·L_align + w_unif·L_unif on (possibly slerp-augmented) unit embeddings.

    Terms with weight 0 are still computed for logging but left out of the total,
    so they can never poison it.
    """
    ce = F.cross_entropy(logits.float(), labels)
    align = alignment_loss(z, labels)
    unif = uniformity_loss(z)
    total = weights.ce * ce
    if weights.align:
        total = total + weights.align * align
    if weights.unif:
        total = total + weights.unif * unif
    return LossTerms(ce=ce, align=align, unif=unif, total=total)


def nonfinite_terms(terms: LossTerms) -> tuple[str, ...]:
    """Names of the terms that are NaN or infinite (empty when all are finite)."""
    return tuple(name for name, value in terms.values().items() if not bool(torch.isfinite(value).all()))


def ensure_finite(terms: LossTerms) -> LossTerms:
    """Return ``terms`` unchanged, or raise if any term is NaN/inf.

    The training loop calls this before ``backward()``: on
    :class:`NonFiniteLossError` it logs the step and skips it, so a NaN never
    reaches the optimiser.

    Raises:
        NonFiniteLossError: naming the bad terms and their values.
    """
    bad = nonfinite_terms(terms)
    if bad:
        values = ", ".join(f"{name}={float(getattr(terms, name).detach())}" for name in bad)
        msg = f"non-finite loss ({values}); step skipped"
        raise NonFiniteLossError(msg)
    return terms
