"""Frame index selection: the paper's linspace-floor rule and the fps/stride mode."""

from __future__ import annotations

import numpy as np
import pytest

from clipguard.config import SamplingConfig
from clipguard.contracts import VideoInfo
from workers.frame_sampling import sample_indices, stride_indices, uniform_indices


@pytest.mark.parametrize("n_frames", [32, 33, 100, 301, 1000, 9001])
def test_uniform_indices_long_video_equal_paper_linspace_floor(n_frames):
    expected = np.linspace(0, n_frames - 1, 32).astype(int).tolist()
    assert uniform_indices(n_frames, 32) == expected


def test_uniform_indices_include_first_and_last_frame():
    idx = uniform_indices(1000, 32)
    assert idx[0] == 0 and idx[-1] == 999 and len(idx) == 32


def test_uniform_indices_short_video_keep_each_frame_once():
    # linspace-floor would repeat frames 3-4 times each; we keep each once.
    assert np.linspace(0, 9, 32).astype(int).tolist().count(0) > 1
    assert uniform_indices(10, 32) == list(range(10))
    assert uniform_indices(1, 32) == [0]


@pytest.mark.parametrize(("n_frames", "num"), [(0, 32), (10, 0), (-1, 5)])
def test_uniform_indices_non_positive_counts_raise(n_frames, num):
    with pytest.raises(ValueError, match="must be positive"):
        uniform_indices(n_frames, num)


def test_stride_indices_one_per_second_at_25fps():
    assert stride_indices(250, 25.0, 1.0, 32) == list(range(0, 250, 25))


def test_stride_indices_non_integer_rate_floor_each_time():
    idx = stride_indices(300, 29.97, 1.0, 32)
    assert idx == [int(np.floor(k * 29.97)) for k in range(len(idx))]
    assert idx[-1] == 299  # frame on screen at t = 10 s (299.7 frames in)


def test_stride_indices_long_video_capped_and_spread_over_whole_video():
    n = 25 * 3600  # one hour at 25 fps
    idx = stride_indices(n, 25.0, 1.0, 32)
    assert len(idx) == 32
    assert all(i % 25 == 0 for i in idx)  # still on the 1 s grid
    assert idx[0] == 0 and idx[-1] >= 0.99 * n


def test_stride_indices_target_above_video_rate_every_frame():
    assert stride_indices(10, 5.0, 30.0, 32) == list(range(10))


def test_sample_indices_dispatch_on_mode():
    info = VideoInfo(duration_s=40.0, n_frames=1000, fps=25.0, width=64, height=64)
    assert sample_indices(info, SamplingConfig()) == uniform_indices(1000, 32)
    fps_mode = SamplingConfig(mode="fps", fps=2.0, num_frames=500)
    assert sample_indices(info, fps_mode) == [int(k * 12.5) for k in range(80)]  # 40 s at 2 fps
