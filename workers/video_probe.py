"""ffprobe a resolved source into a :class:`VideoInfo`, enforcing the limits first.

Everything that can be refused from the header is refused here, before any
frame is decoded: no video stream, declared size above ``max_pixels``,
duration above ``max_duration_s``, file above ``max_file_bytes``.

Frame count: ffprobe's ``nb_frames`` comes from the container index (mp4's
sample table) and is exact there, but Matroska/WebM and some streams have none,
and a crafted header can lie. When it is missing, or disagrees with
duration x frame rate by more than half, the packets of the video stream are
counted (``-count_packets``: a demux-only pass, no decoding, bounded by
``timeout_s`` like every call). Video packets are frames for every codec we
meet in practice.

Frame rate: ``avg_frame_rate``, unless it disagrees with frames / duration by
more than 5 % (Matroska VFR files report a nominal 25 or 1000 fps); then the
measured average is used.

Rotation: the display matrix side data, mirrored from ffmpeg's own autorotate
logic: ``VideoInfo.rotation`` is the clockwise turn (0/90/180/270) that makes
the decoded picture upright, and width/height are the upright size.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from clipguard.config import SourceConfig
from clipguard.contracts import VideoInfo
from clipguard.errors import (
    ClipguardError,
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
from workers.ffmpeg_process import ProcessResult, run_with_timeout, stderr_tail
from workers.video_source import ResolvedSource

logger = logging.getLogger(__name__)

FFPROBE = "ffprobe"
_AVERROR_INVALIDDATA = -1094995529
_AVERROR_ENOENT = -2
_AVERROR_ETIMEDOUT = -110
_AVERROR_EIO = -5  # what ffmpeg's http protocol returns for a redirect past max_redirects (0)
_FPS_TOLERANCE = 0.05
_COUNT_TOLERANCE = 0.5

# Leading bytes of the containers we accept; a file that starts like one of
# them but cannot be read is corrupt (e.g. truncated), otherwise not a video.
_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (4, b"skip"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM (EBML)
    (0, b"RIFF"),
    (0, b"FLV"),
    (0, b"OggS"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"\x30\x26\xb2\x75"),  # ASF
)
_TS_PACKET = 188  # MPEG-TS: sync byte 0x47 at the start of every 188-byte packet


@dataclass(frozen=True)
class ProbeResult:
    """The probe's answer: the public :class:`VideoInfo` plus what decoding needs.

    Attributes:
        info: Duration, frame count, fps, upright size, rotation, codec.
        stream_index: Absolute index of the chosen video stream.
        coded_width: Width of decoded pictures before rotation.
        coded_height: Height of decoded pictures before rotation.
        format_name: The demuxer ffprobe used.
        frame_count_method: ``header`` (``nb_frames``) or ``counted`` (packets).
        pix_fmt: The stream's pixel format (``yuv420p``...), which decides what NVDEC can decode.
    """

    info: VideoInfo
    stream_index: int
    coded_width: int
    coded_height: int
    format_name: str
    frame_count_method: Literal["header", "counted"]
    pix_fmt: str = ""


def probe_video(source: ResolvedSource, config: SourceConfig) -> ProbeResult:
    """Probe ``source`` and check it against the configured limits.

    Args:
        source: A location that passed :class:`~workers.video_source.VideoSourceResolver`.
        config: Limits and the per-call time limit.

    Returns:
        The :class:`ProbeResult`.

    Raises:
        VideoNotFoundError, NotAVideoError, NoVideoStreamError, CorruptVideoError,
        VideoTooLongError, VideoTooLargeError, DecodeTimeoutError,
        DisallowedSourceError, DecodeError: As classified from ffprobe's answer.
    """
    vid = source.video_id
    data = _run_ffprobe(source, config, ["-show_error", "-show_format", "-show_streams"], what="ffprobe")
    stream = _pick_video_stream(data, vid)
    index = int(stream["index"])
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if width <= 0 or height <= 0:
        msg = f"video {vid!r}: video stream {index} declares no picture size"
        raise CorruptVideoError(msg)
    if width * height > config.max_pixels:
        msg = f"video {vid!r}: {width}x{height} exceeds max_pixels={config.max_pixels}"
        raise VideoTooLargeError(msg)
    fmt = data.get("format", {})
    size_bytes = source.size_bytes if source.size_bytes is not None else _as_int(fmt.get("size"))
    if size_bytes is not None and size_bytes > config.max_file_bytes:
        msg = f"video {vid!r}: {size_bytes} bytes exceeds max_file_bytes={config.max_file_bytes}"
        raise VideoTooLargeError(msg)
    duration = _as_float(stream.get("duration")) or _as_float(fmt.get("duration"))
    _check_duration(duration, config, vid)
    rate = _as_rate(stream.get("avg_frame_rate")) or _as_rate(stream.get("r_frame_rate"))

    n_frames = _as_int(stream.get("nb_frames"))
    method: Literal["header", "counted"] = "header"
    if not _count_plausible(n_frames, duration, rate):
        logger.info(
            "video %r: nb_frames=%s unusable (duration=%s, fps=%s); counting packets", vid, n_frames, duration, rate
        )
        n_frames = _count_packets(source, config, index)
        method = "counted"
    if not n_frames:
        msg = f"video {vid!r}: video stream {index} has no frames"
        raise CorruptVideoError(msg)
    if duration is None:
        if rate is None:
            msg = f"video {vid!r}: neither duration nor frame rate is known"
            raise CorruptVideoError(msg)
        duration = n_frames / rate
        _check_duration(duration, config, vid)
    fps = _effective_fps(rate, n_frames, duration)
    rotation = _rotation(stream, vid)
    upright = (height, width) if rotation in (90, 270) else (width, height)
    info = VideoInfo(
        duration_s=duration,
        n_frames=n_frames,
        fps=fps,
        width=upright[0],
        height=upright[1],
        rotation=rotation,
        codec=str(stream.get("codec_name", "")),
    )
    return ProbeResult(
        info=info,
        stream_index=index,
        coded_width=width,
        coded_height=height,
        format_name=str(fmt.get("format_name", "")),
        frame_count_method=method,
        pix_fmt=str(stream.get("pix_fmt", "")),
    )


def classify_failure(
    source: ResolvedSource, result: ProcessResult, *, stage: str, error: dict | None = None
) -> ClipguardError:
    """Map a failed ffprobe/ffmpeg call to the typed error a verdict should carry.

    Args:
        source: What was being read (for the message and the signature sniff).
        result: The finished process.
        stage: ``ffprobe`` (nothing known yet) or ``decode`` (the probe passed,
            so unreadable data now means corrupt rather than not-a-video).
        error: ffprobe's ``-show_error`` object, when there is one.

    Returns:
        The error to raise; the message carries the video id, the source and
        the last stderr lines.
    """
    code = _as_int((error or {}).get("code"))
    text = f"{(error or {}).get('string', '')}\n{result.stderr}".lower()
    tail = stderr_tail(result.stderr) if result.stderr.strip() else (error or {}).get("string", "no output")
    where = f"video {source.video_id!r} ({source.display}): {stage} failed (exit {result.returncode})"
    msg = f"{where}: {tail}"
    if "not on whitelist" in text and "protocol" in text:
        return DisallowedSourceError(msg)
    if not source.is_local and (code == _AVERROR_EIO or "input/output error" in text):
        return DisallowedSourceError(f"{where}: the server answered with a redirect, which is not followed "
                                     f"(its target was never checked); publish the final URL: {tail}")  # fmt: skip
    if "format not on whitelist" in text:
        return NotAVideoError(f"{where}: not a supported video container: {tail}")
    if code == _AVERROR_ENOENT or "no such file" in text or "404 not found" in text or "410 gone" in text:
        return VideoNotFoundError(msg)
    if code == _AVERROR_ETIMEDOUT or "timed out" in text:
        return DecodeTimeoutError(msg)
    if code == _AVERROR_INVALIDDATA or "invalid data found" in text or "moov atom not found" in text:
        if stage != "ffprobe" or _looks_like_container(source):
            return CorruptVideoError(msg)
        return NotAVideoError(msg)
    return DecodeError(msg)


def _run_ffprobe(source: ResolvedSource, config: SourceConfig, show: list[str], *, what: str) -> dict[str, Any]:
    args = [FFPROBE, "-v", "error", "-hide_banner"]
    for key, value in source.input_options(config.timeout_s).items():
        args += [f"-{key}", value]
    args += [*show, "-of", "json", source.location]
    result = run_with_timeout(args, timeout_s=config.timeout_s, video_id=source.video_id, what=what)
    try:
        data = json.loads(result.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError as exc:
        msg = f"video {source.video_id!r}: {what} printed unreadable JSON: {stderr_tail(result.stderr)}"
        raise DecodeError(msg) from exc
    if result.returncode != 0 or "error" in data:
        raise classify_failure(source, result, stage="ffprobe", error=data.get("error"))
    return data


def _pick_video_stream(data: dict[str, Any], vid: str) -> dict[str, Any]:
    for stream in data.get("streams", []):
        # Cover art in audio files is a one-picture "video" stream: not a video.
        if stream.get("codec_type") == "video" and not stream.get("disposition", {}).get("attached_pic"):
            return stream
    kinds = sorted({str(s.get("codec_type")) for s in data.get("streams", [])}) or ["none"]
    msg = f"video {vid!r}: no video stream (streams: {', '.join(kinds)})"
    raise NoVideoStreamError(msg)


def _count_packets(source: ResolvedSource, config: SourceConfig, index: int) -> int:
    data = _run_ffprobe(
        source,
        config,
        ["-count_packets", "-select_streams", str(index), "-show_entries", "stream=nb_read_packets"],
        what="ffprobe -count_packets",
    )
    streams = data.get("streams", [])
    if not streams:
        return 0
    return _as_int(streams[0].get("nb_read_packets")) or 0


def _count_plausible(n_frames: int | None, duration: float | None, rate: float | None) -> bool:
    if not n_frames or n_frames <= 0:
        return False
    if duration is None or rate is None:
        return True
    expected = duration * rate
    return abs(n_frames - expected) <= max(2.0, _COUNT_TOLERANCE * expected)


def _effective_fps(rate: float | None, n_frames: int, duration: float) -> float:
    measured = n_frames / duration if duration > 0 else None
    if rate is not None and (measured is None or abs(rate - measured) <= _FPS_TOLERANCE * measured):
        return rate
    if measured is None:
        # One frame and no duration: any positive rate gives the same single index.
        return rate if rate is not None else 1.0
    return measured


def _rotation(stream: dict[str, Any], vid: str) -> int:
    for side in stream.get("side_data_list", []) or []:
        if side.get("side_data_type") == "Display Matrix" and side.get("rotation") is not None:
            # As ffmpeg's autorotate: theta = -rotation, normalised to [0, 360).
            theta = (-float(side["rotation"])) % 360.0
            snapped = int(round(theta / 90.0)) % 4 * 90
            if abs(((theta - snapped + 180.0) % 360.0) - 180.0) > 1.0:
                logger.warning("video %r: display rotation %.1f is not a multiple of 90; using %d", vid, theta, snapped)
            return snapped
    return 0


def _check_duration(duration: float | None, config: SourceConfig, vid: str) -> None:
    if duration is not None and duration > config.max_duration_s:
        msg = f"video {vid!r}: duration {duration:.1f}s exceeds max_duration_s={config.max_duration_s:g}"
        raise VideoTooLongError(msg)


def _looks_like_container(source: ResolvedSource) -> bool:
    if source.local_path is None:
        return False
    with source.local_path.open("rb") as fh:
        head = fh.read(_TS_PACKET + 1)
    if len(head) > _TS_PACKET and head[0] == head[_TS_PACKET] == 0x47:
        return True
    return any(head[off : off + len(sig)] == sig for off, sig in _SIGNATURES)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out > 0 else None


def _as_rate(value: Any) -> float | None:
    if not isinstance(value, str) or "/" not in value:
        return _as_float(value)
    num, _, den = value.partition("/")
    try:
        rate = float(num) / float(den)
    except (ValueError, ZeroDivisionError):
        return None
    return rate if rate > 0 else None
