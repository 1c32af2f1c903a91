"""Decode the sampled frames of one video with ffmpeg: RGB, upright, downscaled early.

Pipeline per job: resolve the source -> probe (limits checked) -> choose frame
indices -> decode only those frames -> :class:`SampledFrame` list.

Two decode strategies, picked by frame count (``SamplingConfig.select_max_frames``):

* ``select`` (short videos): one ffmpeg pass with a ``select`` filter on the
  decoder's frame counter ``n``. Exact frame indices whatever the timestamps
  (VFR-safe); every frame is decoded but only the chosen ones are scaled,
  converted and copied out.
* ``seek`` (long videos): one ffmpeg call per index, seeking (input ``-ss``,
  accurate: decode from the previous keyframe, drop until the target) to
  ``(index - 0.5) / fps`` so the first frame kept is frame ``index`` of a
  constant-rate video. For VFR videos the index is nominal (time x average fps).
  A 10-minute video costs 32 short decodes, never a full one. MPEG-TS/PS have
  no keyframe index, so their seeks start ``SEEK_PREROLL_S`` early and a
  ``select`` on time drops the frames before the target; a decoded frame later
  than its target (keyframes sparser than that) is logged.

Filter chain: [select] -> showinfo (the true timestamp of each frame) ->
scale to ``max_side`` with area averaging -> rotation. Rotation is applied by
us, after the downscale, with ``-noautorotate`` (so a 4K portrait video is
shrunk before it is transposed, and the behaviour does not depend on the CLI
default). Python only ever holds downscaled frames.

A shortfall (fewer frames than asked, e.g. the index ran past a truncated end)
is logged with the video id and kept; zero frames is :class:`CorruptVideoError`.
All ffmpeg calls of one video share the ``SourceConfig.timeout_s`` budget.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Literal

import ffmpeg
import numpy as np

from clipguard.config import SamplingConfig, SourceConfig
from clipguard.contracts import SampledFrame, VideoInfo, VideoJob
from clipguard.errors import CorruptVideoError, DecodeError
from workers.ffmpeg_process import run_with_timeout, stderr_tail
from workers.frame_sampling import sample_indices
from workers.video_probe import ProbeResult, classify_failure, probe_video
from workers.video_source import ResolvedSource, VideoSourceResolver

logger = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
_SHOWINFO = re.compile(r"Parsed_showinfo.*?\bn:\s*\d+\s+pts:\s*\S+\s+pts_time:\s*(\S+)")
_ROTATION_FILTERS: dict[int, tuple[tuple[str, dict[str, str]], ...]] = {
    0: (),
    90: (("transpose", {"dir": "clock"}),),
    180: (("hflip", {}), ("vflip", {})),
    270: (("transpose", {"dir": "cclock"}),),
}

DecodeMethod = Literal["select", "seek"]
Size = tuple[int, int]  # (width, height)

# Demuxers that seek by bisecting on timestamps rather than through a keyframe
# index; seeks into them start SEEK_PREROLL_S early and drop frames up to the target.
_UNINDEXED_FORMATS = ("mpegts", "mpeg")
SEEK_PREROLL_S = 10.0


@dataclass(frozen=True)
class DecodedVideo:
    """The decoder stage's output for one video.

    Attributes:
        video_id: The job's video ID.
        info: What the probe found (upright size, frame count...).
        frames: Decoded frames in index order (may be fewer than requested).
        requested_indices: The indices sampling asked for.
        method: ``select`` or ``seek``.
        timings_s: ``probe`` and ``decode`` wall-clock seconds.
    """

    video_id: str
    info: VideoInfo
    frames: tuple[SampledFrame, ...]
    requested_indices: tuple[int, ...]
    method: DecodeMethod
    timings_s: dict[str, float] = field(default_factory=dict)


class FrameDecoder:
    """Resolves, probes and decodes videos; the Ray decoder actor wraps one of these.

    Args:
        source: Where videos may come from, limits and the time limit.
        sampling: How many frames, which ones, and the maximum frame side.
        resolver: Source resolver; default ``VideoSourceResolver(source)``.
    """

    def __init__(self, source: SourceConfig, sampling: SamplingConfig, resolver: VideoSourceResolver | None = None):
        self._source = source
        self._sampling = sampling
        self._resolver = resolver if resolver is not None else VideoSourceResolver(source)

    def decode(self, job: VideoJob) -> DecodedVideo:
        """Decode the sampled frames of ``job``'s video.

        Args:
            job: The video to read.

        Returns:
            The probe result and the decoded frames.

        Raises:
            ClipguardError: A typed error (``InvalidVideoIdError``,
                ``DisallowedSourceError`` or a ``DecodeError`` subclass) for any
                bad input; never a hang past the time limit.
        """
        start = time.monotonic()
        source = self._resolver.resolve(job)
        probe = probe_video(source, self._source)
        probed = time.monotonic()
        indices = sample_indices(probe.info, self._sampling)
        method = self.choose_method(probe.info)
        frames = self.decode_frames(source, probe, indices, method=method)
        done = time.monotonic()
        logger.info(
            "video %r: %d/%d frames by %s (%dx%d, %d frames, rotation %d) in %.2fs",
            job.video_id,
            len(frames),
            len(indices),
            method,
            probe.info.width,
            probe.info.height,
            probe.info.n_frames,
            probe.info.rotation,
            done - start,
        )
        return DecodedVideo(
            video_id=job.video_id,
            info=probe.info,
            frames=tuple(frames),
            requested_indices=tuple(indices),
            method=method,
            timings_s={"probe": probed - start, "decode": done - probed},
        )

    def choose_method(self, info: VideoInfo) -> DecodeMethod:
        """``select`` for videos of at most ``select_max_frames`` frames, else ``seek``."""
        return "select" if info.n_frames <= self._sampling.select_max_frames else "seek"

    def decode_frames(
        self,
        source: ResolvedSource,
        probe: ProbeResult,
        indices: list[int],
        *,
        method: DecodeMethod = "select",
    ) -> list[SampledFrame]:
        """Decode ``indices`` (sorted, unique) of an already probed source.

        Args:
            source: The resolved location.
            probe: Its probe result.
            indices: Frame indices to decode.
            method: ``select`` (one pass) or ``seek`` (one call per index).

        Returns:
            The decoded frames, in index order.

        Raises:
            CorruptVideoError: Nothing could be decoded.
            DecodeTimeoutError: The shared time budget ran out.
            DecodeError: Other ffmpeg failures, classified.
        """
        deadline = time.monotonic() + self._source.timeout_s
        size = output_size(probe.coded_width, probe.coded_height, self._sampling.max_side)
        if method == "select":
            frames = self._decode_select(source, probe, indices, size, deadline)
        else:
            frames = self._decode_seek(source, probe, indices, size, deadline)
        if not frames:
            msg = f"video {source.video_id!r} ({source.display}): ffmpeg decoded none of {len(indices)} sampled frames"
            raise CorruptVideoError(msg)
        if len(frames) < len(indices):
            logger.warning(
                "video %r: decoded %d of %d sampled frames (video shorter than its header says?)",
                source.video_id,
                len(frames),
                len(indices),
            )
        return frames

    def _decode_select(
        self, source: ResolvedSource, probe: ProbeResult, indices: list[int], size: Size, deadline: float
    ) -> list[SampledFrame]:
        expr = "+".join(f"eq(n,{i})" for i in indices)
        args = self._command(source, probe, size, select=expr, n_frames=len(indices))
        images, times = self._run(source, args, size, probe.info.rotation, deadline)
        if len(images) > len(indices):
            msg = f"video {source.video_id!r}: ffmpeg returned {len(images)} frames for {len(indices)} indices"
            raise DecodeError(msg)
        # select emits frames in stream order, so output k is the k-th requested index.
        return [
            SampledFrame(index=i, timestamp_s=_timestamp(t, i, probe.info.fps), image=img)
            for i, img, t in zip(indices, images, times, strict=False)
        ]

    def _decode_seek(
        self, source: ResolvedSource, probe: ProbeResult, indices: list[int], size: Size, deadline: float
    ) -> list[SampledFrame]:
        fps = probe.info.fps
        # Without a keyframe index the demuxer may land after the keyframe that
        # precedes the target, and decoding would resume only at the next one.
        preroll = SEEK_PREROLL_S if probe.format_name in _UNINDEXED_FORMATS else 0.0
        frames = []
        for index in indices:
            # Half a frame early, so rounding cannot land on the next frame.
            target_s = max(0.0, (index - 0.5) / fps)
            seek_s = max(0.0, target_s - preroll)
            select = f"gte(t,{target_s - seek_s:.6f})" if target_s > seek_s else None
            args = self._command(source, probe, size, select=select, seek_s=seek_s, n_frames=1)
            images, times = self._run(source, args, size, probe.info.rotation, deadline)
            if not images:
                logger.warning("video %r: nothing decoded at frame %d (%.3fs)", source.video_id, index, target_s)
                continue
            # Without -copyts the output timeline starts at the seek point.
            stamp = seek_s + times[0] if times[0] is not None else None
            if stamp is not None and stamp - index / fps > 1.5 / fps:
                logger.warning(
                    "video %r: seek to frame %d (%.3fs) decoded a frame at %.3fs; keyframes sparser than the preroll?",
                    source.video_id,
                    index,
                    index / fps,
                    stamp,
                )
            frames.append(SampledFrame(index=index, timestamp_s=_timestamp(stamp, index, fps), image=images[0]))
        return frames

    def _command(
        self,
        source: ResolvedSource,
        probe: ProbeResult,
        size: Size,
        *,
        n_frames: int,
        select: str | None = None,
        seek_s: float | None = None,
    ) -> list[str]:
        options: dict[str, str | None] = dict(source.input_options(self._source.timeout_s))
        options["noautorotate"] = None  # rotation is ours, after the downscale
        if seek_s is not None:
            options["ss"] = f"{seek_s:.6f}"
        stream = ffmpeg.input(source.location, **options)[str(probe.stream_index)]
        if select is not None:
            stream = stream.filter("select", select)
        stream = stream.filter("showinfo")
        if size != (probe.coded_width, probe.coded_height):
            stream = stream.filter("scale", size[0], size[1], flags="area")
        for name, kwargs in _ROTATION_FILTERS[probe.info.rotation]:
            stream = stream.filter(name, **kwargs)
        out = stream.output(
            "pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough", **{"frames:v": n_frames}
        )
        args = out.compile(cmd=FFMPEG)
        return [args[0], "-nostdin", "-nostats", "-hide_banner", "-loglevel", "info", *args[1:]]

    def _run(
        self, source: ResolvedSource, args: list[str], size: Size, rotation: int, deadline: float
    ) -> tuple[list[np.ndarray], list[float | None]]:
        result = run_with_timeout(
            args, timeout_s=deadline - time.monotonic(), video_id=source.video_id, what="ffmpeg decode"
        )
        if result.returncode != 0:
            raise classify_failure(source, result, stage="decode")
        width, height = (size[1], size[0]) if rotation in (90, 270) else size
        frame_bytes = width * height * 3
        count, rest = divmod(len(result.stdout), frame_bytes)
        # ffmpeg may push one more frame through the graph before -frames:v stops
        # it, so showinfo can log more frames than were written, never fewer.
        times = [_float_or_none(m.group(1)) for m in _SHOWINFO.finditer(result.stderr)][:count]
        if rest or len(times) != count:
            msg = (
                f"video {source.video_id!r}: ffmpeg output {len(result.stdout)} bytes and {len(times)} timestamps, "
                f"not whole {width}x{height} frames; stderr: {stderr_tail(result.stderr)}"
            )
            raise DecodeError(msg)
        buf = np.frombuffer(result.stdout, dtype=np.uint8).reshape(count, height, width, 3)
        # Copies, so each frame owns its memory and the big buffer can go.
        return [buf[k].copy() for k in range(count)], times


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size of a ``width x height`` picture downscaled so its longer side is at most ``max_side``.

    Never upscales; keeps the aspect ratio (rounded, at least 1 pixel).
    """
    scale = min(1.0, max_side / max(width, height))
    if scale == 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _timestamp(pts_time: float | None, index: int, fps: float) -> float:
    # Frames without a timestamp get the nominal time of their index.
    return pts_time if pts_time is not None and math.isfinite(pts_time) else index / fps


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
