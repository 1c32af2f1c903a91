"""ffprobe -> VideoInfo: frame counts, rotation, limits before decoding, error classification."""

from __future__ import annotations

import time

import pytest

from clipguard.config import SourceConfig
from clipguard.contracts import VideoJob
from clipguard.errors import (
    CorruptVideoError,
    DecodeError,
    DecodeTimeoutError,
    DisallowedSourceError,
    NotAVideoError,
    NoVideoStreamError,
    VideoNotFoundError,
    VideoTooLargeError,
    VideoTooLongError,
)
from tests import video_factory as vf
from workers.ffmpeg_process import ProcessResult
from workers.video_probe import classify_failure, probe_video
from workers.video_source import ResolvedSource, VideoSourceResolver


def probe(root, video_id, **limits):
    config = SourceConfig(video_root=root, **limits)
    source = VideoSourceResolver(config).resolve(VideoJob(video_id=video_id))
    return probe_video(source, config)


def probe_url(url, **limits):
    config = SourceConfig(allow_private_hosts=True, **limits)
    source = VideoSourceResolver(config).resolve(VideoJob(video_id="remote", uri=url))
    return probe_video(source, config)


def test_probe_mp4_reads_header_frame_count_and_geometry(tmp_path):
    vf.make_numbered_video(tmp_path / "n.mp4", n_frames=100, fps=25)
    result = probe(tmp_path, "n.mp4")
    info = result.info
    assert (info.n_frames, info.fps, info.width, info.height, info.rotation) == (100, 25.0, 192, 16, 0)
    assert info.duration_s == pytest.approx(4.0) and info.codec == "h264"
    assert result.frame_count_method == "header" and "mp4" in result.format_name


def test_probe_vfr_matroska_counts_packets_and_measures_fps(tmp_path):
    vf.make_vfr_video(tmp_path / "v.mkv", n_frames=100)
    result = probe(tmp_path, "v.mkv")
    assert result.frame_count_method == "counted"
    assert result.info.n_frames == 100
    # The header claims 25 fps; the real average is 100 frames over the stretched duration.
    assert result.info.fps == pytest.approx(100 / result.info.duration_s)
    assert result.info.fps < 20


def test_probe_webm_without_nb_frames_counts_packets(tmp_path):
    vf.make_numbered_video(tmp_path / "n.webm", n_frames=30, fps=25)
    result = probe(tmp_path, "n.webm")
    assert result.frame_count_method == "counted" and result.info.n_frames == 30


@pytest.mark.parametrize(
    ("tag", "rotation", "size"), [(90, 270, (96, 160)), (270, 90, (96, 160)), (180, 180, (160, 96))]
)
def test_probe_rotated_video_reports_upright_size(tmp_path, tag, rotation, size):
    # ffmpeg 5.1 stores rotate=90 as a display matrix that autorotate undoes
    # with a counter-clockwise turn, i.e. 270 degrees clockwise.
    vf.make_rotated_video(tmp_path / "r.mp4", rotation=tag)
    result = probe(tmp_path, "r.mp4")
    assert result.info.rotation == rotation
    assert (result.info.width, result.info.height) == size
    assert (result.coded_width, result.coded_height) == (160, 96)


def test_probe_odd_sized_video(tmp_path):
    vf.make_odd_sized_video(tmp_path / "odd.mp4", 333, 201)
    info = probe(tmp_path, "odd.mp4").info
    assert (info.width, info.height, info.n_frames) == (333, 201, 10)


def test_probe_audio_only_raises_no_video_stream(tmp_path):
    vf.make_audio_only(tmp_path / "a.mp4")
    with pytest.raises(NoVideoStreamError, match="streams: audio"):
        probe(tmp_path, "a.mp4")


@pytest.mark.parametrize("name", ["notes.mp4", "notes.mkv", "notes.txt"])
def test_probe_text_file_raises_not_a_video(tmp_path, name):
    vf.make_text_as_video(tmp_path / name)
    with pytest.raises(NotAVideoError):
        probe(tmp_path, name)


@pytest.mark.parametrize("name", ["still.png", "still.mp4"])
def test_probe_still_image_raises_not_a_video(tmp_path, name):
    vf.make_image_file(tmp_path / name)
    with pytest.raises(NotAVideoError):
        probe(tmp_path, name)


