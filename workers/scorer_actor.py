"""Scorer actor: holds the LN-tuned CLIP detector and batches crops across videos.

The model is :class:`clipguard.model.CropScorer`; the batching is
:class:`workers.crop_batcher.CropBatcher`. Calls from many consumers land on one
asyncio loop (an async actor), and the model runs on one thread so the next batch
fills meanwhile. On CUDA the scorer runs as :class:`clipguard.model.DeviceScorer`
(bf16 weights, fixed batch buckets, compiled and warmed up here, once); on the
CPU it is the plain fp32 ``CropScorer``.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import ray

from clipguard.config import ModelConfig
from clipguard.contracts import StageLoad
from clipguard.logging_setup import quiet_third_party
from clipguard.model import CropScorer, DetectorConfig, DeviceScorer
from clipguard.prometheus import StreamMetrics
from workers.busy_meter import BusyMeter
from workers.crop_batcher import BatchReport, CropBatcher

log = logging.getLogger(__name__)


@ray.remote
class ScorerActor:
    def __init__(self, model_cfg: ModelConfig, batch_size: int, batch_wait_ms: int) -> None:
        quiet_third_party()  # format and level come from the job's LoggingConfig (ray.init on the driver)
        self.scorer = CropScorer.from_config(DetectorConfig.for_stream(model_cfg, batch_size), model_cfg.checkpoint)
        score = self.scorer.score
        # Every model call on one thread: CUDA graphs are replayed on the thread that captured them.
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="clipguard-detector")
        if self.scorer.device.type == "cuda":
            fast = DeviceScorer.for_serving(
                self.scorer, buckets=model_cfg.batch_buckets, compile_mode=model_cfg.compile_mode
            )
            self.model_thread.submit(fast.warm_up).result()
            score = fast.score
        self.metrics = StreamMetrics.create()
        self.meter = BusyMeter()  # busy = the model running, not crops waiting for a batch
        self._score_fn = score
        self.batcher = CropBatcher(
            self._score_batch, batch_size, batch_wait_ms / 1000, on_batch=self._observe, executor=self.model_thread
        )

    def model_version(self) -> str:
        return self.scorer.version

    def device(self) -> str:
        return str(self.scorer.device)

    def pid(self) -> int:
        """This worker's process id (fault-injection tests, memory probes)."""
        return os.getpid()

    async def score(self, crops: np.ndarray) -> np.ndarray:
        """p_fake for each crop of one video, batched with other videos' crops."""
        with self.meter.video():
            return await self.batcher.score(crops)

    def load(self) -> StageLoad:
        """Seconds the model ran and videos scored so far (the autoscaler's per-actor rate)."""
        return self.meter.snapshot()

    def _score_batch(self, crops: np.ndarray) -> np.ndarray:
        with self.meter.busy():
            return self._score_fn(crops)  # the CUDA fast path where the actor has a GPU

    def queue_depth(self) -> int:
        return self.batcher.pending_items

    def _observe(self, report: BatchReport) -> None:
        self.metrics.queue_depth.set(report.pending_after, tags={"stage": "detectors"})
        self.metrics.batch_size.observe(report.size)
        self.metrics.batch_fill.observe(report.fill)
