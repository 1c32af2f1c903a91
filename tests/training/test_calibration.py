"""Verdict thresholds from validation labels and scores: hand-worked cases, ties, edges, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import calibrate_thresholds


def test_calibration_overlapping_classes_clamps_real_to_fake():
    # reals 0.1 0.2 0.3 0.4, fakes 0.35 0.6 0.7 0.9; one real (25 %) may be flagged.
    # fake: 0.1 -> 4/4, 0.2 -> 3/4, 0.3 -> 2/4, 0.35 -> 1/4 <= 0.25: fake = 0.35.
    # real: 0.9 -> 4/4 fakes <= t, 0.7 -> 3/4, 0.6 -> 2/4, 0.4 -> 1/4: real = 0.4 > fake, clamped to 0.35.
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.4, 0.35, 0.6, 0.7, 0.9]
    cal = calibrate_thresholds(labels, scores, target_fpr=0.25, target_fnr=0.25)
    assert (cal.fake, cal.real, cal.clamped) == (0.35, 0.35, True)
    assert (cal.fpr, cal.tpr, cal.fnr, cal.tnr) == (0.25, 1.0, 0.0, 0.75)
    assert (cal.uncertain_real, cal.uncertain_fake, cal.n_real, cal.n_fake) == (0.0, 0.0, 4, 4)


def test_calibration_separated_classes_leave_an_uncertain_band():
    cal = calibrate_thresholds([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], target_fpr=0.0)
    assert (cal.fake, cal.real, cal.clamped) == (0.7, 0.3, False)  # lowest fake score; highest real score
    assert (cal.fpr, cal.fnr, cal.tpr, cal.tnr) == (0.0, 0.0, 1.0, 1.0)
    assert cal.target_fnr == 0.0  # defaults to the target FPR


def test_calibration_ties_count_against_the_threshold():
    # Two reals and two fakes tie at 0.5. t = 0.5 would flag 2/3 reals (> 1/3): fake moves up to 0.9.
    # real = 0.5 would call 2/3 fakes real: real moves down to 0.2. The tied videos stay uncertain.
    cal = calibrate_thresholds([0, 0, 0, 1, 1, 1], [0.2, 0.5, 0.5, 0.5, 0.5, 0.9], target_fpr=0.34, target_fnr=0.34)
    assert (cal.fake, cal.real) == (0.9, 0.2)
    assert (cal.fpr, cal.fnr) == (0.0, 0.0)
    assert cal.uncertain_real == pytest.approx(2 / 3) and cal.uncertain_fake == pytest.approx(2 / 3)


def test_calibration_top_score_real_gives_the_next_float_above_it():
    cal = calibrate_thresholds([0, 0, 1, 1], [0.1, 0.95, 0.5, 0.6], target_fpr=0.0, target_fnr=0.5)
    assert cal.fake == np.nextafter(0.95, 1.0) and cal.fpr == 0.0 and cal.tpr == 0.0
    assert cal.real == 0.5 and cal.fnr == 0.5  # highest t with at most half the fakes <= t


def test_calibration_meets_its_targets_and_fake_is_the_lowest_such_score():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(300, int), np.ones(200, int)]
    scores = np.clip(np.r_[rng.normal(0.35, 0.15, 300), rng.normal(0.65, 0.15, 200)], 0, 1).round(3)  # ties
    cal = calibrate_thresholds(labels, scores, target_fpr=0.05, target_fnr=0.02)
    reals, fakes = scores[labels == 0], scores[labels == 1]
    assert cal.fpr <= 0.05 and cal.fnr <= 0.02 and cal.real <= cal.fake
    lower = scores[scores < cal.fake]
    assert lower.size and (reals >= lower.max()).mean() > 0.05  # the next lower observed score breaks the target
    assert cal.fpr == (reals >= cal.fake).mean() and cal.tpr == (fakes >= cal.fake).mean()


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1]])
def test_calibration_one_class_missing_is_an_error(labels):
    with pytest.raises(ValueError, match="both classes"):
        calibrate_thresholds(labels, [0.5] * len(labels))


@pytest.mark.parametrize(
    ("labels", "scores", "kwargs", "message"),
    [
        ([0, 1], [0.2, 0.8], {"target_fpr": 1.5}, "target_fpr"),
        ([0, 1], [0.2, 0.8], {"target_fpr": 0.1, "target_fnr": -0.1}, "target_fnr"),
        ([0, 1], [0.2, float("nan")], {}, "finite"),
        ([0, 2], [0.2, 0.8], {}, "labels must be"),
        ([0, 1], [0.2], {}, "one length"),
        ([0, 1], [1.0, 0.8], {"target_fpr": 0.0}, "score 1.0"),
        ([0, 1], [0.2, 0.0], {"target_fpr": 0.0}, "score 0.0"),
    ],
)
def test_calibration_bad_inputs_are_refused(labels, scores, kwargs, message):
    with pytest.raises(ValueError, match=message):
        calibrate_thresholds(labels, scores, **kwargs)
