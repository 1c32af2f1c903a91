"""The stream's totals from the decoders' counters."""

from __future__ import annotations

from pipeline.consume_loop import ConsumerStats
from pipeline.runner import RunTotals


def test_run_totals_partition_reported_twice_mid_rebalance_counts_once():
    a = ConsumerStats(name="a", lag={0: 5, 1: 7}, end_offsets={0: 10, 1: 12}, partitions=2)
    b = ConsumerStats(name="b", lag={1: 6}, end_offsets={1: 12}, partitions=2)
    t = RunTotals.of([a, b])
    assert (t.lag, t.end_offsets, t.partitions) == (12, {0: 10, 1: 12}, 2)


def test_run_totals_partition_of_a_lost_consumer_keeps_its_last_lag():
    seen: dict[int, int] = {}
    both = [ConsumerStats(name="a", lag={0: 9}), ConsumerStats(name="b", lag={1: 8})]
    assert RunTotals.of(both).remember_lag(seen).lag == 17
    # b's node died: nobody reports partition 1 until the group hands it over; its videos still wait.
    assert RunTotals.of(both[:1]).remember_lag(seen).lag == 17
    # a took partition 1 over and measured it again.
    assert RunTotals.of([ConsumerStats(name="a", lag={0: 3, 1: 2})]).remember_lag(seen).lag == 5
