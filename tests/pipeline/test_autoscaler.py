"""The autoscaler adapter: observations from the stream's counters, decisions applied to the pools.

On a real multi-node Ray cluster: tests/cluster/test_autoscale_cluster.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from clipguard.config import AutoscaleConfig, StreamConfig
from clipguard.contracts import StageLoad
from pipeline.autoscaler import PoolAutoscaler, policy_from_config
from pipeline.autoscaling_policy import Reason


@dataclass
class Totals:
    lag: int = 0
    lag_measured: bool = True
    in_flight: int = 0
    decodes_outstanding: int = 0
    faces_outstanding: int = 0
    detectors_outstanding: int = 0
    end_offsets: dict = field(default_factory=dict)
    partitions: int | None = None


class Pools:
    """The topology as the autoscaler sees it: sizes, pending actors, cumulative loads per actor."""

    def __init__(self, **sizes):
        self.sizes = dict(sizes)
        self.pending_ = dict.fromkeys(sizes, 0)
        self.busy = {stage: 0.0 for stage in sizes}  # per-stage cumulative, one actor each, for simplicity
        self.done = dict.fromkeys(sizes, 0)
        self.calls = []

    def work(self, stage, busy_s, videos):
        self.busy[stage] += busy_s
        self.done[stage] += videos

    def size(self, stage):
        return self.sizes[stage]

    def pending(self, stage):
        return self.pending_[stage]

    def loads(self, stage):
        return {f"{stage}-0": StageLoad(self.busy[stage], self.done[stage])}

    def resize(self, stage, n):
        self.calls.append((stage, n))
        self.sizes[stage] = n


AUTO = AutoscaleConfig(
    interval_s=1,
    decoders_max=4,
    face_workers_max=3,
    detectors_max=3,
    target_drain_s=5,
    scale_up_cooldown_s=0,
    scale_down_cooldown_s=2,
)


def test_policy_bounds_are_the_explicit_autoscale_settings():
    p = policy_from_config(AutoscaleConfig(), StreamConfig(decoders=2, face_workers=3, detectors=1))
    assert (p.decoders.min_size, p.decoders.max_size) == (1, 8)
    assert (p.face_workers.min_size, p.face_workers.max_size) == (1, 8)
    assert (p.detectors.min_size, p.detectors.max_size) == (1, 4)
    assert AutoscaleConfig().enabled, "autoscaling is on as shipped"


def test_autoscaler_grows_only_the_stage_whose_own_busy_rate_is_short():
    """Faces take 1 s of busy time per video, detectors 0.05 s: only the faces grow.

    Charging the end-to-end verdict rate to every stage would grow both.
    """
    scaler = PoolAutoscaler(AUTO, StreamConfig())
    pools = Pools(decoders=1, face_workers=1, detectors=1)
    totals = Totals(lag=40, in_flight=8, decodes_outstanding=0, faces_outstanding=6, detectors_outstanding=1)
    scaler.step(totals, pools, now=100.0)  # baselines
    pools.work("decoders", 1.0, 10)
    pools.work("face_workers", 2.0, 2)
    pools.work("detectors", 0.1, 2)
    d = scaler.step(totals, pools, now=102.0)
    assert d.face_workers.reason is Reason.SCALE_UP and pools.sizes["face_workers"] == 3
    assert d.detectors.desired == 1 and pools.sizes["detectors"] == 1
    assert scaler.last_observation.face_workers.throughput_per_actor == pytest.approx(1.0)
    assert scaler.step(totals, pools, now=102.5) is None  # not before interval_s


def test_autoscaler_arrival_rate_from_offsets_keeps_up_with_steady_traffic():
    """No lag, nothing queued, but 6 videos/s arrive at 2/s per face actor: ceil(6 / 1.6) = 4 -> max 3."""
    scaler = PoolAutoscaler(AUTO, StreamConfig())
    pools = Pools(decoders=1, face_workers=1, detectors=1)
    scaler.step(Totals(end_offsets={0: 100, 1: 100}, faces_outstanding=1), pools, now=0.0)
    pools.work("face_workers", 1.0, 2)
    pools.work("decoders", 0.1, 2)
    pools.work("detectors", 0.1, 2)
    d = scaler.step(Totals(end_offsets={0: 106, 1: 106}, faces_outstanding=1), pools, now=2.0)
    assert scaler.last_observation.arrival_rate == pytest.approx(6.0)
    assert d.face_workers.desired == 3


def test_autoscaler_caps_decoders_at_the_partition_count():
    scaler = PoolAutoscaler(AUTO, StreamConfig())
    pools = Pools(decoders=1, face_workers=1, detectors=1)
    totals = Totals(lag=500, in_flight=2, decodes_outstanding=2, partitions=2)
    scaler.step(totals, pools, now=0.0)
    pools.work("decoders", 10.0, 2)
    scaler.step(totals, pools, now=2.0)
    assert pools.sizes["decoders"] == 2  # the policy wanted 4 (its max); the topic has 2 partitions


def test_autoscaler_waits_for_pending_actors_before_growing_again():
    scaler = PoolAutoscaler(AUTO, StreamConfig())
    pools = Pools(decoders=1, face_workers=1, detectors=2)
    pools.pending_["detectors"] = 1
    totals = Totals(lag=0, detectors_outstanding=30)
    scaler.step(totals, pools, now=0.0)
    pools.work("detectors", 2.0, 1)
    d = scaler.step(totals, pools, now=2.0)
    assert (d.detectors.desired, d.detectors.reason) == (2, Reason.PENDING)


def test_autoscaler_decides_nothing_before_the_lag_is_measured():
    """Decoders still joining the group report no lag: that is not an idle topic."""
    scaler = PoolAutoscaler(AUTO, StreamConfig())
    pools = Pools(decoders=2, face_workers=3, detectors=3)
    for t in range(0, 12, 2):
        assert scaler.step(Totals(lag_measured=False), pools, now=float(t)) is None
    assert pools.calls == []


def test_autoscaler_shrinks_to_the_minimum_when_idle():
    scaler = PoolAutoscaler(AUTO, StreamConfig())
    pools = Pools(decoders=2, face_workers=3, detectors=3)
    for t in range(0, 12, 2):
        scaler.step(Totals(end_offsets={0: 50}), pools, now=float(t))
    assert pools.sizes == {"decoders": 1, "face_workers": 1, "detectors": 1}
