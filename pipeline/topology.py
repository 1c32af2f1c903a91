"""Which actors the stream runs, how many, with what resources, wired how.

  decoders (Kafka group members, ffmpeg) ──► face actors (SCRFD) ──► detector actors (CLIP)
        └──────────── verdict to Redis, then offset commit ◄────────────────┘

On a GPU node (``gpu_node.actors`` > 0) the face and detector actors are
replaced by GPU stage actors, one per GPU, that decode (NVDEC), find faces,
align and score a whole video on the device; the decoders then only consume
Kafka and store verdicts:

  decoders (Kafka group members) ──► GPU stage actors (NVDEC, SCRFD, warp, CLIP on one GPU)

Face and detector actors restart on failure (``max_restarts``) and their calls
are retried (``max_task_retries``), so a killed actor's in-flight videos are
redone; a decoder's long ``run`` call is retried on its restarted actor, which
rejoins the consumer group and picks up the uncommitted messages.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import ray

from clipguard.config import ClipguardConfig
from clipguard.errors import ClipguardError, ConfigError
from pipeline.consume_loop import ConsumerStats
from pipeline.consumer_actor import ConsumerActor
from workers.face_actor import FaceActor
from workers.gpu_stage_actor import GpuStageActor
from workers.scorer_actor import ScorerActor

log = logging.getLogger(__name__)


def cpus_needed(cfg: ClipguardConfig) -> float:
    s, g = cfg.stream, cfg.gpu_node
    if g.actors:
        return s.decoders * s.decoder_num_cpus + g.actors * g.num_cpus
    return s.decoders * s.decoder_num_cpus + s.face_workers * s.face_num_cpus + s.detectors * s.detector_num_cpus


def local_ray_cpus(cfg: ClipguardConfig) -> int:
    """Logical CPUs for a local Ray: the machine's, or enough to place every actor."""
    if cfg.ray.num_cpus is not None:
        return cfg.ray.num_cpus
    return max(os.cpu_count() or 1, math.ceil(cpus_needed(cfg)))


