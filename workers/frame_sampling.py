"""Which frames of a video to look at: pure index arithmetic, no ffmpeg.

Two modes (``SamplingConfig.mode``):

* ``uniform`` (paper, docs/method.md §5): ``np.linspace(0, n_frames - 1, N).astype(int)``,
  i.e. N evenly spread indices rounded down, first and last frame included.
* ``fps``: one frame every ``1 / fps`` seconds from the start (a stride in
  frames), for long videos where a fixed time resolution matters more than a
  fixed count. Capped at ``num_frames``: when the stride gives more candidates,
  ``num_frames`` of them are kept, spread evenly with the same linspace rule, so
  the whole video stays covered and the cost stays bounded.

Repeated indices: when ``n_frames < N`` the paper's linspace-floor repeats
frames (e.g. 10 frames, N = 32 gives each frame about 3 times). We keep each
index once. A repeated frame only adds identical crops: the mean p_fake moves
only by the uneven repeat weights, and the detector would do the same work
several times. A short video therefore yields fewer than N sampled frames, and
``frames_sampled`` in the verdict says so.
"""

from __future__ import annotations

import math

import numpy as np

from clipguard.config import SamplingConfig
from clipguard.contracts import VideoInfo


def uniform_indices(n_frames: int, num_frames: int) -> list[int]:
    """Paper sampling: ``linspace(0, n_frames - 1, num_frames)`` rounded down, deduplicated.

    Args:
        n_frames: Frames in the video (> 0).
        num_frames: Frames wanted (> 0).

    Returns:
        Sorted, unique frame indices in ``[0, n_frames - 1]``; ``min(n_frames,
        num_frames)`` of them.

    Raises:
        ValueError: If either count is not positive.
    """
    _check_positive(n_frames=n_frames, num_frames=num_frames)
    raw = np.linspace(0, n_frames - 1, num_frames).astype(int)
    return [int(i) for i in np.unique(raw)]


def stride_indices(n_frames: int, video_fps: float, target_fps: float, max_frames: int) -> list[int]:
    """One frame every ``1 / target_fps`` seconds, at most ``max_frames`` of them.

    Candidate k is frame ``floor(k * video_fps / target_fps)``, the frame on
    screen at time ``k / target_fps`` in a constant-rate video. A target rate at
    or above the video rate gives every frame.

    Args:
        n_frames: Frames in the video (> 0).
        video_fps: The video's (average) frame rate (> 0).
        target_fps: Sampled frames per second (> 0).
        max_frames: Upper bound on the result length (> 0).

    Returns:
        Sorted, unique frame indices in ``[0, n_frames - 1]``.

    Raises:
        ValueError: If any argument is not positive.
    """
    _check_positive(n_frames=n_frames, video_fps=video_fps, target_fps=target_fps, max_frames=max_frames)
    step = max(1.0, video_fps / target_fps)
    count = math.ceil(n_frames / step)
    # The epsilon keeps an exact k * step from flooring one frame low through rounding error.
    candidates = np.unique(np.floor(np.arange(count) * step + 1e-9).astype(int))
    candidates = candidates[candidates < n_frames]
    if len(candidates) > max_frames:
        candidates = candidates[uniform_indices(len(candidates), max_frames)]
    return [int(i) for i in candidates]


def sample_indices(info: VideoInfo, config: SamplingConfig) -> list[int]:
    """Frame indices to decode for one video under ``config``.

    Args:
        info: The probed video (``n_frames`` and ``fps`` are used).
        config: The sampling section of the configuration.

    Returns:
        Sorted, unique frame indices.

    Raises:
        ValueError: If the video has no frames (the prober refuses those first).
    """
    if config.mode == "uniform":
        return uniform_indices(info.n_frames, config.num_frames)
    return stride_indices(info.n_frames, info.fps, config.fps, config.num_frames)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            msg = f"{name} must be positive, got {value!r}"
            raise ValueError(msg)
