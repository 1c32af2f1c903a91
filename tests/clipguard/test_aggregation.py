import pytest

from clipguard.aggregation import aggregate, label_for, most_suspicious, track_scores
from clipguard.config import ThresholdConfig
from clipguard.contracts import CropScore


def _cs(track, frame, p):
    return CropScore("v", frame, track, (0, 0, 1, 1), 0.9, p)


def test_aggregate_is_the_mean_of_probabilities_not_logits():
    assert aggregate([0.9, 0.1, 0.2]) == pytest.approx(0.4)
    assert aggregate([0.9, 0.1, 0.2], "median") == pytest.approx(0.2)
    with pytest.raises(ValueError):
        aggregate([])


def test_track_scores_and_most_suspicious_track():
    scores = [_cs(0, 0, 0.2), _cs(1, 0, 0.9), _cs(0, 5, 0.4), _cs(1, 5, 0.7)]
    tracks = track_scores(scores)
    assert [(t.track_id, round(t.p_fake, 6), t.n_crops, t.first_frame, t.last_frame) for t in tracks] == [
        (0, 0.3, 2, 0, 5),
        (1, 0.8, 2, 0, 5),
    ]
    assert most_suspicious(tracks) == 1
    assert most_suspicious(()) is None


@pytest.mark.parametrize(
    ("p", "label"), [(0.0, "real"), (0.4, "real"), (0.5, "uncertain"), (0.6, "fake"), (1.0, "fake")]
)
def test_label_for_thresholds(p, label):
    assert label_for(p, ThresholdConfig(fake=0.6, real=0.4)) == label


def test_threshold_config_rejects_crossed_bounds():
    with pytest.raises(ValueError):
        ThresholdConfig(fake=0.3, real=0.5)
