"""A video's sampled frames as ONE device tensor: NVDEC (PyNvVideoCodec) on a GPU node, ffmpeg + one upload elsewhere.

Both decoders run today's source checks first and sample the same frame
indices as :class:`workers.frame_decoder.FrameDecoder`: resolve the ID (video
root, schemes, hosts) -> ``probe_video`` (ffprobe limits: size, duration,
pixels, time limit) -> ``sample_indices`` -> decode. A bad video therefore
gets the same typed error on both paths; what only NVDEC can fail at (it
rejects the bitstream, or decodes none of the sampled frames) is a
:class:`CorruptVideoError`, the kind ffmpeg's "decoded none of N sampled
frames" gets on the CPU path.

:class:`NvdecFrameDecoder` hands NVDEC only what NVDEC decodes: local files
whose codec and pixel format the hardware takes (``NVDEC_FORMATS``). Remote
sources (their ffmpeg input options confine redirects, hosts and protocols)
and other formats (e.g. H.264 4:4:4) are decoded by ffmpeg and uploaded once;
that rule is logged at start and each such video is logged with its reason.

On NVDEC frames go straight to GPU memory; rotation and the ``max_side``
downscale (antialiased bilinear) run on the device. Each decode thread keeps
its own decoder open (``reconfigure_decoder`` for the next file, as NVIDIA's
samples do) and its own CUDA stream, and synchronises it before handing the
frames on. Timestamps are nominal (index / fps). PyNvVideoCodec is imported
lazily: it is not installed on CPU machines.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipguard.config import SamplingConfig, SourceConfig
from clipguard.contracts import VideoInfo, VideoJob
from clipguard.errors import ConfigError, CorruptVideoError
from workers.frame_decoder import FrameDecoder, output_size
from workers.frame_sampling import sample_indices
from workers.video_probe import ProbeResult, probe_video
from workers.video_source import ResolvedSource, VideoSourceResolver

logger = logging.getLogger(__name__)

# Codec -> pixel formats NVDEC decodes (Hopper; H.264 4:4:4 and 4:2:2 are not among them).
NVDEC_FORMATS: dict[str, frozenset[str]] = {
    "h264": frozenset({"yuv420p", "yuvj420p"}),
    "hevc": frozenset({"yuv420p", "yuvj420p", "yuv420p10le", "yuv444p", "yuv444p10le"}),
    "av1": frozenset({"yuv420p", "yuv420p10le"}),
    "vp9": frozenset({"yuv420p", "yuv420p10le"}),
}
# clockwise turn that makes the picture upright -> torch.rot90 k over (H, W)
_ROT90_K = {0: 0, 90: -1, 180: 2, 270: 1}

Prober = Callable[[ResolvedSource, SourceConfig], ProbeResult]


@dataclass(frozen=True)
class DeviceFrames:
    """One video's sampled frames on a device.

    Attributes:
        video_id: The job's video ID.
        info: What the probe found (upright size, frame count, fps...).
        frames: uint8 (F, H, W, 3) RGB, upright, downscaled to ``max_side``.
        indices: The frame index of each row of ``frames``.
        timestamps_s: Seconds of each frame.
        requested_indices: The indices sampling asked for.
        decoder: ``nvdec`` or ``ffmpeg``.
        timings_s: ``probe`` and ``decode`` wall-clock seconds.
    """

    video_id: str
    info: VideoInfo
    frames: torch.Tensor
    indices: tuple[int, ...]
    timestamps_s: tuple[float, ...]
    requested_indices: tuple[int, ...]
    decoder: str
    timings_s: dict[str, float] = field(default_factory=dict)


def nvdec_unavailable_reason(device: torch.device) -> str | None:
    """Why NVDEC cannot decode onto ``device`` here (None: it can)."""
    if device.type != "cuda":
        return f"the device is {device}, not a CUDA device"
    if not torch.cuda.is_available():
        return "CUDA is not available (torch.cuda.is_available() is False)"
    try:
        importlib.import_module("PyNvVideoCodec")
    except ImportError as exc:  # OSError-like load failures of its libraries surface as ImportError
        return f"PyNvVideoCodec cannot be imported: {exc}"
    return None


def upload(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host uint8 frames to ``device`` once (pinned, non-blocking on CUDA)."""
    tensor = torch.from_numpy(frames)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class FfmpegTensorDecoder:
    """:class:`FrameDecoder` (ffmpeg on the CPU) whose frames are uploaded to ``device`` as one tensor.

    Args:
        decoder: The CPU decoder (its source checks, probe and sampling are used as they are).
        device: Where the frames go.
    """

    def __init__(self, decoder: FrameDecoder, device: torch.device) -> None:
        self.decoder = decoder
        self.device = device

    def decode_frames(self, job: VideoJob) -> DeviceFrames:
        """Decode ``job``'s sampled frames with ffmpeg and upload them.

        Raises:
            ClipguardError: as :meth:`FrameDecoder.decode`.
        """
        decoded = self.decoder.decode(job)
        start = time.monotonic()
        frames = upload(np.stack([f.image for f in decoded.frames]), self.device)
        timings = dict(decoded.timings_s)
        timings["decode"] = timings.get("decode", 0.0) + time.monotonic() - start
        return DeviceFrames(
            video_id=job.video_id,
            info=decoded.info,
            frames=frames,
            indices=tuple(f.index for f in decoded.frames),
            timestamps_s=tuple(f.timestamp_s for f in decoded.frames),
            requested_indices=decoded.requested_indices,
            decoder="ffmpeg",
            timings_s=timings,
        )

    def decode_probed(self, source: ResolvedSource, probe: ProbeResult, indices: list[int]) -> list:
        """Frames of an already probed source (for :class:`NvdecFrameDecoder`'s ffmpeg route)."""
        return self.decoder.decode_frames(source, probe, indices, method=self.decoder.choose_method(probe.info))


