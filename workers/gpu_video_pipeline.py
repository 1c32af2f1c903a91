"""The fused GPU stage as a plain async class: decode -> faces -> align -> score, frames on the device throughout.

One :class:`GpuVideoPipeline` serves many videos at once (one asyncio loop):

* decoding runs on ``decode_workers`` threads (NVDEC sessions, or ffmpeg
  processes), each with its own decoder and CUDA stream, so decoding overlaps
  the GPU work of other videos;
* SCRFD, NMS and the alignment warp of a video run on ONE compute thread, and so
  does every detector batch: all model calls come from one thread (CUDA graphs
  require it) in launch order;
* crops of many videos are batched for the detector by
  :class:`~workers.crop_batcher.CropBatcher` (device tensors joined with ``torch.cat``).

Only video IDs go in and :class:`~clipguard.contracts.VideoAnalysis` (counts,
boxes, scores, timings) comes out. The Ray actor (``workers/gpu_stage_actor.py``)
and the GPU benchmark (``bench/bench_gpu_node.py``) both drive this class.

Stage devices (``gpu_node.decode_device``, ``gpu_node.faces_device``,
``model.device``) resolve once, at start, and are logged with the reason when a
GPU-node capability is missing; an explicit ``cuda`` that cannot be honoured is
an error, never a CPU run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from clipguard.config import ClipguardConfig, GpuNodeConfig
from clipguard.contracts import CropScore, VideoAnalysis, VideoJob
from clipguard.errors import ConfigError, DecodeTimeoutError
from clipguard.model import CropScorer, DetectorConfig, DeviceScorer
from workers.crop_batcher import BatchReport, CropBatcher
from workers.face_cropper_device import DeviceFaceCropper
from workers.face_detector_torch import TorchFaceDetector
from workers.frame_decoder import FrameDecoder
from workers.frame_decoder_device import DeviceFrames, FfmpegTensorDecoder, NvdecFrameDecoder, nvdec_unavailable_reason

logger = logging.getLogger(__name__)


class TensorDecoder(Protocol):
    """What the pipeline decodes with: a video job -> its sampled frames on the device."""

    def decode_frames(self, job: VideoJob) -> DeviceFrames: ...


class BatchScorer(Protocol):
    """What scores crops: uint8 crops (host or device) -> p_fake."""

    version: str

    def score(self, crops: torch.Tensor) -> np.ndarray: ...


@dataclass(frozen=True)
class StageDevices:
    """Where each stage of the fused actor runs, and why (for the one start-up log line)."""

    decoder: str  # "nvdec" or "ffmpeg"
    faces: torch.device
    reasons: tuple[str, ...] = ()


def resolve_stage_devices(node: GpuNodeConfig) -> StageDevices:
    """Resolve ``auto``/``cpu``/``cuda`` for decoding and faces, once.

    Raises:
        ConfigError: ``cuda`` asked for a stage that cannot have it (no CUDA, no NVDEC),
            or NVDEC frames would have to leave the GPU for CPU faces.
    """
    reasons: list[str] = []
    cuda = torch.cuda.is_available()
    if node.faces_device == "cuda" and not cuda:
        msg = "gpu_node.faces_device='cuda' but CUDA is not available (torch.cuda.is_available() is False)"
        raise ConfigError(msg)
    if node.faces_device == "auto" and not cuda:
        reasons.append("faces on the CPU: CUDA is not available")
    faces = torch.device("cuda" if (node.faces_device != "cpu" and cuda) else "cpu")
    nvdec_target = faces if faces.type == "cuda" else torch.device("cuda")
    why_not = nvdec_unavailable_reason(nvdec_target)
    if node.decode_device == "cuda":
        if why_not is not None:
            msg = f"gpu_node.decode_device='cuda' (NVDEC) is not possible: {why_not}"
            raise ConfigError(msg)
        if faces.type != "cuda":
            msg = "gpu_node.decode_device='cuda' needs gpu_node.faces_device on CUDA: NVDEC frames stay on the GPU"
            raise ConfigError(msg)
        decoder = "nvdec"
    elif node.decode_device == "auto" and why_not is None and faces.type == "cuda":
        decoder = "nvdec"
    else:
        decoder = "ffmpeg"
        if node.decode_device == "auto":
            reasons.append(f"decoding with ffmpeg on the CPU: {why_not or 'faces run on the CPU'}")
    return StageDevices(decoder=decoder, faces=faces, reasons=tuple(reasons))


class GpuVideoPipeline:
    """Many videos at once through decode -> faces -> align -> score (see the module docstring).

    Args:
        decoder: Frames of a job onto the device (:class:`NvdecFrameDecoder` or :class:`FfmpegTensorDecoder`).
        cropper: The device face stage.
        scorer: The detector (``score`` of device crops -> p_fake).
        decode_workers: Videos decoded at once.
        batch_size: Crops per detector batch at most.
        batch_wait_s: Longest a crop waits for its batch to fill.
        decode_timeout_s: A decode still running after this is a ``timeout`` error for the video.
        on_batch: Called with each detector batch's :class:`BatchReport` (metrics).
        compute: The one thread all model work runs on (default: a new one); pass the executor a
            scorer was compiled and warmed up on, since CUDA graphs replay on their own thread.
    """

    def __init__(
        self,
        decoder: TensorDecoder,
        cropper: DeviceFaceCropper,
        scorer: BatchScorer,
        *,
        decode_workers: int,
        batch_size: int,
        batch_wait_s: float,
        decode_timeout_s: float,
        on_batch: Callable[[BatchReport], None] | None = None,
        compute: ThreadPoolExecutor | None = None,
    ) -> None:
        self.decoder = decoder
        self._on_batch = on_batch
        self.cropper = cropper
        self.scorer = scorer
        self.version = scorer.version
        self._decode_timeout_s = decode_timeout_s
        self._decode_pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="clipguard-decode")
        self._owns_compute = compute is None
        self._compute = compute or ThreadPoolExecutor(1, thread_name_prefix="clipguard-gpu-compute")
        self.batches: list[BatchReport] = []
        self.batcher = CropBatcher(scorer.score, batch_size, batch_wait_s, on_batch=self._observe,
                                   concat=torch.cat, executor=self._compute)  # fmt: skip

    def _observe(self, report: BatchReport) -> None:
        self.batches.append(report)
        del self.batches[:-1000]  # the recent ones are enough for the benchmark's fill figure
        if self._on_batch is not None:
            self._on_batch(report)

    async def analyse(self, job: VideoJob) -> VideoAnalysis:
        """One video to its crop scores.

        Raises:
            ClipguardError: a typed error for the video (bad source, decode failure, timeout).
        """
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            frames = await asyncio.wait_for(
                loop.run_in_executor(self._decode_pool, self.decoder.decode_frames, job), self._decode_timeout_s
            )
        except TimeoutError:
            # The decode thread cannot be interrupted; it finishes on its own and its result is dropped.
            msg = f"video {job.video_id!r}: decoding not finished within {self._decode_timeout_s:.0f}s"
            raise DecodeTimeoutError(msg) from None
        decoded = time.perf_counter()
        size = (frames.info.width, frames.info.height)
        decode_timings, decoder = frames.timings_s, frames.decoder
        faces = await loop.run_in_executor(self._compute, self.cropper.crop_video, job.video_id, frames.frames,
                                           frames.indices, frames.timestamps_s, size)  # fmt: skip
        del frames  # the frames are not needed past the face stage (their memory goes back now)
        found = time.perf_counter()
        p_fake = await self.batcher.score(faces.crops) if faces.placements else np.empty(0, np.float32)
        scored = time.perf_counter()
        scores = tuple(
            CropScore(job.video_id, p.frame_index, p.track_id, p.box, p.det_score, float(s))
            for p, s in zip(faces.placements, p_fake, strict=True)
        )
        return VideoAnalysis(
            crop_scores=scores,
            frames_sampled=faces.frames_sampled,
            frames_with_faces=faces.frames_with_faces,
            faces_found=faces.faces_found,
            # probe and decode as the decoder measured them; the decode wait includes the queue for a thread
            timings_s={
                **decode_timings,
                "decode_wait": decoded - start,
                "faces": found - decoded,
                "detect": scored - found,
            },  # fmt: skip
            decoder=decoder,
        )

    def warm_up(self) -> None:
        """Compile and warm the detector up on the thread every later model call runs on."""
        warm = getattr(self.scorer, "warm_up", None)
        if warm is not None:
            self._compute.submit(warm).result()

    def close(self) -> None:
        """Stop the threads it made (pending work is dropped); a compute executor passed in stays up."""
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        if self._owns_compute:
            self._compute.shutdown(wait=False, cancel_futures=True)


def build_pipeline(cfg: ClipguardConfig, on_batch: Callable[[BatchReport], None] | None = None) -> GpuVideoPipeline:
    """Build the fused stage from the stream config: devices resolved and logged, detector warmed up.

    Raises:
        ConfigError, ModelError: a stage cannot run where it was asked to, or a model does not load.
    """
    node = cfg.gpu_node
    devices = resolve_stage_devices(node)
    scorer = CropScorer.from_config(DetectorConfig.for_stream(cfg.model, cfg.stream.batch_size), cfg.model.checkpoint)
    fast = DeviceScorer.for_serving(scorer, buckets=cfg.model.batch_buckets, compile_mode=cfg.model.compile_mode)
    detector = TorchFaceDetector(cfg.faces, devices.faces, batch_size=node.face_batch, model_dir=cfg.model_dir)
    if devices.decoder == "nvdec":
        decoder: TensorDecoder = NvdecFrameDecoder(cfg.source, cfg.sampling, devices.faces)
    else:
        decoder = FfmpegTensorDecoder(FrameDecoder(cfg.source, cfg.sampling), devices.faces)
    for reason in devices.reasons:
        logger.warning("GPU stage: %s", reason)
    logger.info("GPU stage: decode %s, faces on %s, detector on %s (%s)", devices.decoder, devices.faces,
                scorer.device, fast.weights_dtype or "fp32")  # fmt: skip
    pipeline = GpuVideoPipeline(
        decoder,
        DeviceFaceCropper(cfg.faces, detector, selection=cfg.video_score),
        fast,
        decode_workers=node.decode_workers,
        batch_size=cfg.stream.batch_size,
        batch_wait_s=cfg.stream.batch_wait_ms / 1000,
        decode_timeout_s=cfg.source.timeout_s,
        on_batch=on_batch,
    )
    pipeline.warm_up()
    return pipeline
