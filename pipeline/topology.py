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

Face and detector pools are :class:`~pipeline.stage_pool.StagePool`\ s: a new
actor gets work only once it reports ready, a retired one drains first, and one
lost with its node is replaced. Decoders get the ready members pushed
(``set_pools``, versioned) whenever they change, and again whenever a decoder
reports an older version (Ray restarted it). A decoder stopped by a scale-down
finishes and commits its in-flight videos, leaves the group and is released; that
is logged at INFO, never as a failure.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from clipguard.config import ClipguardConfig
from clipguard.contracts import StageLoad
from clipguard.errors import ClipguardError, ConfigError
from pipeline.consume_loop import ConsumerStats
from pipeline.consumer_actor import ConsumerActor
from pipeline.stage_pool import StagePool
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
class DecoderState:
    """One decoder (Kafka consumer-group member) as the topology tracks it."""

    name: str
    handle: Any
    run: Any  # ObjectRef of its run()
    stats: ConsumerStats | None = None  # last answer (None: not placed yet = pending)
    stats_ref: Any = None  # stats() call in flight
    pushed: tuple[int, float] = (0, -math.inf)  # (pool version, when) last sent to it
    stopping_since: float | None = None  # scale-down: stop() sent, draining


@dataclass
class Topology:
    cfg: ClipguardConfig
    model_version: str = ""
    face_pool: StagePool | None = None
    detector_pool: StagePool | None = None
    gpu_pool: StagePool | None = None  # GPU stage actors; face and detector pools stay empty then
    decoder_states: dict[str, DecoderState] = field(default_factory=dict)  # running and stopping decoders
    runs: dict[Any, Any] = field(default_factory=dict)  # ObjectRef of run() -> decoder handle
    pools_version: int = 0  # bumped whenever the ready face/detector members change
    # Counters of decoders gone (scaled down) or restarted (their counters began again at 0), so the
    # stream's totals never go backwards.
    finished: ConsumerStats = field(default_factory=lambda: ConsumerStats(name="finished"))
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

    def _decoder_actor(self, name: str) -> Any:
        return ConsumerActor.options(
            num_cpus=self.cfg.stream.decoder_num_cpus, max_restarts=-1, max_task_retries=-1, max_concurrency=1000
        ).remote(self.cfg, name, self.model_version)

    def _same_model(self, version: str) -> None:
        if version != self.model_version:
            msg = f"loaded model {version}, the stream serves {self.model_version}"
            raise ValueError(msg)

    def start(self) -> Topology:
        s = self.cfg.stream
        pool_args = {"unresponsive_s": s.actor_unresponsive_s, "drain_timeout_s": s.drain_timeout_s}
        self.detector_pool = StagePool("detectors", "detector", self._detector_actor,
                                       lambda h: h.model_version.remote(), check_ready=self._same_model,
                                       **pool_args)  # fmt: skip
        self.face_pool = StagePool("face_workers", "face", self._face_actor, lambda h: h.ready.remote(), **pool_args)
        if self.cfg.gpu_node.actors:
            self.gpu_pool = StagePool("gpu_stages", "GPU stage", self._gpu_stage_actor,
                                      lambda h: h.model_version.remote(), check_ready=self._same_model,
                                      **pool_args)  # fmt: skip
            scorers, faces, what = [self.gpu_pool.add() for _ in range(self.cfg.gpu_node.actors)], [], "GPU stage"
        else:
            scorers, what = [self.detector_pool.add() for _ in range(s.detectors)], "detector"
            faces = [self.face_pool.add() for _ in range(s.face_workers)]
        # Surface construction errors (missing model file, bad checkpoint) before consuming anything.
        versions = _get_or_raise([m.probe for m in scorers], what)
        if len(set(versions)) != 1:
            msg = f"{what} actors loaded different models: {sorted(set(versions))}"
            raise ConfigError(msg)
        self.model_version = versions[0]
        _get_or_raise([m.probe for m in faces], "face")
        for pool in self._pools():
            pool.poll()  # the answers are in: all ready
        self.pools_version = 1
        for _ in range(s.decoders):
            self.add_decoder()
        return self

    def add_decoder(self) -> None:
        name = f"decoder-{self._next_id}"
        self._next_id += 1
        decoder = DecoderState(name, self._decoder_actor(name), run=None)
        self._push_pools(decoder)  # before run(): it consumes only once it has pools
        decoder.run = decoder.handle.run.remote()
        self.runs[decoder.run] = decoder.handle
        self.decoder_states[name] = decoder

    # --- views ----------------------------------------------------------------------------
    @property
    def faces(self) -> list[Any]:
        """Ready face actors (the ones the decoders route to)."""
        return self.face_pool.handles()

    @property
    def detectors(self) -> list[Any]:
        """Ready detector actors."""
        return self.detector_pool.handles()

    @property
    def decoders(self) -> list[Any]:
        """Decoders that consume (stopping ones excluded)."""
        return [d.handle for d in self.decoder_states.values() if d.stopping_since is None]

    def _pools(self) -> list[StagePool]:
        return [p for p in (self.face_pool, self.detector_pool, self.gpu_pool) if p is not None]

    def _pool(self, stage: str) -> StagePool:
        return {"face_workers": self.face_pool, "detectors": self.detector_pool}[stage]

    # --- resizing (used by the autoscaler) -------------------------------------------------
    def size(self, stage: str) -> int:
        """Actors of a stage, ready and pending (draining ones excluded)."""
        if stage == "decoders":
            return len(self.decoders)
        return len(self._pool(stage))

    def pending(self, stage: str) -> int:
        """Actors created but not ready yet (no work goes to them)."""
        if stage == "decoders":
            return sum(d.stats is None for d in self.decoder_states.values() if d.stopping_since is None)
        return len(self._pool(stage).pending)

    def loads(self, stage: str) -> dict[str, StageLoad]:
        """Cumulative busy time and videos per ready actor (decoders: from their last stats)."""
        if stage == "decoders":
            return {d.name: d.stats.decode for d in self.decoder_states.values() if d.stats is not None}
        return self._pool(stage).loads()

    def resize(self, stage: str, n: int) -> None:
        """Grow with pending actors, or shrink: pending actors first, then drain the newest ready ones."""
        if stage == "decoders":
            self._resize_decoders(n)
            return
        if self.gpu_pool is not None:
            log.warning("the %s pool is not used on a GPU node (gpu_node.actors > 0); not resized", stage)
            return
        version = self.pools_version + 1
        if self._pool(stage).resize(n, version):
            self.pools_version = version
            self._push_pools()

    def _resize_decoders(self, n: int) -> None:
        running = [d for d in self.decoder_states.values() if d.stopping_since is None]
        for _ in range(n - len(running)):
            self.add_decoder()
        # Not placed yet first: they hold no partition and no video.
        newest_first = sorted(reversed(running), key=lambda d: d.stats is not None)  # stable: pending, then newest
        victims = newest_first[: max(0, len(running) - n)]
        for decoder in victims:
            decoder.stopping_since = time.monotonic()
            decoder.handle.stop.remote()  # run() returns once its in-flight videos are committed
            log.info("decoders: %s stopping (scale-down): finishing its in-flight videos, leaving the group",
                     decoder.name)  # fmt: skip

    # --- upkeep, once per tick --------------------------------------------------------------
    def maintain(self) -> None:
        """Promote ready actors, replace lost ones, retire drained ones, keep every decoder's pools current."""
        changed = any([pool.poll() for pool in self._pools()])  # a list: every pool polls
        if changed:
            self.pools_version += 1
            self._push_pools()
        now = time.monotonic()
        for decoder in self.decoder_states.values():
            # A decoder Ray restarted reports version 0: it waits, consuming nothing, until it has pools again.
            stale = decoder.stats is not None and decoder.stats.pools_version < self.pools_version
            if stale and now - decoder.pushed[1] > 2.0:
                self._push_pools(decoder)
        reported = [d.stats for d in self.decoder_states.values() if d.stats is not None]
        applied = min((st.pools_version for st in reported), default=None)
        outstanding: dict[str, int] = {}
        for st in reported:
            for name, calls in st.calls.items():
                outstanding[name] = outstanding.get(name, 0) + calls.outstanding
        for pool in self._pools():
            pool.retire_drained(outstanding, applied)

    def _push_pools(self, only: DecoderState | None = None) -> None:
        faces, detectors = self.face_pool.routed(), self.detector_pool.routed()
        gpu_stages = self.gpu_pool.routed() if self.gpu_pool is not None else []
        for decoder in [only] if only else list(self.decoder_states.values()):
            decoder.handle.set_pools.remote(self.pools_version, faces, detectors, gpu_stages)
            decoder.pushed = (self.pools_version, time.monotonic())

    def supervise(self) -> int:
        """Retire decoders stopped by a scale-down; replace those whose run() ended on its own (a bug:
        Ray retries crashes)."""
        ended, _ = ray.wait(list(self.runs), num_returns=len(self.runs), timeout=0)
        for ref in ended:
            handle = self.runs.pop(ref)
            decoder = next((d for d in self.decoder_states.values() if d.run == ref), None)
            try:
                final = ray.get(ref)
                problem = None
            except ray.exceptions.RayError as exc:
                final, problem = None, exc
            if decoder is not None and decoder.stopping_since is not None:
                verdicts = final.verdicts if final else "?"
                log.info("decoders: %s stopped after draining (%s verdicts); released", decoder.name, verdicts)
            elif problem is not None:
                log.error("a decoder's consumer loop failed; replacing it: %s", problem)
            else:
                log.error("a decoder's consumer loop returned without being stopped; replacing it")
            if decoder is not None:
                if final is not None or decoder.stats is not None:
                    self._carry(final or decoder.stats)
                del self.decoder_states[decoder.name]
            ray.kill(handle, no_restart=True)
            if decoder is None or decoder.stopping_since is None:
                self.add_decoder()
        limit = self.cfg.stream.drain_timeout_s + 30
        for decoder in list(self.decoder_states.values()):
            if decoder.stopping_since is not None and time.monotonic() - decoder.stopping_since > limit:
                log.warning("decoders: %s did not stop within %.0fs; killed (its uncommitted videos are "
                            "redelivered)", decoder.name, limit)  # fmt: skip
                self.runs.pop(decoder.run, None)
                if decoder.stats is not None:
                    self._carry(decoder.stats)
                del self.decoder_states[decoder.name]
                ray.kill(decoder.handle, no_restart=True)
        return len(ended)

    def stats(self, timeout_s: float = 1.0) -> list[ConsumerStats]:
        """The latest counters of every decoder that has answered once (a slow one keeps its last answer)."""
        for decoder in self.decoder_states.values():
            if decoder.stats_ref is None:
                decoder.stats_ref = decoder.handle.stats.remote()
        refs = {d.stats_ref: d for d in self.decoder_states.values()}
        # Wait (briefly) only for decoders that answered before; one not placed yet may take minutes.
        placed = [r for r, d in refs.items() if d.stats is not None]
        ready, _ = ray.wait(placed, num_returns=len(placed), timeout=timeout_s) if placed else ([], [])
        waiting = [r for r in refs if r not in set(ready)]
        ready += ray.wait(waiting, num_returns=len(waiting), timeout=0)[0] if waiting else []
        for ref in ready:
            decoder = refs[ref]
            decoder.stats_ref = None
            try:
                latest = ray.get(ref)
            except ray.exceptions.RayError as exc:
                log.warning("decoder stats unavailable: %s", exc)
                continue
            if decoder.stats is not None and latest.received < decoder.stats.received:
                self._carry(decoder.stats)  # Ray restarted it: its counters began again
            decoder.stats = latest
        current = [d.stats for d in self.decoder_states.values() if d.stats is not None]
        return [*current, self.finished] if self.finished.received else current

    def _carry(self, gone: ConsumerStats) -> None:
        """Add a gone decoder incarnation's counters to :attr:`finished` (work counts, not its state)."""
        f = self.finished
        f.received += gone.received
        f.verdicts += gone.verdicts
        f.dead_letters += gone.dead_letters
        f.committed += gone.committed
        for mine, theirs in ((f.by_status, gone.by_status), (f.errors_by_kind, gone.errors_by_kind)):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n

    def stop(self, timeout_s: float) -> list[ConsumerStats]:
        """Stop polling everywhere, let in-flight videos finish and commit, then release actors."""
        for decoder in self.decoder_states.values():
            decoder.handle.stop.remote()
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
        for decoder in self.decoder_states.values():
            ray.kill(decoder.handle, no_restart=True)
        for pool in self._pools():
            pool.kill_all()
        return [*results, self.finished] if results and self.finished.received else results


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
