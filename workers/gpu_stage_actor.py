"""GPU stage actor: one per GPU, decodes, finds, aligns and scores whole videos on the device.

The work is :class:`workers.gpu_video_pipeline.GpuVideoPipeline` (plain async
class); this actor holds it and takes the Kafka consumers' calls on one asyncio
loop (an async actor), so many videos are in flight at once and their crops
share detector batches. Models load, compile and warm up once, in ``__init__``.
"""

from __future__ import annotations

import os

import ray

from clipguard.config import ClipguardConfig
from clipguard.contracts import StageLoad, VideoAnalysis, VideoJob
from clipguard.logging_setup import quiet_third_party
from clipguard.prometheus import StreamMetrics
from workers.busy_meter import BusyMeter
from workers.crop_batcher import BatchReport
from workers.gpu_video_pipeline import build_pipeline


@ray.remote
class GpuStageActor:
    def __init__(self, cfg: ClipguardConfig) -> None:
        quiet_third_party()  # format and level come from the job's LoggingConfig (ray.init on the driver)
        self.metrics = StreamMetrics.create()
        self.meter = BusyMeter()  # busy = any video on the device (the topology's liveness and load probe)
        self.pipeline = build_pipeline(cfg, on_batch=self._observe)

    def model_version(self) -> str:
        return self.pipeline.version

    def ready(self) -> bool:
        return True

    def pid(self) -> int:
        """This worker's process id (fault-injection tests, memory probes)."""
        return os.getpid()

    async def analyse(self, job: VideoJob) -> VideoAnalysis:
        """One video, decode to crop scores, on this actor's device."""
        with self.meter.video(), self.meter.busy():
            return await self.pipeline.analyse(job)

    def load(self) -> StageLoad:
        """Busy seconds and videos analysed so far."""
        return self.meter.snapshot()

    def queue_depth(self) -> int:
        return self.pipeline.batcher.pending_items

    def _observe(self, report: BatchReport) -> None:
        self.metrics.queue_depth.set(report.pending_after, tags={"stage": "gpu_stage"})
        self.metrics.batch_size.observe(report.size)
        self.metrics.batch_fill.observe(report.fill)
