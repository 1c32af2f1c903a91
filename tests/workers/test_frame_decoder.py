"""ffmpeg decoding of the sampled frames: exact indices, timestamps, scale, rotation, errors, time limits."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from clipguard.config import SamplingConfig, SourceConfig
from clipguard.contracts import VideoJob
from clipguard.errors import (
    ConfigError,
    CorruptVideoError,
    DecodeTimeoutError,
    DisallowedSourceError,
    InvalidVideoIdError,
    NotAVideoError,
    NoVideoStreamError,
    VideoNotFoundError,
    VideoTooLargeError,
    VideoTooLongError,
)
from tests import video_factory as vf
from workers.ffmpeg_process import run_with_timeout, stderr_tail
from workers.frame_decoder import FrameDecoder, output_size
from workers.frame_sampling import uniform_indices
from workers.video_probe import probe_video
from workers.video_source import VideoSourceResolver


def decode(root, video_id, *, uri=None, source=None, **sampling):
    decoder = FrameDecoder(source or SourceConfig(video_root=root), SamplingConfig(**sampling))
    return decoder.decode(VideoJob(video_id=video_id, uri=uri))


def numbers(frames):
    return [vf.read_frame_number(f.image) for f in frames]


def test_select_mode_returns_exactly_the_linspace_frames(tmp_path):
    vf.make_numbered_video(tmp_path / "n.mp4", n_frames=300, fps=25)
    out = decode(tmp_path, "n.mp4")
    expected = np.linspace(0, 299, 32).astype(int).tolist()
    assert out.method == "select"
    assert list(out.requested_indices) == expected
    assert [f.index for f in out.frames] == expected
    assert numbers(out.frames) == expected  # the pixels are those frames
    assert [f.timestamp_s for f in out.frames] == pytest.approx([i / 25 for i in expected], abs=1e-6)
    assert all(f.image.dtype == np.uint8 and f.image.shape == (16, 192, 3) for f in out.frames)
    assert set(out.timings_s) == {"probe", "decode"}


@pytest.mark.parametrize("name", ["n.mp4", "n.mkv", "n.ts"])  # mpegts: no keyframe index, seeks with preroll
def test_seek_mode_returns_exact_frames_across_keyframe_intervals(tmp_path, name):
    vf.make_numbered_video(tmp_path / name, n_frames=300, fps=25, gop=40)
    out = decode(tmp_path, name, num_frames=9, select_max_frames=100)
    expected = uniform_indices(300, 9)
    assert out.method == "seek"
    assert [f.index for f in out.frames] == expected
    assert numbers(out.frames) == expected
    assert [f.timestamp_s for f in out.frames] == pytest.approx([i / 25 for i in expected], abs=1e-3)


def test_vfr_video_frames_are_exact_and_timestamps_are_real(tmp_path):
    vf.make_vfr_video(tmp_path / "v.mkv", n_frames=100)
    out = decode(tmp_path, "v.mkv", num_frames=16)
    expected = uniform_indices(100, 16)
    assert numbers(out.frames) == expected

    def pts(n):  # the timestamps make_vfr_video wrote
        return n / 25 + ((n - 50) * (n - 49) * 0.02 if n >= 50 else 0.0)

    assert [f.timestamp_s for f in out.frames] == pytest.approx([pts(i) for i in expected], abs=2e-3)


def test_webm_frames_are_exact(tmp_path):
    vf.make_numbered_video(tmp_path / "n.webm", n_frames=40, fps=25)
    out = decode(tmp_path, "n.webm", num_frames=8)
    assert numbers(out.frames) == uniform_indices(40, 8)


def test_fps_mode_takes_one_frame_per_interval(tmp_path):
    vf.make_numbered_video(tmp_path / "n.mp4", n_frames=100, fps=25)
    out = decode(tmp_path, "n.mp4", mode="fps", fps=5.0)
    assert numbers(out.frames) == list(range(0, 100, 5))


def test_short_video_yields_each_frame_once(tmp_path):
    vf.make_numbered_video(tmp_path / "n.mp4", n_frames=10, fps=25)
    out = decode(tmp_path, "n.mp4", num_frames=32)
    assert numbers(out.frames) == list(range(10))


def test_large_video_is_downscaled_to_max_side(tmp_path):
    vf.make_large_video(tmp_path / "hd.mp4", 1920, 1080, n_frames=3)
    out = decode(tmp_path, "hd.mp4", max_side=640)
    assert (out.info.width, out.info.height) == (1920, 1080)  # the original size is still reported
    assert all(f.image.shape == (360, 640, 3) for f in out.frames)


def test_odd_sized_video_scales_with_rounding_and_never_upscales(tmp_path):
    vf.make_odd_sized_video(tmp_path / "odd.mp4", 333, 201)
    assert decode(tmp_path, "odd.mp4", max_side=100).frames[0].image.shape == (60, 100, 3)
    assert decode(tmp_path, "odd.mp4", max_side=1280).frames[0].image.shape == (201, 333, 3)


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((1920, 1080), 1280, (1280, 720)),
        ((1080, 1920), 640, (360, 640)),
        ((100, 50), 640, (100, 50)),
        ((5000, 1), 64, (64, 1)),
    ],
)
def test_output_size(size, max_side, expected):
    assert output_size(*size, max_side) == expected


def _first_frame_by_ffmpeg(path: Path, shape: tuple[int, int, int], *options: str) -> np.ndarray:
    """Reference: the first frame as the plain ffmpeg CLI decodes it (autorotated unless disabled)."""
    cmd = ["ffmpeg", "-v", "error", *options, "-i", str(path), "-frames:v", "1"]
    raw = subprocess.run([*cmd, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(shape)


@pytest.mark.parametrize(("tag", "turns"), [(90, 1), (180, 2), (270, -1)])
def test_rotated_video_frames_are_upright_like_ffmpeg_autorotate(tmp_path, tag, turns):
    path = vf.make_rotated_video(tmp_path / "r.mp4", rotation=tag)
    out = decode(tmp_path, "r.mp4", num_frames=1)
    frame = out.frames[0].image
    assert frame.shape == (out.info.height, out.info.width, 3)
    assert np.abs(frame.astype(int) - _first_frame_by_ffmpeg(path, frame.shape)).mean() < 2.0
    # The stored picture is 160x96; upright is that turned counter-clockwise `turns` times (np.rot90).
    stored = _first_frame_by_ffmpeg(path, (96, 160, 3), "-noautorotate")
    assert np.abs(frame.astype(int) - np.rot90(stored, turns)).mean() < 2.0
    assert np.abs(frame.astype(int) - np.rot90(stored, turns + 2)).mean() > 20.0  # not upside down


def test_rotated_video_is_downscaled_before_rotation(tmp_path):
    vf.make_rotated_video(tmp_path / "r.mp4", rotation=90)
    out = decode(tmp_path, "r.mp4", num_frames=1, max_side=80)
    assert out.frames[0].image.shape == (80, 48, 3)


def test_decode_over_http_returns_exact_frames(tmp_path):
    vf.make_numbered_video(tmp_path / "n.mp4", n_frames=60, extra=("-movflags", "+faststart"))
    with vf.serve_directory(tmp_path) as base:
        out = decode(
            tmp_path, "remote", uri=f"{base}/n.mp4", num_frames=6, source=SourceConfig(allow_private_hosts=True)
        )
    assert numbers(out.frames) == uniform_indices(60, 6)


@pytest.mark.parametrize(
    ("make", "name", "error"),
    [
        (vf.make_audio_only, "audio.mp4", NoVideoStreamError),
        (vf.make_zero_byte, "zero.mp4", NotAVideoError),
        (vf.make_text_as_video, "text.mp4", NotAVideoError),
        (vf.make_image_file, "image.png", NotAVideoError),
        (vf.make_truncated_video, "trunc.mp4", CorruptVideoError),
        (vf.make_huge_declared_video, "huge.mov", VideoTooLargeError),
        (vf.make_fifo, "fifo.mp4", NotAVideoError),
    ],
)
def test_bad_inputs_raise_typed_errors_quickly(tmp_path, make, name, error):
    make(tmp_path / name)
    start = time.monotonic()
    with pytest.raises(error) as err:
        decode(tmp_path, name)
    assert time.monotonic() - start < 5
    assert name in str(err.value)


@pytest.mark.parametrize("select_max_frames", [3000, 10])
def test_truncated_media_data_gives_the_frames_that_exist(tmp_path, caplog, select_max_frames):
    vf.make_truncated_video(tmp_path / "cut.mp4", keep=0.5, index_first=True, n_frames=200)
    out = decode(tmp_path, "cut.mp4", num_frames=6, select_max_frames=select_max_frames)
    assert 0 < len(out.frames) < 6
    assert numbers(out.frames) == [f.index for f in out.frames] == list(out.requested_indices[: len(out.frames)])
    assert "decoded" in caplog.text and "cut.mp4" in caplog.text


def test_long_video_refused_before_decoding(tmp_path):
    vf.make_long_video(tmp_path / "long.mp4")
    with pytest.raises(VideoTooLongError):
        decode(tmp_path, "long.mp4", source=SourceConfig(video_root=tmp_path, max_duration_s=600))


@pytest.mark.parametrize(
    ("video_id", "uri", "error"),
    [
        ("missing.mp4", None, VideoNotFoundError),
        ("../etc/passwd", None, InvalidVideoIdError),
        ("v1", "concat:a.mp4|b.mp4", DisallowedSourceError),
    ],
)
def test_bad_ids_raise_typed_errors(tmp_path, video_id, uri, error):
    with pytest.raises(error):
        decode(tmp_path, video_id, uri=uri)


def test_decode_past_time_limit_raises_timeout(tmp_path):
    vf.make_numbered_video(tmp_path / "n.mp4", n_frames=300, fps=25, gop=40)
    config = SourceConfig(video_root=tmp_path)
    source = VideoSourceResolver(config).resolve(VideoJob(video_id="n.mp4"))
    probe = probe_video(source, config)
    tight = FrameDecoder(SourceConfig(video_root=tmp_path, timeout_s=0.05), SamplingConfig())
    start = time.monotonic()
    with pytest.raises(DecodeTimeoutError, match="exceeded|no time left"):
        tight.decode_frames(source, probe, uniform_indices(300, 32), method="seek")
    assert time.monotonic() - start < 2


def test_run_with_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(DecodeTimeoutError, match="exceeded 0.5s"):
        run_with_timeout(
            ["sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"], timeout_s=0.5, video_id="v1", what="test"
        )
    assert time.monotonic() - start < 3
    child = int(pid_file.read_text())
    time.sleep(0.1)
    status = Path(f"/proc/{child}/status")
    # Gone, or a zombie waiting for a reaper: either way no longer running.
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_run_with_timeout_returns_nonzero_exit_without_raising():
    result = run_with_timeout(["sh", "-c", "echo oops >&2; exit 3"], timeout_s=5, video_id="v1", what="test")
    assert result.returncode == 3 and "oops" in result.stderr


def test_run_with_timeout_missing_binary_raises_config_error():
    with pytest.raises(ConfigError, match="not installed"):
        run_with_timeout(["/nonexistent/ffmpeg"], timeout_s=5, video_id="v1", what="test")


def test_stderr_tail_drops_per_frame_lines():
    text = "a\n[Parsed_showinfo_1 @ 0x1] n: 0 pts: 0\nb\n\nc\n"
    assert stderr_tail(text, lines=2) == "b | c"
    assert os.linesep not in stderr_tail(text)