class NvdecFrameDecoder:
    """Source checks, then NVDEC decode of the sampled frames straight into GPU memory.

    Args:
        source: Where videos may come from, limits and the time limit.
        sampling: How many frames, which ones, and the maximum frame side.
        device: The CUDA device NVDEC decodes onto.
        resolver: Source resolver; default ``VideoSourceResolver(source)``.
        prober: The probe (default ``probe_video``: ffprobe with the limits).
        nvc: The PyNvVideoCodec module (default: imported now; tests pass a fake
            because NVDEC cannot run without a GPU).

    Raises:
        ConfigError: PyNvVideoCodec or CUDA is missing (when ``nvc`` is not given).
    """

    def __init__(
        self,
        source: SourceConfig,
        sampling: SamplingConfig,
        device: torch.device,
        *,
        resolver: VideoSourceResolver | None = None,
        prober: Prober = probe_video,
        nvc: ModuleType | Any | None = None,
    ) -> None:
        if nvc is None:
            reason = nvdec_unavailable_reason(device)
            if reason is not None:
                msg = f"NVDEC decoding was requested but is not possible: {reason}"
                raise ConfigError(msg)
            nvc = importlib.import_module("PyNvVideoCodec")
        self._nvc = nvc
        self._source = source
        self._sampling = sampling
        self.device = device
        self._resolver = resolver if resolver is not None else VideoSourceResolver(source)
        self._prober = prober
        self.ffmpeg = FfmpegTensorDecoder(FrameDecoder(source, sampling, self._resolver), device)
        self._local = threading.local()  # per decode thread: its open decoder and CUDA stream
        logger.info(
            "NVDEC decoding on %s for local files in %s; remote sources and other formats go through ffmpeg",
            device, ", ".join(f"{codec} ({'/'.join(sorted(fmts))})" for codec, fmts in NVDEC_FORMATS.items()),
        )  # fmt: skip

    def decode_frames(self, job: VideoJob) -> DeviceFrames:
        """Decode ``job``'s sampled frames onto the device.

        Raises:
            ClipguardError: a typed error for any bad input, as the CPU path gives.
        """
        start = time.monotonic()
        source = self._resolver.resolve(job)
        probe = self._prober(source, self._source)
        probed = time.monotonic()
        indices = sample_indices(probe.info, self._sampling)
        why_not = self.nvdec_refusal(source, probe)
        if why_not is None:
            frames, kept = self._decode_nvdec(source, probe, indices)
            stamps = tuple(i / probe.info.fps for i in kept)
            decoder = "nvdec"
        else:
            logger.info("video %r: decoded by ffmpeg, not NVDEC: %s", job.video_id, why_not)
            sampled = self.ffmpeg.decode_probed(source, probe, indices)
            frames = upload(np.stack([f.image for f in sampled]), self.device)
            kept = [f.index for f in sampled]
            stamps = tuple(f.timestamp_s for f in sampled)
            decoder = "ffmpeg"
        done = time.monotonic()
        logger.info("video %r: %d/%d frames by %s in %.2fs", job.video_id, len(kept), len(indices), decoder,
                    done - start)  # fmt: skip
        return DeviceFrames(
            video_id=job.video_id,
            info=probe.info,
            frames=frames,
            indices=tuple(kept),
            timestamps_s=stamps,
            requested_indices=tuple(indices),
            decoder=decoder,
            timings_s={"probe": probed - start, "decode": done - probed},
        )

    @staticmethod
    def nvdec_refusal(source: ResolvedSource, probe: ProbeResult) -> str | None:
        """Why this source goes to ffmpeg instead of NVDEC (None: NVDEC takes it)."""
        if not source.is_local:
            return "a remote source (ffmpeg's input options confine what opening it may reach)"
        formats = NVDEC_FORMATS.get(probe.info.codec)
        if formats is None:
            return f"codec {probe.info.codec!r} is not decoded by NVDEC here"
        if probe.pix_fmt not in formats:
            return f"{probe.info.codec} in pixel format {probe.pix_fmt!r} is not decoded by NVDEC"
        return None

    def _decoder_for(self, path: str) -> Any:
        """This thread's open decoder, reconfigured for ``path`` (a new one on first use)."""
        local = self._local
        if getattr(local, "decoder", None) is None:
            local.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
            # PyNvVideoCodec's own context and stream (its defaults, as NVIDIA's samples): torch.from_dlpack
            # hands it our stream to order its frames before our kernels read them.
            local.decoder = self._nvc.SimpleDecoder(
                path,
                gpu_id=self.device.index or 0,
                use_device_memory=True,
                output_color_type=self._nvc.OutputColorType.RGB,
            )
        else:
            local.decoder.reconfigure_decoder(path)
        return local.decoder

    def _decode_nvdec(
        self, source: ResolvedSource, probe: ProbeResult, indices: list[int]
    ) -> tuple[torch.Tensor, list[int]]:
        vid = source.video_id
        try:  # only PyNvVideoCodec's calls: what it raises is about the video
            decoder = self._decoder_for(str(source.local_path))
            available = len(decoder)
            kept = [i for i in indices if i < available]
            decoded = decoder.get_batch_frames_by_index(kept) if kept else []
        except Exception as exc:  # noqa: BLE001 - PyNvVideoCodec raises plain RuntimeError/ValueError/Exception
            self._local.decoder = None  # a decoder that failed is not reused
            msg = f"video {vid!r} ({source.display}): NVDEC could not decode it: {type(exc).__name__}: {exc}"
            raise CorruptVideoError(msg) from exc
        if not decoded or len(decoded) != len(kept):
            msg = f"video {vid!r} ({source.display}): NVDEC decoded {len(decoded)} of {len(kept)} sampled frames"
            raise CorruptVideoError(msg)
        if len(kept) < len(indices):
            logger.warning("video %r: decoded %d of %d sampled frames (NVDEC counts %d frames)", vid, len(kept),
                           len(indices), available)  # fmt: skip
        stream = self._local.stream
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            frames = self._to_upright(torch.stack([torch.from_dlpack(f) for f in decoded]), probe)
        if stream is not None:
            stream.synchronize()  # the frames are ready before another thread or stream reads them
        return frames, kept

    def _to_upright(self, frames: torch.Tensor, probe: ProbeResult) -> torch.Tensor:
        """(F, H, W, 3) coded frames -> downscaled to ``max_side``, then turned upright (the CPU path's order)."""
        height, width = frames.shape[1:3]
        new_w, new_h = output_size(width, height, self._sampling.max_side)
        if (new_w, new_h) != (width, height):
            x = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(new_h, new_w), mode="bilinear",
                              antialias=True, align_corners=False)  # fmt: skip
            frames = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        k = _ROT90_K[probe.info.rotation]
        if k:
            frames = torch.rot90(frames, k=k, dims=(1, 2))
        return frames.contiguous()
