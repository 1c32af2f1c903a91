import pytest

from workers.batching import BatchPlanner, Segment


def test_batch_planner_splits_large_requests_and_keeps_arrival_order():
    p = BatchPlanner(max_batch=4, max_wait_s=1.0)
    p.add(1, 3, now=0.0)
    p.add(2, 6, now=0.1)
    assert p.seconds_until_ready(0.2) == 0.0  # 9 >= 4: full batch now
    assert p.take() == [Segment(1, 0, 3), Segment(2, 0, 1)]
    assert p.take() == [Segment(2, 1, 5)]
    assert p.pending_items == 1
    assert p.take() == [Segment(2, 5, 6)]
    assert p.seconds_until_ready(0.0) is None


def test_batch_planner_lone_request_waits_at_most_max_wait():
    p = BatchPlanner(max_batch=32, max_wait_s=0.05)
    p.add(7, 2, now=10.0)
    assert p.seconds_until_ready(10.01) == pytest.approx(0.04)
    assert p.seconds_until_ready(10.06) == 0.0
    assert p.take() == [Segment(7, 0, 2)]


def test_batch_planner_every_item_is_taken_exactly_once():
    p = BatchPlanner(max_batch=5, max_wait_s=0)
    sizes = {i: n for i, n in enumerate([1, 7, 0, 3, 11, 2])}
    for rid, n in sizes.items():
        p.add(rid, n, now=0)
    seen = {rid: [] for rid in sizes}
    while p.pending_items:
        batch = p.take()
        assert 0 < sum(s.size for s in batch) <= 5
        for s in batch:
            seen[s.request_id].extend(range(s.start, s.stop))
    assert {rid: sorted(v) for rid, v in seen.items()} == {rid: list(range(n)) for rid, n in sizes.items()}


def test_batch_planner_rejects_zero_batch():
    with pytest.raises(ValueError):
        BatchPlanner(0, 1)
