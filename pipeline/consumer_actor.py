"""Decoder actor: a Kafka consumer-group member that samples frames with ffmpeg.

Each decoder owns one KafkaSource (partitions are spread over decoders by the
group), decodes its videos locally (ffmpeg subprocesses on a small thread
pool), sends frames to the least-busy face actor and crops to the least-busy
detector, and stores the verdict before committing (``pipeline.consume_loop``).
On a GPU node (``gpu_node.actors`` > 0) it decodes nothing itself: each job goes
whole to the least-busy GPU stage actor, which decodes, finds faces and scores
them on its device.
Nothing here survives a restart on purpose: uncommitted messages are simply
redelivered.
"""

from __future__ import annotations

import asyncio
import logging
import os

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
from workers.frame_decoder import FrameDecoder

log = logging.getLogger(__name__)


@ray.remote
class ConsumerActor:
    def __init__(
        self,
        cfg: ClipguardConfig,
        name: str,
        faces: list,
        detectors: list,
        model_version: str,
        gpu_stages: list | None = None,
    ) -> None:
        quiet_third_party()  # format and level come from the job's LoggingConfig (ray.init on the driver)
        self.cfg = cfg
        self.name = name
        self.faces = StageRouter(faces) if faces else None
        self.detectors = StageRouter(detectors) if detectors else None
        self.gpu_stages = StageRouter(gpu_stages) if gpu_stages else None
        self.version = model_version
        self.frame_decoder = FrameDecoder(cfg.source, cfg.sampling)
        self.decode_slots = asyncio.Semaphore(cfg.stream.decode_concurrency)
        self.metrics = StreamMetrics.create()
        worker_errors = (RayActorError, ActorDiedError, ActorUnavailableError, ProcessKilledError)
        if self.gpu_stages is not None:
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
        await self.loop.run()
        return self.stats()

    def stop(self) -> None:
        self.loop.stop()

    def stats(self) -> ConsumerStats:
        if self.gpu_stages is not None:  # one fused stage: its calls count as face and detector work
            return ConsumerStats.of(self.loop.stats, self.name, self.gpu_stages.outstanding, 0)
        return ConsumerStats.of(self.loop.stats, self.name, self.faces.outstanding, self.detectors.outstanding)

    def set_pools(self, faces: list, detectors: list) -> None:
        if self.gpu_stages is None:
            self.faces.replace(faces)
            self.detectors.replace(detectors)

    def pid(self) -> int:
        """This worker's process id (fault-injection tests, memory probes)."""
        return os.getpid()

    # --- stages ---------------------------------------------------------------------
    async def _decode(self, job: VideoJob) -> tuple[list[SampledFrame], tuple[int, int]]:
        self.metrics.videos_in.inc()
        async with self.decode_slots:
            decoded = await asyncio.to_thread(self.frame_decoder.decode, job)
        return list(decoded.frames), (decoded.info.width, decoded.info.height)

    async def _faces(self, video_id: str, frames: list[SampledFrame], size: tuple[int, int]) -> FaceStageResult:
        with self.faces.lease() as actor:
            return await actor.crop.remote(video_id, frames, size)

    async def _score(self, crops: np.ndarray) -> np.ndarray:
        with self.detectors.lease() as actor:
            return await actor.score.remote(crops)

    async def _analyse(self, job: VideoJob) -> VideoAnalysis:
        self.metrics.videos_in.inc()
        with self.gpu_stages.lease() as actor:
            return await actor.analyse.remote(job)

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