def test_probe_truncated_mp4_raises_corrupt(tmp_path):
    vf.make_truncated_video(tmp_path / "t.mp4")
    with pytest.raises(CorruptVideoError) as err:
        probe(tmp_path, "t.mp4")
    assert "'t.mp4'" in str(err.value) and "moov atom not found" in str(err.value)  # stderr tail in the message


def test_probe_huge_declared_size_raises_too_large_before_decoding(tmp_path):
    vf.make_huge_declared_video(tmp_path / "h.mov", 16000, 16000)
    start = time.monotonic()
    with pytest.raises(VideoTooLargeError, match="16000x16000 exceeds max_pixels"):
        probe(tmp_path, "h.mov")
    assert time.monotonic() - start < 5


def test_probe_max_pixels_is_configurable(tmp_path):
    vf.make_numbered_video(tmp_path / "n.mp4", n_frames=5)
    with pytest.raises(VideoTooLargeError):
        probe(tmp_path, "n.mp4", max_pixels=192 * 16 - 1)
    assert probe(tmp_path, "n.mp4", max_pixels=192 * 16).info.width == 192


def test_probe_long_video_raises_too_long(tmp_path):
    vf.make_long_video(tmp_path / "long.mp4", duration_s=7200, fps=0.1)
    with pytest.raises(VideoTooLongError, match="7200.0s exceeds max_duration_s=3600"):
        probe(tmp_path, "long.mp4", max_duration_s=3600)
    assert probe(tmp_path, "long.mp4").info.n_frames == 720  # default limit: 4 h


def test_probe_over_http_reads_the_same_info(tmp_path):
    vf.make_numbered_video(tmp_path / "n.mp4", n_frames=50, extra=("-movflags", "+faststart"))
    with vf.serve_directory(tmp_path) as base:
        info = probe_url(f"{base}/n.mp4").info
    assert (info.n_frames, info.width) == (50, 192)


def test_probe_http_404_raises_not_found(tmp_path):
    with vf.serve_directory(tmp_path) as base:
        with pytest.raises(VideoNotFoundError, match="404"):
            probe_url(f"{base}/missing.mp4")


def test_probe_http_size_limit_uses_reported_size(tmp_path):
    vf.make_numbered_video(tmp_path / "n.mp4", n_frames=50, extra=("-movflags", "+faststart"))
    with vf.serve_directory(tmp_path) as base:
        with pytest.raises(VideoTooLargeError, match="max_file_bytes"):
            probe_url(f"{base}/n.mp4", max_file_bytes=100)


def test_probe_unresponsive_server_times_out_and_is_killed(tmp_path):
    with vf.hanging_server() as url:
        start = time.monotonic()
        with pytest.raises(DecodeTimeoutError) as err:
            probe_url(url, timeout_s=1.0)
        elapsed = time.monotonic() - start
    assert elapsed < 4.0
    assert err.value.kind == "timeout" and "remote" in str(err.value)


def _result(stderr, rc=1):
    return ProcessResult(returncode=rc, stdout=b"", stderr=stderr, elapsed_s=0.1)


@pytest.mark.parametrize(
    ("stderr", "error", "expected"),
    [
        ("[http @ 0x1] Protocol 'http' not on whitelist 'file'!", None, DisallowedSourceError),
        ("[png_pipe @ 0x1] Format not on whitelist 'mov'", {"code": -22}, NotAVideoError),
        ("x: No such file or directory", {"code": -2}, VideoNotFoundError),
        ("[http @ 0x1] HTTP error 404 Not Found\nServer returned 404 Not Found", None, VideoNotFoundError),
        ("Connection timed out", {"code": -110}, DecodeTimeoutError),
        ("Invalid data found when processing input", {"code": -1094995529}, NotAVideoError),
        ("Server returned 403 Forbidden (access denied)", None, DecodeError),
    ],
)
def test_classify_failure_maps_ffprobe_messages(stderr, error, expected):
    source = ResolvedSource(video_id="v9", location="http://h/x", protocol_whitelist="http", display="http://h/x")
    err = classify_failure(source, _result(stderr), stage="ffprobe", error=error)
    assert type(err) is expected
    assert "v9" in err.message


def test_classify_failure_invalid_data_after_probe_is_corrupt():
    source = ResolvedSource(video_id="v9", location="http://h/x", protocol_whitelist="http", display="http://h/x")
    err = classify_failure(source, _result("Invalid data found when processing input"), stage="decode")
    assert isinstance(err, CorruptVideoError)
