"""Resize the stage pools from what the stream observes, using the pure policy.

Each ``interval_s``: turn the decoders' totals into a
``PipelineObservation`` (consumer lag, calls outstanding per stage, measured
throughput), ask ``decide_pool_sizes``, and apply the decision through
``Topology.resize``. Asking for more GPU detector actors than the cluster has
leaves them pending, which is what makes Ray's autoscaler add GPU nodes; removed
actors are released once their in-flight calls finish, so idle nodes scale down.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from clipguard.config import AutoscaleConfig, StreamConfig
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


class _Totals(Protocol):
    verdicts: int
    lag: int
    in_flight: int
    faces_outstanding: int
    detectors_outstanding: int


class _Pools(Protocol):
    def size(self, stage: str) -> int: ...
    def resize(self, stage: str, n: int) -> None: ...


def policy_from_config(auto: AutoscaleConfig, stream: StreamConfig) -> AutoscalingPolicy:
    def bounds(stage: str, current: int, videos_per_actor: int) -> StageBounds:
        lo = getattr(auto, f"{stage}_min") or current
        hi = getattr(auto, f"{stage}_max") or max(current, lo)
        return StageBounds(min_size=lo, max_size=hi, videos_per_actor=videos_per_actor)

    return AutoscalingPolicy(
        decoders=bounds("decoders", stream.decoders, stream.max_in_flight),
        face_workers=bounds("face_workers", stream.face_workers, 1),
        detectors=bounds("detectors", stream.detectors, stream.max_in_flight),
        target_drain_s=auto.target_drain_s,
        scale_up_cooldown_s=auto.scale_up_cooldown_s,
        scale_down_cooldown_s=auto.scale_down_cooldown_s,
    )


class PoolAutoscaler:
    """Stateful wrapper: remembers when each pool last changed and the verdict rate."""

    def __init__(self, auto: AutoscaleConfig, stream: StreamConfig) -> None:
        self.auto = auto
        self.policy = policy_from_config(auto, stream)
        self._changed: dict[Stage, float] = {}  # pools count as changed at the first step
        self._last: tuple[float, int] | None = None
        self._next = 0.0

    def step(self, totals: _Totals, pools: _Pools, now: float | None = None) -> ScalingDecision | None:
        now = time.monotonic() if now is None else now
        if now < self._next:
            return None
        self._next = now + self.auto.interval_s
        if not self._changed:
            self._changed = dict.fromkeys(Stage, now)
        rate = None
        if self._last is not None and now > self._last[0]:
            rate = (totals.verdicts - self._last[1]) / (now - self._last[0])
        self._last = (now, totals.verdicts)

        def observe(stage: Stage, outstanding: int) -> StageObservation:
            size = pools.size(stage.value)
            busy = outstanding > 0 and rate is not None and rate > 0
            return StageObservation(
                pool_size=size,
                queue_depth=max(0, outstanding - size),
                in_flight=min(outstanding, size),
                throughput_per_actor=rate / size if busy else None,
                seconds_since_scale=now - self._changed[stage],
            )

        obs = PipelineObservation(
            consumer_lag=max(0, totals.lag - totals.in_flight),  # lag counts in-flight work too
            decoders=observe(Stage.DECODERS, totals.in_flight),
            face_workers=observe(Stage.FACE_WORKERS, totals.faces_outstanding),
            detectors=observe(Stage.DETECTORS, totals.detectors_outstanding),
        )
        decision = decide_pool_sizes(obs, self.policy)
        for d in (decision.decoders, decision.face_workers, decision.detectors):
            if d.desired != d.current:
                log.info("autoscale %s: %d -> %d (%s: %s)", d.stage, d.current, d.desired, d.reason, d.detail)
                pools.resize(d.stage.value, d.desired)
                self._changed[d.stage] = now
        return decision
