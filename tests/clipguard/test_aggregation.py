import pytest

from clipguard.aggregation import aggregate, counted_tracks, label_for, most_suspicious, track_scores, video_score
from clipguard.config import ThresholdConfig, VideoScoreConfig
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


def test_video_score_tracks_pooling_takes_the_most_suspicious_long_enough_track():
    # A group scene: three real faces (4 crops each) and one swapped face (4 crops); one detector flicker.
    tracks = [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4]
    p = [0.1] * 4 + [0.2] * 4 + [0.1] * 4 + [0.8, 0.9, 0.7, 0.8] + [0.99]
    score, top = video_score(tracks, p, VideoScoreConfig(pooling="tracks", min_track_crops=2))
    assert (score, top) == (pytest.approx(0.8), 3)  # the 1-crop flicker (0.99) does not count
    # Averaged over every face, the swapped one is diluted below a 0.6 threshold: the bug this definition avoids.
    assert video_score(tracks, p, VideoScoreConfig(pooling="crops"))[0] == pytest.approx(5.79 / 17)
    assert video_score(tracks, p, VideoScoreConfig(pooling="tracks", min_track_crops=1)) == (0.99, 4)
    median = VideoScoreConfig(pooling="tracks", aggregation="median")
    assert video_score([0, 0, 0], [0.1, 0.2, 0.9], median) == (pytest.approx(0.2), 0)


def test_video_score_counts_short_tracks_when_no_track_is_long_enough():
    two_short = [_cs(0, 0, 0.3), _cs(1, 0, 0.6), _cs(1, 1, 0.8)]
    assert [t.track_id for t in counted_tracks(track_scores(two_short), 5)] == [1]  # the longest
    assert video_score([0, 1, 1], [0.3, 0.6, 0.8], VideoScoreConfig(min_track_crops=5)) == (pytest.approx(0.7), 1)
    with pytest.raises(ValueError, match="zero crops"):
        video_score([], [], VideoScoreConfig())
    with pytest.raises(ValueError, match="track ids"):
        video_score([0], [0.1, 0.2], VideoScoreConfig())
