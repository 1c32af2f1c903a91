"""How many actors each stage should have: a pure function of what the stream observes.

The stream (or a controller beside it) samples its metrics every few seconds, builds a
:class:`PipelineObservation` and asks :func:`decide_pool_sizes` for a
:class:`ScalingDecision`. Resizing the Ray actor pools is somebody else's job; this
module imports no Ray, Kafka or Redis, keeps no state and reads no clock, so every
rule below is a unit test away. Node autoscaling (KubeRay / ``ray up``) follows the
actors: an actor that does not fit makes the Ray autoscaler add a node, and a node
whose actors are gone is removed after its idle timeout.

Units: every count is in **videos** (one Kafka message is one video) and every rate
in videos per second, for all three stages, so that Kafka lag and stage queues add up.

Per stage, in pipeline order (decoders -> face workers -> detectors), with
``T = target_drain_s`` and ``r`` the stage's throughput per busy actor:

1. A pool outside ``[min_size, max_size]`` is brought inside at once (no cooldown):
   the bounds are the operator's word. The decoders' maximum is also the topic's
   partition count when known: a consumer-group member beyond it gets no partition.
2. ``reachable`` = the stage's own queue and in-flight videos + what upstream can
   hand it within ``T``: Kafka lag for the decoders; for later stages what the
   previous stage holds or receives, capped at that stage's capacity times ``T``.
   So a slow decoder pool does not make the detectors grow for videos they cannot
   receive yet, while videos already past the decoders count in full.
3. Idle (nothing reachable, no known arrivals): shrink straight to ``min_size``
   once the scale-down cooldown has passed.
4. ``r`` unknown: hold. Sizing on a guess is how pools run away.
5. Actors still starting (``pending``: created, not yet ready, e.g. waiting minutes for
   a GPU node) count in the pool but get no work; the pool does not grow again
   until they are ready, so a cluster that cannot place them is not asked for more.
6. Scale up when the reachable work would take longer than ``T`` to drain
   (``ceil(reachable / (r * T))`` actors), or, when the arrival rate is known, when it
   exceeds ``target_utilization`` of capacity. Up to ``max_step_up`` actors a step,
   never above ``max_size``, at most once per ``scale_up_cooldown_s``.
7. Scale down slowly: only with the stage's own queue empty, after
   ``scale_down_cooldown_s``, by at most ``max_step_down``, and only to a size that
   would drain the work in ``scale_down_drain_fraction * T``, keep arrivals under
   ``scale_down_utilization`` and keep the in-flight videos under
   ``target_utilization`` of the smaller pool. Those stricter thresholds are the
   hysteresis: a size chosen by rule 7 never triggers rule 6 on the same
   observation, so the pools do not flap. Pending actors are removed first.
8. Otherwise hold.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import StrEnum

from clipguard.errors import ConfigError

# Ceil of a ratio that should be an integer must not round up on float noise.
_EPS = 1e-9


class Stage(StrEnum):
    """The resizable actor pools, named like the ``stream`` config fields."""

    DECODERS = "decoders"
    FACE_WORKERS = "face_workers"
    DETECTORS = "detectors"


STAGE_ORDER: tuple[Stage, ...] = (Stage.DECODERS, Stage.FACE_WORKERS, Stage.DETECTORS)


class Reason(StrEnum):
    """Why a stage got its size; stable strings, fit for logs and metric labels."""

    BELOW_MIN = "below_min"  # raised to min_size
    ABOVE_MAX = "above_max"  # lowered to max_size
    SCALE_UP = "scale_up"  # work would not drain within target_drain_s
    AT_MAX = "at_max"  # would scale up, but the pool is at max_size
    UP_COOLDOWN = "up_cooldown"  # would scale up, but the last change is too recent
    SCALE_DOWN = "scale_down"  # capacity to spare beyond the hysteresis band
    IDLE = "idle"  # nothing to do: go to (or stay at) min_size
    DOWN_COOLDOWN = "down_cooldown"  # would scale down, but the last change is too recent
    QUEUE_NOT_EMPTY = "queue_not_empty"  # would scale down, but videos wait in the stage queue
    NO_THROUGHPUT = "no_throughput"  # work waits but the per-actor rate is unknown: hold
    PENDING = "pending"  # would scale up, but actors of this pool are not ready yet
    STEADY = "steady"  # inside the hysteresis band


@dataclass(frozen=True)
class StageObservation:
    """What one stage looks like now."""

    pool_size: int  # actors in the pool: ready ones and pending ones
    queue_depth: int = 0  # videos waiting in front of the stage's actors
    in_flight: int = 0  # videos an actor of this stage is working on
    # Videos/s one actor completes *while busy* (1 / mean busy time per video), e.g. an
    # EWMA of completions over busy time; None while unmeasured. A rate measured over
    # wall-clock time would fall when the stage starves and make it look slow.
    throughput_per_actor: float | None = None
    seconds_since_scale: float = math.inf  # since this pool last changed size
    pending: int = 0  # of pool_size: created but not ready yet (no work is routed to them)

    def __post_init__(self) -> None:
        if self.pool_size < 0 or self.queue_depth < 0 or self.in_flight < 0:
            msg = f"pool_size, queue_depth and in_flight must be >= 0: {self}"
            raise ValueError(msg)
        if not 0 <= self.pending <= self.pool_size:
            msg = f"pending must lie in [0, pool_size]: {self}"
            raise ValueError(msg)
        if self.throughput_per_actor is not None and not self.throughput_per_actor >= 0:
            msg = f"throughput_per_actor must be >= 0 or None: {self}"
            raise ValueError(msg)
        if not self.seconds_since_scale >= 0:
            msg = f"seconds_since_scale must be >= 0: {self}"
            raise ValueError(msg)


@dataclass(frozen=True)
class PipelineObservation:
    """One sample of the whole stream."""

    consumer_lag: int  # videos in Kafka not yet consumed (sum over partitions)
    decoders: StageObservation
    face_workers: StageObservation
    detectors: StageObservation
    # Videos/s arriving in the topic (e.g. rate of produced offsets), if known. Lets
    # the policy keep up with steady traffic instead of reacting to lag after the fact.
    arrival_rate: float | None = None
    # Partitions of the topic, if known: the decoders (consumer-group members) never exceed it.
    topic_partitions: int | None = None

    def __post_init__(self) -> None:
        if self.consumer_lag < 0:
            msg = f"consumer_lag must be >= 0, got {self.consumer_lag}"
            raise ValueError(msg)
        if self.topic_partitions is not None and self.topic_partitions < 1:
            msg = f"topic_partitions must be >= 1 or None, got {self.topic_partitions}"
            raise ValueError(msg)
        if self.arrival_rate is not None and not self.arrival_rate >= 0:
            msg = f"arrival_rate must be >= 0 or None, got {self.arrival_rate}"
            raise ValueError(msg)

    def stage(self, stage: Stage) -> StageObservation:
        return getattr(self, stage.value)


@dataclass(frozen=True)
class StageBounds:
    """Limits for one pool."""

    min_size: int = 1  # >= 1: the stream needs every stage to make progress
    max_size: int = 8
    max_step_up: int = 4  # actors added per decision at most (scale up fast)
    max_step_down: int = 1  # actors removed per decision at most (scale down slowly)
    videos_per_actor: int = 1  # videos one actor works on at once (a batching detector: more)

    def __post_init__(self) -> None:
        # min_size 0 would leave a stage with no actor and no rate to size it by.
        if not 1 <= self.min_size <= self.max_size:
            msg = f"need 1 <= min_size <= max_size: {self}"
            raise ConfigError(msg)
        if self.max_step_up < 1 or self.max_step_down < 1 or self.videos_per_actor < 1:
            msg = f"max_step_up, max_step_down and videos_per_actor must be >= 1: {self}"
            raise ConfigError(msg)


@dataclass(frozen=True)
class AutoscalingPolicy:
    """Bounds per stage and the shared thresholds."""

    decoders: StageBounds = field(default_factory=StageBounds)
    face_workers: StageBounds = field(default_factory=StageBounds)
    detectors: StageBounds = field(default_factory=StageBounds)
    target_drain_s: float = 120.0  # work should drain within this long
    scale_up_cooldown_s: float = 30.0  # a new node takes about this long to join
    scale_down_cooldown_s: float = 300.0  # wait this long after any change before shrinking
    scale_down_drain_fraction: float = 0.5  # shrink only to a size that drains in this share of T
    target_utilization: float = 0.8  # arrivals / capacity aimed for when growing
    scale_down_utilization: float = 0.5  # shrink only if arrivals stay below this share of capacity

    def __post_init__(self) -> None:
        if not self.target_drain_s > 0:
            msg = f"target_drain_s must be > 0, got {self.target_drain_s}"
            raise ConfigError(msg)
        if not (self.scale_up_cooldown_s >= 0 and self.scale_down_cooldown_s >= 0):
            msg = "cooldowns must be >= 0"
            raise ConfigError(msg)
        if not 0 < self.scale_down_drain_fraction <= 1:
            msg = f"scale_down_drain_fraction must be in (0, 1], got {self.scale_down_drain_fraction}"
            raise ConfigError(msg)
        # down <= target is what makes the band between growing and shrinking non-empty.
        if not 0 < self.scale_down_utilization <= self.target_utilization <= 1:
            msg = (
                "need 0 < scale_down_utilization <= target_utilization <= 1, got "
                f"{self.scale_down_utilization} and {self.target_utilization}"
            )
            raise ConfigError(msg)

    def bounds(self, stage: Stage) -> StageBounds:
        return getattr(self, stage.value)


@dataclass(frozen=True)
class StageDecision:
    """The size one pool should have, and why."""

    stage: Stage
    current: int
    desired: int
    reason: Reason
    detail: str  # the numbers behind the reason, for the log line

    @property
    def delta(self) -> int:
        return self.desired - self.current

    @property
    def changed(self) -> bool:
        return self.desired != self.current


@dataclass(frozen=True)
class ScalingDecision:
    """One :class:`StageDecision` per pool."""

    decoders: StageDecision
    face_workers: StageDecision
    detectors: StageDecision

    def stage(self, stage: Stage) -> StageDecision:
        return getattr(self, stage.value)

    @property
    def decisions(self) -> tuple[StageDecision, ...]:
        return tuple(self.stage(s) for s in STAGE_ORDER)

    @property
    def changed(self) -> bool:
        return any(d.changed for d in self.decisions)


def decide_pool_sizes(observation: PipelineObservation, policy: AutoscalingPolicy) -> ScalingDecision:
    """Desired pool size per stage, with the reason (see the module docstring for the rules).

    Args:
        observation: the stream's current lag, queues, pools and per-actor rates.
        policy: bounds per stage, drain target, cooldowns and hysteresis thresholds.

    Returns:
        A decision for decoders, face workers and detectors; ``desired`` always lies
        within the stage's ``[min_size, max_size]``.
    """
    horizon = policy.target_drain_s
    # Fluid tandem model over the horizon: what reaches a stage within T is what its
    # upstream neighbour can pass on within T, i.e. min(what it holds or receives, its
    # capacity * T). Kafka hands the decoders the whole lag at once.
    incoming = float(observation.consumer_lag)
    upstream_rate = math.inf  # slowest upstream capacity, videos/s, for steady arrivals
    arrivals = observation.arrival_rate
    decisions: dict[Stage, StageDecision] = {}
    for stage in STAGE_ORDER:
        obs = observation.stage(stage)
        reachable = incoming + obs.queue_depth + obs.in_flight
        stage_arrivals = None if arrivals is None else min(arrivals, upstream_rate)
        bounds, why = policy.bounds(stage), ""
        if stage is Stage.DECODERS and observation.topic_partitions is not None:
            parts = observation.topic_partitions
            if parts < bounds.max_size:
                bounds = dataclasses.replace(bounds, min_size=min(bounds.min_size, parts), max_size=parts)
                why = f" ({parts} topic partitions)"
        decision = _decide_stage(stage, obs, bounds, policy, reachable, stage_arrivals, why)
        decisions[stage] = decision
        rate = obs.throughput_per_actor
        capacity = decision.desired * rate if rate else math.inf  # unknown rate: no cap
        incoming = min(reachable, capacity * horizon)
        upstream_rate = min(upstream_rate, capacity)
    return ScalingDecision(**{s.value: d for s, d in decisions.items()})


def _actors_for(amount: float, per_actor: float) -> int:
    """Actors needed so that ``amount`` fits when each actor contributes ``per_actor``."""
    if amount <= 0:
        return 0
    return math.ceil(amount / per_actor - _EPS)


def _decide_stage(
    stage: Stage,
    obs: StageObservation,
    bounds: StageBounds,
    policy: AutoscalingPolicy,
    reachable: float,
    arrivals: float | None,
    max_why: str = "",
) -> StageDecision:
    current = obs.pool_size

    def decision(desired: int, reason: Reason, detail: str) -> StageDecision:
        return StageDecision(stage=stage, current=current, desired=desired, reason=reason, detail=detail)

    if current < bounds.min_size:
        return decision(bounds.min_size, Reason.BELOW_MIN, f"pool {current} < min {bounds.min_size}")
    if current > bounds.max_size:
        return decision(bounds.max_size, Reason.ABOVE_MAX, f"pool {current} > max {bounds.max_size}{max_why}")

    since = obs.seconds_since_scale
    if reachable <= 0 and not arrivals:
        if current == bounds.min_size:
            return decision(current, Reason.IDLE, f"idle at min {bounds.min_size}")
        if since < policy.scale_down_cooldown_s:
            return decision(current, Reason.DOWN_COOLDOWN, f"idle; {since:.0f}s < {policy.scale_down_cooldown_s:.0f}s")
        return decision(bounds.min_size, Reason.IDLE, f"idle: {current} -> min {bounds.min_size}")

    rate = obs.throughput_per_actor
    if rate is None or rate <= 0:
        return decision(current, Reason.NO_THROUGHPUT, f"{reachable:.0f} videos waiting, per-actor rate unknown")

    horizon = policy.target_drain_s
    need_up = max(
        _actors_for(reachable, rate * horizon),
        _actors_for(arrivals or 0.0, rate * policy.target_utilization),
    )
    numbers = f"work {reachable:.0f} videos at {rate:.3g}/s per actor, drain target {horizon:.0f}s"
    if arrivals is not None:
        numbers += f", arrivals {arrivals:.3g}/s"
    if need_up > current:
        if current >= bounds.max_size:
            return decision(current, Reason.AT_MAX, f"need {need_up} > max {bounds.max_size}{max_why}: {numbers}")
        if obs.pending:
            return decision(current, Reason.PENDING, f"need {need_up}; {obs.pending} not ready yet: {numbers}")
        if since < policy.scale_up_cooldown_s:
            return decision(current, Reason.UP_COOLDOWN, f"need {need_up}; {since:.0f}s since last change: {numbers}")
        desired = min(need_up, current + bounds.max_step_up, bounds.max_size)
        return decision(desired, Reason.SCALE_UP, f"need {need_up}: {numbers}")

    need_down = max(
        bounds.min_size,
        _actors_for(reachable, rate * horizon * policy.scale_down_drain_fraction),
        _actors_for(arrivals or 0.0, rate * policy.scale_down_utilization),
        _actors_for(obs.in_flight, bounds.videos_per_actor * policy.target_utilization),
    )
    if need_down < current:
        if obs.queue_depth > 0:
            return decision(current, Reason.QUEUE_NOT_EMPTY, f"{obs.queue_depth} queued: {numbers}")
        if since < policy.scale_down_cooldown_s:
            return decision(current, Reason.DOWN_COOLDOWN, f"could shrink to {need_down}: {numbers}")
        desired = max(need_down, current - bounds.max_step_down)
        return decision(desired, Reason.SCALE_DOWN, f"{need_down} would do: {numbers}")
    return decision(current, Reason.STEADY, numbers)
