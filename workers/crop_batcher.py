"""Cross-video crop batching on one asyncio loop, free of Ray and torch.

Many videos call :meth:`CropBatcher.score` at once (the scorer actor is async);
their crops queue in arrival order and :class:`~workers.batching.BatchPlanner`
decides when a batch goes (full, or the oldest crop waited ``max_wait_s``). The
model runs on a worker thread (or the executor given), so the next batch fills meanwhile.
Crops may be numpy arrays or device tensors (``concat`` joins them). A failing batch
fails every video with crops in it, with the model's own error; the others go on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.batching import BatchPlanner, Segment


@dataclass(frozen=True)
class BatchReport:
    """What one batch was, for metrics."""

    size: int
    fill: float  # size / max batch
    pending_after: int  # crops still queued once this batch was taken


class _Request:
    __slots__ = ("crops", "out", "remaining", "future")

    def __init__(self, crops: np.ndarray, future: asyncio.Future) -> None:
        self.crops = crops
        self.out = np.empty(len(crops), dtype=np.float32)
        self.remaining = len(crops)
        self.future = future


class CropBatcher:
    """Batches uint8 crops of many videos into calls of ``score_batch``.

    Args:
        score_batch: (N, H, W, 3) uint8 -> (N,) float32 p_fake; runs on a thread.
        max_batch: crops per call at most.
        max_wait_s: longest a crop waits for its batch to fill.
        on_batch: called with a :class:`BatchReport` before each call (metrics).
        concat: joins the requests' crop slices into one batch (``torch.cat`` for device tensors).
        executor: where ``score_batch`` runs (None: asyncio's default thread pool); a one-thread
            executor keeps every model call on one thread, as CUDA graphs need.
    """

    def __init__(
        self,
        score_batch: Callable[[np.ndarray], np.ndarray],
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[BatchReport], None] = lambda report: None,
        concat: Callable[[Sequence[Any]], Any] = np.concatenate,
        executor: Executor | None = None,
    ) -> None:
        self._score_batch = score_batch
        self._concat = concat
        self._executor = executor
        self._planner = BatchPlanner(max_batch, max_wait_s)
        self._on_batch = on_batch
        self._requests: dict[int, _Request] = {}
        self._ids = itertools.count()
        self._wakeup: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self.batches = 0

    @property
    def pending_items(self) -> int:
        """Crops queued and not yet in a batch."""
        return self._planner.pending_items

    async def score(self, crops: np.ndarray) -> np.ndarray:
        """p_fake for each crop of one video, batched with other videos' crops."""
        loop = asyncio.get_running_loop()
        # Created on first use (it needs the running loop), and again under a new loop (a rerun of asyncio.run).
        if self._loop_task is None or self._loop_task.get_loop() is not loop:
            self._wakeup = asyncio.Event()
            self._loop_task = asyncio.create_task(self._batch_loop())
        if len(crops) == 0:
            return np.empty(0, dtype=np.float32)
        rid = next(self._ids)
        req = _Request(crops, asyncio.get_running_loop().create_future())
        self._requests[rid] = req
        self._planner.add(rid, len(crops), time.monotonic())
        self._wakeup.set()
        return await req.future

    async def _wait_for_batch(self) -> None:
        while (wait := self._planner.seconds_until_ready(time.monotonic())) != 0:
            self._wakeup.clear()
            if wait is None:
                await self._wakeup.wait()
                continue
            try:
                await asyncio.wait_for(self._wakeup.wait(), wait)
            except TimeoutError:
                pass

    async def _batch_loop(self) -> None:
        while True:
            await self._wait_for_batch()
            segments = self._planner.take()
            batch = self._concat([self._requests[s.request_id].crops[s.start : s.stop] for s in segments])
            self._on_batch(BatchReport(len(batch), len(batch) / self._planner.max_batch, self.pending_items))
            try:
                scores = await asyncio.get_running_loop().run_in_executor(self._executor, self._score_batch, batch)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting video, never swallowed
                self._fail(segments, exc)
                continue
            self.batches += 1
            self._deliver(segments, scores)

    def _fail(self, segments: list[Segment], exc: Exception) -> None:
        for s in segments:
            req = self._requests.pop(s.request_id, None)
            if req is not None and not req.future.done():
                req.future.set_exception(exc)

    def _deliver(self, segments: list[Segment], scores: np.ndarray) -> None:
        pos = 0
        for s in segments:
            req = self._requests.get(s.request_id)
            if req is not None:  # None: already failed with an earlier batch
                req.out[s.start : s.stop] = scores[pos : pos + s.size]
                req.remaining -= s.size
                if req.remaining == 0:
                    del self._requests[s.request_id]
                    if not req.future.done():
                        req.future.set_result(req.out)
            pos += s.size
