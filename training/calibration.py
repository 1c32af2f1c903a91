"""Verdict thresholds from a labelled validation set: a pure function of labels and video scores.

The stream labels a video (``clipguard.aggregation.label_for``) ``fake`` when
p_fake >= ``fake``, else ``real`` when p_fake <= ``real``, else ``uncertain``.
:func:`calibrate_thresholds` picks both numbers at target error rates:

* ``fake`` = the lowest observed validation score t with FPR(t) <= target_fpr,
  where FPR(t) = share of real videos with score >= t (ties at t count as false
  positives). When no observed score qualifies (the highest score belongs to a
  real video), the next float above it.
* ``real`` = the highest observed score t with FNR(t) <= target_fnr, where
  FNR(t) = share of fake videos with score <= t; when none qualifies, the next
  float below the lowest score.
* ``real`` is then clamped to ``fake`` if it came out higher (the classes overlap
  so much that both targets cannot hold with an uncertain band); ``real == fake``
  is a plain two-way decision.

Both classes are needed; with one missing it raises ``ValueError`` (never a
made-up threshold). Labels: 1 = fake, 0 = real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from training.eval_metrics import checked_labels_scores


@dataclass(frozen=True)
class Calibration:
    """Chosen thresholds and what they achieve on the validation videos."""

    fake: float  # p_fake >= fake -> 'fake'
    real: float  # p_fake <= real (and < fake) -> 'real'
    target_fpr: float
    target_fnr: float
    fpr: float  # share of real videos labelled 'fake'
    fnr: float  # share of fake videos labelled 'real'
    tpr: float  # share of fake videos labelled 'fake'
    tnr: float  # share of real videos labelled 'real'
    uncertain_real: float  # share of real videos labelled 'uncertain'
    uncertain_fake: float  # share of fake videos labelled 'uncertain'
    clamped: bool  # True when real was lowered to fake
    n_real: int
    n_fake: int

    def to_dict(self) -> dict[str, float | int | bool]:
        """Plain JSON-able dict."""
        return asdict(self)


def _validated(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y, s = checked_labels_scores(labels, scores, purpose="calibration")
    if ((s < 0) | (s > 1)).any():
        msg = "scores must be finite p_fake values within [0, 1]"
        raise ValueError(msg)
    return y, s


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        msg = f"{name} must be within [0, 1], got {value}"
        raise ValueError(msg)


def fake_threshold(real_scores: np.ndarray, candidates: np.ndarray, target_fpr: float) -> float:
    """Lowest candidate t with mean(real_scores >= t) <= target_fpr (next float above the max if none)."""
    for t in np.sort(candidates):
        if np.mean(real_scores >= t) <= target_fpr:
            return float(t)
    top = float(real_scores.max())
    if top >= 1.0:
        msg = f"no threshold <= 1 reaches FPR <= {target_fpr}: real videos score 1.0"
        raise ValueError(msg)
    return float(np.nextafter(top, np.inf))


def real_threshold(fake_scores: np.ndarray, candidates: np.ndarray, target_fnr: float) -> float:
    """Highest candidate t with mean(fake_scores <= t) <= target_fnr (next float below the min if none)."""
    for t in np.sort(candidates)[::-1]:
        if np.mean(fake_scores <= t) <= target_fnr:
            return float(t)
    bottom = float(fake_scores.min())
    if bottom <= 0.0:
        msg = f"no threshold >= 0 reaches FNR <= {target_fnr}: fake videos score 0.0"
        raise ValueError(msg)
    return float(np.nextafter(bottom, -np.inf))


def calibrate_thresholds(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    target_fpr: float = 0.01,
    target_fnr: float | None = None,
) -> Calibration:
    """The stream's ``fake``/``real`` thresholds at target error rates (see the module docstring).

    Args:
        labels: per video, 1 = fake, 0 = real.
        scores: per video p_fake (the aggregated crop scores), in [0, 1].
        target_fpr: largest share of real videos that may be labelled 'fake'.
        target_fnr: largest share of fake videos that may be labelled 'real' (default: ``target_fpr``).

    Returns:
        The thresholds and the rates they achieve on these videos.

    Raises:
        ValueError: a class is missing, bad inputs, or a target outside [0, 1].
    """
    target_fnr = target_fpr if target_fnr is None else target_fnr
    _check_rate("target_fpr", target_fpr)
    _check_rate("target_fnr", target_fnr)
    y, s = _validated(labels, scores)
    reals, fakes = s[y == 0], s[y == 1]
    candidates = np.unique(s)
    fake = fake_threshold(reals, candidates, target_fpr)
    real = real_threshold(fakes, candidates, target_fnr)
    clamped = real > fake
    real = min(real, fake)
    flagged_fake = s >= fake
    flagged_real = (s <= real) & ~flagged_fake
    return Calibration(
        fake=fake,
        real=real,
        target_fpr=float(target_fpr),
        target_fnr=float(target_fnr),
        fpr=float(flagged_fake[y == 0].mean()),
        fnr=float(flagged_real[y == 1].mean()),
        tpr=float(flagged_fake[y == 1].mean()),
        tnr=float(flagged_real[y == 0].mean()),
        uncertain_real=float((~flagged_fake & ~flagged_real)[y == 0].mean()),
        uncertain_fake=float((~flagged_fake & ~flagged_real)[y == 1].mean()),
        clamped=bool(clamped),
        n_real=int(len(reals)),
        n_fake=int(len(fakes)),
    )
