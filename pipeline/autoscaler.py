"""Resize the stage pools from what the stream observes, using the pure policy.

Each ``interval_s``, from the decoders' totals and the pools' own counters:

* Kafka lag (minus what decoders already hold) and the topic's partition count;
* the arrival rate, from the growth of the topic's log-end offsets
  (:class:`~pipeline.autoscale_signals.ArrivalRate`);
* per stage: videos waiting for and in its actors, and what one actor finishes per
  second of its *own* busy time (:class:`~pipeline.autoscale_signals.BusyRate` over
  each actor's :class:`~clipguard.contracts.StageLoad`), never the end-to-end verdict
  rate, so a stage that is not the bottleneck does not grow;
* pool sizes, counting actors still pending (created, not ready: they get no work).

``decide_pool_sizes`` turns that into sizes, applied through ``resize`` (the topology
adds pending actors, or drains and retires actors). Asking for more GPU detector actors
than the cluster has leaves them pending, which is what makes Ray's autoscaler add GPU
nodes; retired actors free their node, so idle nodes scale down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Protocol

from clipguard.config import AutoscaleConfig, StreamConfig
from clipguard.contracts import StageLoad
from pipeline.autoscale_signals import ArrivalRate, BusyRate
from pipeline.autoscaling_policy import (
    AutoscalingPolicy,
    PipelineObservation,
    ScalingDecision,
    Stage,
    StageBounds,
    StageObservation,
    decide_pool_sizes,
)

log = logging.getLogger(__name__)


class AutoscaleTotals(Protocol):
    """The stream-wide counters the autoscaler reads (``pipeline.runner.RunTotals``)."""

    lag: int  # Kafka lag over the assigned partitions (unread + in flight)
    lag_measured: bool  # a decoder has measured the lag with partitions assigned
    in_flight: int  # videos the decoders hold
    decodes_outstanding: int  # videos waiting for or in a decode
    faces_outstanding: int  # calls waiting on or running in face actors
    detectors_outstanding: int
    end_offsets: dict[int, int]  # partition -> log-end offset
    partitions: int | None  # partitions of the topic


class ScalablePools(Protocol):
    """What the autoscaler needs of the topology."""

    def size(self, stage: str) -> int: ...  # ready + pending actors
    def pending(self, stage: str) -> int: ...
    def loads(self, stage: str) -> Mapping[str, StageLoad]: ...  # cumulative counters per live actor
    def resize(self, stage: str, n: int) -> None: ...


def policy_from_config(auto: AutoscaleConfig, stream: StreamConfig) -> AutoscalingPolicy:
    """The policy's bounds and thresholds from the ``autoscale`` section (videos per actor from ``stream``)."""

    def bounds(stage: str, videos_per_actor: int) -> StageBounds:
        return StageBounds(
            min_size=getattr(auto, f"{stage}_min"),
            max_size=getattr(auto, f"{stage}_max"),
            max_step_up=auto.max_step_up,
            max_step_down=auto.max_step_down,
            videos_per_actor=videos_per_actor,
        )

    return AutoscalingPolicy(
        decoders=bounds("decoders", stream.decode_concurrency),
        face_workers=bounds("face_workers", 1),
        detectors=bounds("detectors", stream.max_in_flight),
        target_drain_s=auto.target_drain_s,
        scale_up_cooldown_s=auto.scale_up_cooldown_s,
        scale_down_cooldown_s=auto.scale_down_cooldown_s,
    )


class PoolAutoscaler:
    """Stateful wrapper: when each pool last changed, and the measured rates."""

    def __init__(self, auto: AutoscaleConfig, stream: StreamConfig) -> None:
        self.auto = auto
        self.stream = stream
        self.policy = policy_from_config(auto, stream)
        self._changed: dict[Stage, float] = {}  # pools count as changed at the first step
        self.rates = {stage: BusyRate() for stage in Stage}
        self.arrivals = ArrivalRate()
        self._next = 0.0
        self.last_observation: PipelineObservation | None = None

    def observe(self, totals: AutoscaleTotals, pools: ScalablePools, now: float) -> PipelineObservation:
        """One :class:`PipelineObservation` (updates the rate estimates)."""
        if not self._changed:
            self._changed = dict.fromkeys(Stage, now)
        arrival = self.arrivals.update(totals.end_offsets, now)
        per_actor = {Stage.DECODERS: self.stream.decode_concurrency, Stage.FACE_WORKERS: 1, Stage.DETECTORS: 1}

        def stage_obs(stage: Stage, outstanding: int) -> StageObservation:
            size, pending = pools.size(stage.value), pools.pending(stage.value)
            in_flight = min(outstanding, (size - pending) * per_actor[stage])
            return StageObservation(
                pool_size=size,
                pending=pending,
                queue_depth=outstanding - in_flight,
                in_flight=in_flight,
                throughput_per_actor=self.rates[stage].update(pools.loads(stage.value)),
                seconds_since_scale=now - self._changed[stage],
            )

        return PipelineObservation(
            consumer_lag=max(0, totals.lag - totals.in_flight),  # lag counts in-flight work too
            decoders=stage_obs(Stage.DECODERS, totals.decodes_outstanding),
            face_workers=stage_obs(Stage.FACE_WORKERS, totals.faces_outstanding),
            detectors=stage_obs(Stage.DETECTORS, totals.detectors_outstanding),
            arrival_rate=arrival,
            topic_partitions=totals.partitions,
        )

    def step(self, totals: AutoscaleTotals, pools: ScalablePools, now: float | None = None) -> ScalingDecision | None:
        """Decide and resize if ``interval_s`` has passed since the last decision; else None."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return None
        if not totals.lag_measured:
            # Decoders still joining the group: an unmeasured lag is not an empty topic (it would look idle).
            log.debug("autoscale: waiting for the first Kafka lag measurement")
            return None
        self._next = now + self.auto.interval_s
        obs = self.observe(totals, pools, now)
        self.last_observation = obs
        decision = decide_pool_sizes(obs, self.policy)
        for d in decision.decisions:
            if d.changed:
                log.info("autoscale %s: %d -> %d (%s: %s)", d.stage, d.current, d.desired, d.reason, d.detail,
                         extra={"stage": str(d.stage), "reason": str(d.reason)})  # fmt: skip
                pools.resize(d.stage.value, d.desired)
                self._changed[d.stage] = now
            else:
                log.debug("autoscale %s: %d (%s: %s)", d.stage, d.current, d.reason, d.detail)
        return decision
