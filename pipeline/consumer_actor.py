"""Decoder actor: a Kafka consumer-group member that samples frames with ffmpeg.

Each decoder owns one KafkaSource (partitions are spread over decoders by the
group), decodes its videos locally (ffmpeg subprocesses on a small thread
pool), sends frames to the least-busy face actor and crops to the least-busy
detector, and stores the verdict before committing (``pipeline.consume_loop``).
Nothing here survives a restart on purpose: uncommitted messages are simply
redelivered.

On a GPU node (``gpu_node.actors`` > 0) it decodes nothing itself: each job goes
whole to the least-busy GPU stage actor, which decodes, finds faces and scores
them on its device.

The face, detector (and GPU stage) pools come only from the topology (``set_pools``), never
from the constructor: a decoder that Ray restarts (its node died) re-runs
``__init__`` with its creation arguments, which would name actors long gone. It
consumes nothing until the topology has pushed it the current, ready members.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from clipguard.config import ClipguardConfig
from clipguard.contracts import FaceStageResult, SampledFrame, Verdict, VideoAnalysis, VideoJob
from clipguard.errors import ProcessKilledError
from clipguard.logging_setup import quiet_third_party
from clipguard.prometheus import StreamMetrics
from pipeline.consume_loop import ConsumeLoop, ConsumerStats
from pipeline.kafka_source import KafkaSource
from pipeline.stage_router import StageRouter
from pipeline.verdict_store import VerdictStore
from pipeline.video_flow import Stages, process_video
from workers.busy_meter import BusyMeter
from workers.frame_decoder import FrameDecoder

log = logging.getLogger(__name__)


@ray.remote
class ConsumerActor:
    def __init__(self, cfg: ClipguardConfig, name: str, model_version: str) -> None:
        quiet_third_party()  # format and level come from the job's LoggingConfig (ray.init on the driver)
        self.cfg = cfg
        self.name = name
        self.faces = StageRouter()
        self.detectors = StageRouter()
        self.gpu_stages = StageRouter()  # used instead of faces + detectors on a GPU node
        self.pools_version = 0
        self._pools_set = asyncio.Event()
        self._stopped = False
        self.version = model_version
        self.frame_decoder = FrameDecoder(cfg.source, cfg.sampling)
        self.decode_slots = asyncio.Semaphore(cfg.stream.decode_concurrency)
        self.decode_meter = BusyMeter()
        self.metrics = StreamMetrics.create()
        worker_errors = (RayActorError, ActorDiedError, ActorUnavailableError, ProcessKilledError)
        if cfg.gpu_node.actors:
            self.stages = Stages(analyse=self._analyse, worker_errors=worker_errors)
        else:
            self.stages = Stages(decode=self._decode, faces=self._faces, score=self._score, worker_errors=worker_errors)
        self.loop = ConsumeLoop(
            source_factory=lambda: KafkaSource(cfg.kafka, client_id=f"clipguard-{name}"),
            store=VerdictStore(cfg.redis),
            process=lambda job: process_video(job, self.stages, cfg, self.version),
            model_version=lambda: self.version,
            max_in_flight=cfg.stream.max_in_flight,
            on_verdict=self._observe,
            drain_timeout_s=cfg.stream.drain_timeout_s,
        )

    # --- control ------------------------------------------------------------------
    async def run(self) -> ConsumerStats:
        await self._pools_set.wait()  # no pools, no consuming (see the module docstring)
        if not self._stopped:
            await self.loop.run()
        return self.stats()

    async def stop(self) -> None:
        """Stop polling; ``run`` returns once the in-flight videos are finished and committed.

        ``stop`` and ``set_pools`` are coroutines so that they run on the actor's event loop,
        where the asyncio events they set are waited on.
        """
        self._stopped = True
        self.loop.stop()
        self._pools_set.set()  # a decoder stopped before it ever consumed returns at once

    def stats(self) -> ConsumerStats:
        calls = {**self.faces.calls, **self.detectors.calls, **self.gpu_stages.calls}
        # A GPU stage call is the face and the detector work of a video at once: counted as face work.
        faces_outstanding = self.faces.outstanding + self.gpu_stages.outstanding
        return ConsumerStats.of(self.loop.stats, self.name, faces_outstanding=faces_outstanding,
                                detectors_outstanding=self.detectors.outstanding, decode=self.decode_meter.snapshot(),
                                pools_version=self.pools_version, calls=calls)  # fmt: skip

    async def set_pools(
        self,
        version: int,
        faces: list[tuple[str, Any]],
        detectors: list[tuple[str, Any]],
        gpu_stages: list[tuple[str, Any]] = (),
    ) -> None:
        """The ready face, detector and GPU stage actors, as ``(name, handle)``; an older push arriving late is
        ignored."""
        if version <= self.pools_version:
            return
        self.faces.replace(faces)
        self.detectors.replace(detectors)
        self.gpu_stages.replace(gpu_stages)
        self.pools_version = version
        self._pools_set.set()

    def pid(self) -> int:
        """This worker's process id (fault-injection tests, memory probes)."""
        return os.getpid()

    # --- stages ---------------------------------------------------------------------
    async def _decode(self, job: VideoJob) -> tuple[list[SampledFrame], tuple[int, int]]:
        self.metrics.videos_in.inc()
        with self.decode_meter.video():
            async with self.decode_slots:
                with self.decode_meter.busy():
                    decoded = await asyncio.to_thread(self.frame_decoder.decode, job)
        return list(decoded.frames), (decoded.info.width, decoded.info.height)

    async def _faces(self, video_id: str, frames: list[SampledFrame], size: tuple[int, int]) -> FaceStageResult:
        return await self._call(self.faces, "crop", video_id, frames, size)

    async def _score(self, crops: np.ndarray) -> np.ndarray:
        return await self._call(self.detectors, "score", crops)

    async def _analyse(self, job: VideoJob) -> VideoAnalysis:
        self.metrics.videos_in.inc()
        return await self._call(self.gpu_stages, "analyse", job)

    @staticmethod
    async def _call(pool: StageRouter, method: str, *args: Any) -> Any:
        """One call on the least-busy member of a pool; a member that died or is unreachable is set aside."""
        async with pool.lease() as actor:
            try:
                return await getattr(actor, method).remote(*args)
            except ActorDiedError:
                pool.discard(actor)  # gone for good: process_video retries on another member
                raise
            except RayActorError:
                pool.suspect(actor)  # unreachable (node lost, restarting): retry elsewhere first
                raise

    def _observe(self, verdict: Verdict) -> None:
        m = self.metrics
        m.videos_out.inc(tags={"status": verdict.status})
        if verdict.error_kind:
            m.errors.inc(tags={"kind": verdict.error_kind})
        for stage, seconds in verdict.timings_s.items():
            m.stage_latency.observe(seconds, tags={"stage": stage})
        m.in_flight.set(self.loop.stats.in_flight, tags={"decoder": self.name})
        for partition, lag in self.loop.stats.lag.items():
            m.consumer_lag.set(lag, tags={"partition": str(partition)})
