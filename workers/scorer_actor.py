"""Detector actor: batches crops across videos and runs the LN-tuned CLIP detector.

The work is done by ``clipguard.model.CropScorer`` (the only import from
``training``) and the batching decisions by ``workers.batching.BatchPlanner``;
this actor holds the model and the queue. Calls from many decoders land on one
asyncio loop; the model runs on a thread so the next batch fills meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time

import numpy as np
import ray

from clipguard.config import ModelConfig
from clipguard.model import CropScorer, DetectorConfig
from clipguard.prometheus import StreamMetrics
from workers.batching import BatchPlanner

log = logging.getLogger(__name__)


def detector_config(cfg: ModelConfig, max_batch: int) -> DetectorConfig:
    """The model's own config from the stream's model section."""
    return DetectorConfig(arch=cfg.arch, pretrained=cfg.pretrained, device=cfg.device, max_batch_size=max_batch)


class _Request:
    __slots__ = ("crops", "out", "remaining", "future")

    def __init__(self, crops: np.ndarray, future: asyncio.Future) -> None:
        self.crops = crops
        self.out = np.empty(len(crops), dtype=np.float32)
        self.remaining = len(crops)
        self.future = future


@ray.remote
class ScorerActor:
    def __init__(self, model_cfg: ModelConfig, batch_size: int, batch_wait_ms: int) -> None:
        logging.basicConfig(level=logging.INFO)
        self.scorer = CropScorer.from_config(detector_config(model_cfg, batch_size), model_cfg.checkpoint)
        self.planner = BatchPlanner(batch_size, batch_wait_ms / 1000)
        self.requests: dict[int, _Request] = {}
        self.ids = itertools.count()
        self.wakeup: asyncio.Event | None = None
        self.loop_task: asyncio.Task | None = None
        self.metrics = StreamMetrics.create()
        self.batches = 0

    def model_version(self) -> str:
        return self.scorer.version

    def device(self) -> str:
        return str(self.scorer.device)

    def pid(self) -> int:
        """This worker's process id (fault-injection tests, memory probes)."""
        return os.getpid()

    async def score(self, crops: np.ndarray) -> np.ndarray:
        """p_fake for each crop of one video, batched with other videos' crops."""
        if self.loop_task is None:
            self.wakeup = asyncio.Event()
            self.loop_task = asyncio.create_task(self._batch_loop())
        if len(crops) == 0:
            return np.empty(0, dtype=np.float32)
        rid = next(self.ids)
        req = _Request(crops, asyncio.get_running_loop().create_future())
        self.requests[rid] = req
        self.planner.add(rid, len(crops), time.monotonic())
        self.wakeup.set()
        return await req.future

    def queue_depth(self) -> int:
        return self.planner.pending_items

    async def _batch_loop(self) -> None:
        while True:
            wait = self.planner.seconds_until_ready(time.monotonic())
            if wait is None:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            if wait > 0:
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), wait)
                except TimeoutError:
                    pass
                continue
            segments = self.planner.take()
            batch = np.concatenate([self.requests[s.request_id].crops[s.start : s.stop] for s in segments])
            self.metrics.queue_depth.set(self.planner.pending_items, tags={"stage": "detectors"})
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_fill.observe(len(batch) / self.planner.max_batch)
            try:
                scores = await asyncio.to_thread(self.scorer.score, batch)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting video, never swallowed
                for s in segments:
                    req = self.requests.pop(s.request_id, None)
                    if req is not None and not req.future.done():
                        req.future.set_exception(exc)
                continue
            self.batches += 1
            pos = 0
            for s in segments:
                req = self.requests.get(s.request_id)
                if req is None:  # already failed with an earlier batch
                    pos += s.size
                    continue
                req.out[s.start : s.stop] = scores[pos : pos + s.size]
                pos += s.size
                req.remaining -= s.size
                if req.remaining == 0:
                    del self.requests[s.request_id]
                    if not req.future.done():
                        req.future.set_result(req.out)
