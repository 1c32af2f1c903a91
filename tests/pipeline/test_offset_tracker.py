import pytest

from clipguard.errors import InvalidOffsetError
from pipeline.offset_tracker import OffsetTracker


def test_offset_tracker_out_of_order_completion_commits_only_the_finished_prefix():
    t = OffsetTracker()
    for off in (10, 11, 12):
        t.add("p0", off)
    assert t.committable() == {"p0": 10}  # nothing finished: next-to-read stays 10
    t.committed("p0", 10)
    t.done("p0", 12)
    assert t.committable() == {}  # 10 and 11 still pending
    t.done("p0", 10)
    assert t.committable() == {"p0": 11}
    t.committed("p0", 11)
    t.done("p0", 11)
    assert t.committable() == {"p0": 13}
    assert t.in_flight() == 0


def test_offset_tracker_backwards_offset_raises():
    t = OffsetTracker()
    t.add("p0", 5)
    with pytest.raises(InvalidOffsetError):
        t.add("p0", 5)


def test_offset_tracker_revoked_partition_ignores_late_completion():
    t = OffsetTracker()
    t.add("p0", 1)
    t.add("p1", 7)
    t.revoke(["p0"])
    assert t.done("p0", 1) is False
    assert "p0" not in t.committable()
    assert t.done("p1", 7) is True
    assert t.committable() == {"p1": 8}


def test_offset_tracker_partitions_are_independent():
    t = OffsetTracker()
    t.add("a", 0)
    t.add("b", 0)
    t.done("b", 0)
    assert t.committable() == {"a": 0, "b": 1}
    assert t.in_flight("a") == 1 and t.in_flight("b") == 0
