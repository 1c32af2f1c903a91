"""Per-stage busy rates and the arrival rate, from cumulative counters."""

from __future__ import annotations

import pytest

from clipguard.contracts import StageLoad
from pipeline.autoscale_signals import ArrivalRate, BusyRate


def test_busy_rate_is_videos_per_busy_second_over_the_stage_not_wall_time():
    rate = BusyRate(smoothing=1.0)
    assert rate.update({"a": StageLoad(10.0, 20), "b": StageLoad(0.0, 0)}) is None  # baselines only
    # a: 4 videos in 2 busy s; b: 2 videos in 2 busy s -> 6 videos / 4 busy s, however long the wall interval.
    assert rate.update({"a": StageLoad(12.0, 24), "b": StageLoad(2.0, 2)}) == pytest.approx(1.5)


def test_busy_rate_keeps_its_estimate_while_the_stage_starves_and_smooths_samples():
    rate = BusyRate(min_busy_s=0.5, smoothing=0.5)
    rate.update({"a": StageLoad(0.0, 0)})
    rate.update({"a": StageLoad(2.0, 4)})  # 2/s
    assert rate.update({"a": StageLoad(2.1, 4)}) == pytest.approx(2.0)  # 0.1 busy s: too little to measure
    assert rate.update({"a": StageLoad(3.1, 8)}) == pytest.approx(3.0)  # 4/s, smoothed with 2/s


def test_busy_rate_new_or_restarted_actor_only_sets_its_baseline():
    rate = BusyRate(smoothing=1.0)
    rate.update({"a": StageLoad(5.0, 10)})
    # a restarted (counters reset), c is new: no sample from either.
    assert rate.update({"a": StageLoad(1.0, 1), "c": StageLoad(3.0, 30)}) is None
    assert rate.update({"a": StageLoad(2.0, 3), "c": StageLoad(4.0, 31)}) == pytest.approx(1.5)  # 3 videos / 2 s


def test_arrival_rate_from_log_end_offsets_per_partition():
    arrivals = ArrivalRate()
    assert arrivals.update({0: 100, 1: 50}, now=10.0) is None
    assert arrivals.update({0: 110, 1: 60}, now=12.0) == pytest.approx(10.0)  # 20 videos in 2 s
    # partition 1 missing from one sample (rebalance): its growth is spread over its own interval.
    assert arrivals.update({0: 110}, now=14.0) == pytest.approx(0.0)
    assert arrivals.update({0: 110, 1: 80}, now=16.0) == pytest.approx(5.0)  # 20 videos in 4 s


def test_arrival_rate_idle_topic_is_zero_not_unknown():
    arrivals = ArrivalRate()
    arrivals.update({0: 5}, now=0.0)
    assert arrivals.update({0: 5}, now=10.0) == 0.0
