"""Busy time counts once while any work runs; finished videos counted, cancelled ones not."""

from __future__ import annotations

import pytest

from workers.busy_meter import BusyMeter


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_busy_meter_counts_overlapping_work_once_and_idle_time_not_at_all():
    clock = Clock()
    meter = BusyMeter(clock)
    with meter.video(), meter.busy():
        clock.now += 2  # one video alone for 2 s
        with meter.video(), meter.busy():
            clock.now += 1  # two at once for 1 s: still 1 busy second
            assert meter.snapshot().in_flight == 2
    clock.now += 10  # idle: not busy
    load = meter.snapshot()
    assert (load.busy_s, load.completed, load.in_flight) == (3.0, 2, 0)


def test_busy_meter_snapshot_includes_the_running_stretch():
    clock = Clock()
    meter = BusyMeter(clock)
    with meter.busy():
        clock.now += 1.5
        assert meter.snapshot().busy_s == 1.5


def test_busy_meter_failed_video_is_finished_work_a_cancelled_one_is_not():
    meter = BusyMeter(Clock())
    with pytest.raises(ValueError), meter.video():
        raise ValueError("bad video")
    with pytest.raises(KeyboardInterrupt), meter.video():  # stands for asyncio.CancelledError (a BaseException)
        raise KeyboardInterrupt
    assert meter.snapshot().completed == 1
