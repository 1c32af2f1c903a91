"""Learning-rate schedules: the reference cosine and GenD's warm-up + cosine warm restarts."""

from __future__ import annotations

import math

import pytest

from training.schedules import build_schedule, cosine_lr, gend_lr
from training.train_config import OptimSection

GEND = dict(warmup_steps=10, restart_steps=100, lr=3e-4, lr_min=1e-5, warmup_lr=1e-5)


def test_cosine_runs_from_peak_to_floor():
    kw = dict(total_steps=100, lr=8e-5, lr_min=5e-5)
    assert cosine_lr(0, **kw) == pytest.approx(8e-5)
    assert cosine_lr(50, **kw) == pytest.approx(6.5e-5)  # halfway: the mean of the two
    assert cosine_lr(100, **kw) == pytest.approx(5e-5)
    assert cosine_lr(150, **kw) == pytest.approx(5e-5)  # past the end: stays at the floor
    values = [cosine_lr(s, **kw) for s in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_cosine_quarter_point_matches_the_formula():
    expected = 5e-5 + 3e-5 * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert cosine_lr(25, total_steps=100, lr=8e-5, lr_min=5e-5) == pytest.approx(expected)


def test_gend_warms_up_linearly():
    assert gend_lr(0, **GEND) == pytest.approx(1e-5)
    assert gend_lr(5, **GEND) == pytest.approx(1e-5 + (3e-4 - 1e-5) / 2)
    assert gend_lr(10, **GEND) == pytest.approx(3e-4)  # warm-up done: the peak


def test_gend_restarts_every_period():
    assert gend_lr(10 + 50, **GEND) == pytest.approx((3e-4 + 1e-5) / 2)
    assert gend_lr(10 + 99, **GEND) == pytest.approx(1e-5, rel=1e-2)  # just before the restart: near the floor
    assert gend_lr(10 + 100, **GEND) == pytest.approx(3e-4)  # restart: back to the peak
    assert gend_lr(10 + 150, **GEND) == pytest.approx(gend_lr(10 + 50, **GEND))


def test_gend_without_warmup_starts_at_the_peak():
    assert gend_lr(0, **{**GEND, "warmup_steps": 0}) == pytest.approx(3e-4)


def test_schedules_refuse_bad_steps():
    with pytest.raises(ValueError, match="step"):
        cosine_lr(-1, total_steps=10, lr=1.0, lr_min=0.0)
    with pytest.raises(ValueError, match="total_steps"):
        cosine_lr(0, total_steps=0, lr=1.0, lr_min=0.0)
    with pytest.raises(ValueError, match="restart_steps"):
        gend_lr(0, **{**GEND, "restart_steps": 0})


def test_build_schedule_uses_epochs_and_steps_per_epoch():
    reference = build_schedule(OptimSection(epochs=10, schedule="cosine", lr=8e-5, lr_min=5e-5), steps_per_epoch=20)
    assert reference(0) == pytest.approx(8e-5)
    assert reference(200) == pytest.approx(5e-5)
    gend = build_schedule(
        OptimSection(epochs=20, schedule="gend", lr=3e-4, lr_min=1e-5, warmup_epochs=1, warmup_lr=1e-5,
                     restart_epochs=10),
        steps_per_epoch=20,
    )  # fmt: skip
    assert gend(0) == pytest.approx(1e-5)
    assert gend(20) == pytest.approx(3e-4)  # after one warm-up epoch
    assert gend(20 + 200) == pytest.approx(3e-4)  # ten epochs later: restart
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_schedule(OptimSection(), steps_per_epoch=0)