@dataclass
class Topology:
    cfg: ClipguardConfig
    model_version: str = ""
    faces: list[Any] = field(default_factory=list)
    detectors: list[Any] = field(default_factory=list)
    decoders: list[Any] = field(default_factory=list)
    gpu_stages: list[Any] = field(default_factory=list)
    runs: dict[Any, Any] = field(default_factory=dict)  # ObjectRef of run() -> decoder handle
    _next_id: int = 0

    # --- building ---------------------------------------------------------------------
    def _face_actor(self) -> Any:
        s = self.cfg.stream
        return FaceActor.options(
            num_cpus=s.face_num_cpus, max_restarts=s.max_restarts, max_task_retries=s.max_restarts
        ).remote(self.cfg.faces, self.cfg.video_score)

    def _detector_actor(self) -> Any:
        s = self.cfg.stream
        return ScorerActor.options(
            num_cpus=s.detector_num_cpus,
            num_gpus=s.detector_num_gpus,
            max_restarts=s.max_restarts,
            max_task_retries=s.max_restarts,
            max_concurrency=1000,  # async actor: many videos wait on one batch loop
        ).remote(self.cfg.model, s.batch_size, s.batch_wait_ms)

    def _gpu_stage_actor(self) -> Any:
        g, s = self.cfg.gpu_node, self.cfg.stream
        return GpuStageActor.options(
            num_cpus=g.num_cpus,
            num_gpus=g.num_gpus,
            max_restarts=s.max_restarts,
            max_task_retries=s.max_restarts,
            max_concurrency=1000,  # async actor: many videos in flight share its detector batches
        ).remote(self.cfg)

    def _decoder_actor(self) -> Any:
        name = f"decoder-{self._next_id}"
        self._next_id += 1
        return ConsumerActor.options(
            num_cpus=self.cfg.stream.decoder_num_cpus, max_restarts=-1, max_task_retries=-1, max_concurrency=1000
        ).remote(self.cfg, name, self.faces, self.detectors, self.model_version, self.gpu_stages)

    def start(self) -> Topology:
        s = self.cfg.stream
        if self.cfg.gpu_node.actors:
            self.gpu_stages = [self._gpu_stage_actor() for _ in range(self.cfg.gpu_node.actors)]
            scorers, what = self.gpu_stages, "GPU stage"
        else:
            self.detectors = [self._detector_actor() for _ in range(s.detectors)]
            self.faces = [self._face_actor() for _ in range(s.face_workers)]
            scorers, what = self.detectors, "detector"
        # Surface construction errors (missing model file, bad checkpoint) before consuming anything.
        versions = _get_or_raise([d.model_version.remote() for d in scorers], what)
        if len(set(versions)) != 1:
            msg = f"{what} actors loaded different models: {sorted(set(versions))}"
            raise ConfigError(msg)
        self.model_version = versions[0]
        _get_or_raise([f.ready.remote() for f in self.faces], "face")
        for _ in range(s.decoders):
            self.add_decoder()
        return self

    def add_decoder(self) -> None:
        decoder = self._decoder_actor()
        self.decoders.append(decoder)
        self.runs[decoder.run.remote()] = decoder

    # --- resizing (used by the autoscaler) -------------------------------------------------
    def size(self, stage: str) -> int:
        return len({"decoders": self.decoders, "face_workers": self.faces, "detectors": self.detectors}[stage])

    def resize(self, stage: str, n: int) -> None:
        if stage == "decoders":
            while len(self.decoders) < n:
                self.add_decoder()
            while len(self.decoders) > n:
                decoder = self.decoders.pop()
                decoder.stop.remote()  # run() returns after draining; the actor is then released
            return
        if self.gpu_stages:
            log.warning("the %s pool is not used on a GPU node (gpu_node.actors > 0); not resized", stage)
            return
        pools = {"face_workers": (self.faces, self._face_actor), "detectors": (self.detectors, self._detector_actor)}
        pool, make = pools[stage]
        while len(pool) < n:
            pool.append(make())
        # Dropped handles are not killed: decoders stop routing to them after set_pools,
        # their in-flight calls finish, and Ray releases an actor once no handle is left.
        del pool[max(n, 1) :]
        for decoder in self.decoders:
            decoder.set_pools.remote(self.faces, self.detectors)

    def supervise(self) -> int:
        """Replace decoders whose run() ended on its own (a bug, not a crash: Ray retries crashes)."""
        ended, _ = ray.wait(list(self.runs), num_returns=len(self.runs), timeout=0)
        for ref in ended:
            decoder = self.runs.pop(ref)
            try:
                ray.get(ref)
                log.error("a decoder's consumer loop returned without being stopped; replacing it")
            except ray.exceptions.RayError as exc:
                log.error("a decoder's consumer loop failed; replacing it: %s", exc)
            if decoder in self.decoders:
                self.decoders.remove(decoder)
                ray.kill(decoder, no_restart=True)
                self.add_decoder()
        return len(ended)

    def stats(self, timeout_s: float = 5.0) -> list[ConsumerStats]:
        refs = [d.stats.remote() for d in self.decoders]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        out = []
        for ref in ready:
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                log.warning("decoder stats unavailable: %s", exc)
        return out

    def stop(self, timeout_s: float) -> list[ConsumerStats]:
        """Stop polling everywhere, let in-flight videos finish and commit, then release actors."""
        for decoder in self.decoders:
            decoder.stop.remote()
        results = []
        ready, pending = ray.wait(list(self.runs), num_returns=len(self.runs), timeout=timeout_s)
        for ref in ready:
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                log.error("decoder ended with an error: %s", exc)
        if pending:
            log.error("%d decoders did not stop within %.0fs; their uncommitted videos will be redelivered",
                      len(pending), timeout_s)  # fmt: skip
        for actor in self.decoders + self.faces + self.detectors + self.gpu_stages:
            ray.kill(actor, no_restart=True)
        return results


def _get_or_raise(refs: list, what: str) -> list:
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ClipguardError):
            raise cause from None
        msg = f"{what} actor failed to start: {exc}"
        raise ConfigError(msg) from exc
    except ray.exceptions.RayActorError as exc:
        cause = getattr(exc, "cause", None) or exc
        msg = f"{what} actor failed to start: {cause}"
        raise ConfigError(msg) from exc
