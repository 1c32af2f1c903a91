"""Detection metrics: against scikit-learn on random data, hand-worked cases with ties, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from clipguard.aggregation import aggregate
from training.eval_metrics import (
    auroc,
    detection_metrics,
    eer,
    macro_map,
    tpr_at_fpr,
    video_scores,
)

# Hand-worked: labels 0,0,1,1 with scores 0.1, 0.5 | 0.5, 0.9 (one real/fake tie at 0.5).
# ROC points (fpr, tpr): (0,0) -> (0,.5) [thr .9] -> (.5,1) [thr .5] -> (1,1) [thr .1].
TIE_Y = [0, 0, 1, 1]
TIE_S = [0.1, 0.5, 0.5, 0.9]


def distance_to_roc(fpr, tpr, point) -> float:
    """Distance in the (FPR, FNR) plane from ``point`` to the ROC polyline."""
    a = np.stack([fpr[:-1], 1 - tpr[:-1]], axis=1)
    b = np.stack([fpr[1:], 1 - tpr[1:]], axis=1)
    ab = b - a
    t = np.clip(((point - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0, 1)
    return float(np.linalg.norm(a + t[:, None] * ab - point, axis=1).min())


def random_case(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(2)  # rounding makes ties
    return y, s


def test_auroc_with_ties_counts_half():
    # Pairs (fake, real): (.5,.1)=1 (.5,.5)=.5 (.9,.1)=1 (.9,.5)=1 -> 3.5 / 4.
    assert auroc(TIE_Y, TIE_S) == pytest.approx(0.875)


def test_macro_map_hand_worked_with_ties():
    # AP(fake): thr .9 -> P 1, R .5; thr .5 -> P 2/3, R 1  => .5*1 + .5*2/3 = 5/6.
    # AP(real) on 1 - s is the mirror image: 5/6 too.
    assert macro_map(TIE_Y, TIE_S) == pytest.approx(5 / 6)


def test_eer_interpolates_on_the_roc_hand_worked():
    # FNR - FPR: (0,.5) -> .5, (.5,1) -> -.5; zero halfway: FPR = FNR = .25, threshold .9 + .5 (.5 - .9) = .7.
    rate, threshold = eer(TIE_Y, TIE_S)
    assert rate == pytest.approx(0.25)
    assert threshold == pytest.approx(0.7)


def test_eer_of_perfect_separation_is_zero_at_the_lowest_fake_score():
    rate, threshold = eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert rate == 0.0
    assert threshold == pytest.approx(0.8)


def test_eer_of_inverted_scores_is_one():
    rate, _ = eer([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])
    assert rate == pytest.approx(1.0)


def test_tpr_at_fpr_interpolates_between_roc_points():
    assert tpr_at_fpr(TIE_Y, TIE_S, 0.0) == pytest.approx(0.5)  # top of the vertical segment at FPR 0
    assert tpr_at_fpr(TIE_Y, TIE_S, 0.01) == pytest.approx(0.5 + 0.01 / 0.5 * 0.5)
    assert tpr_at_fpr(TIE_Y, TIE_S, 0.25) == pytest.approx(0.75)
    assert tpr_at_fpr(TIE_Y, TIE_S, 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_sklearn_on_random_data(seed):
    y, s = random_case(seed)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    expected_map = (average_precision_score(y, s) + average_precision_score(1 - y, 1 - s)) / 2
    assert macro_map(y, s) == pytest.approx(expected_map)
    fpr, tpr, _ = roc_curve(y, s)
    rate, _ = eer(y, s)
    # The ROC polyline passes through FPR = FNR = rate (vertical segments included).
    assert distance_to_roc(fpr, tpr, np.array([rate, rate])) < 1e-9
    for target in (0.001, 0.013, 0.047, 0.31):  # off the FPR grid, where np.interp is unambiguous
        assert tpr_at_fpr(y, s, target) == pytest.approx(np.interp(target, fpr, tpr), abs=1e-9)


def test_eer_threshold_sits_between_the_bracketing_roc_thresholds():
    y, s = random_case(5)
    rate, threshold = eer(y, s)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    i = int(np.argmax((1 - tpr) - fpr <= 0))
    assert thresholds[i] <= threshold <= thresholds[i - 1]
    assert 0.0 < rate < 0.5


@pytest.mark.parametrize("fn", [auroc, macro_map, eer, lambda y, s: tpr_at_fpr(y, s, 0.01)])
def test_one_class_missing_is_a_clear_error(fn):
    with pytest.raises(ValueError, match="both classes"):
        fn([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="both classes"):
        fn([0, 0], [0.2, 0.5])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="labels must be"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="one length"):
        auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="target_fpr"):
        tpr_at_fpr([0, 1], [0.1, 0.2], 1.5)


def test_video_scores_mean_and_median_use_the_stream_aggregation():
    ids = ["a", "a", "a", "b", "b"]
    labels = [1, 1, 1, 0, 0]
    scores = [0.9, 0.1, 0.8, 0.2, 0.4]
    mean = video_scores(ids, labels, scores)
    assert mean.video_ids == ("a", "b")
    assert mean.scores.tolist() == [aggregate([0.9, 0.1, 0.8]), pytest.approx(0.3)]
    assert mean.n_crops.tolist() == [3, 2]
    assert video_scores(ids, labels, scores, "median").scores.tolist() == [0.8, pytest.approx(0.3)]


def test_video_with_mixed_crop_labels_is_refused():
    with pytest.raises(ValueError, match="labelled both"):
        video_scores(["a", "a"], [0, 1], [0.1, 0.2])


def test_detection_metrics_video_and_frame_level():
    # Videos: r1 (.1,.3)=.2  r2 (.6)=.6  f1 (.5,.9)=.7  f2 (.4)=.4 -> video AUROC 3/4.
    ids = ["r1", "r1", "r2", "f1", "f1", "f2"]
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.3, 0.6, 0.5, 0.9, 0.4]
    m = detection_metrics(ids, labels, scores)
    assert m.video_auroc == pytest.approx(0.75)
    assert m.frame_auroc == pytest.approx(roc_auc_score(labels, scores))
    assert (m.n_videos, m.n_real_videos, m.n_fake_videos, m.n_crops) == (4, 2, 2, 6)
    assert m.video_eer == pytest.approx(eer([0, 0, 1, 1], [0.2, 0.6, 0.7, 0.4])[0])
    flat = m.to_dict(prefix="val_")
    assert flat["val_video_map"] == m.video_map and "val_video_tpr_at_fpr_1pct" in flat


def test_detection_metrics_refuses_a_split_with_one_class_of_videos():
    with pytest.raises(ValueError, match="both classes"):
        detection_metrics(["a", "b"], [1, 1], [0.2, 0.9])
