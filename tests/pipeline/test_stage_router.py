"""The least-busy router: leases, pool replacement, counts per member, waiting on an empty pool."""

from __future__ import annotations

import asyncio

from pipeline.stage_router import StageRouter


def test_stage_router_picks_least_busy_and_survives_pool_replacement():
    async def scenario():
        a, b, c = object(), object(), object()
        r = StageRouter([("a", a), ("b", b)])
        async with r.lease() as first, r.lease() as second:
            assert {first, second} == {a, b}
            r.replace([("b", b), ("c", c)])  # a leaves the pool while a call to it is outstanding
            async with r.lease() as third:
                assert third is c
            assert r.calls["a"].outstanding == 1  # still counted until its call returns
        assert r.outstanding == 0 and len(r) == 2
        return r

    r = asyncio.run(scenario())
    assert {n: c.sent for n, c in r.calls.items()} == {"b": 1, "c": 1}  # a left, with nothing outstanding


def test_stage_router_counts_survive_a_replace_with_equal_handles():
    """Handles pushed again (new objects, same actor) keep their outstanding counts."""

    class Handle:
        def __init__(self, key):
            self.key = key

        def __hash__(self):
            return hash(self.key)

        def __eq__(self, other):
            return self.key == other.key

    async def scenario():
        r = StageRouter([("x", Handle(1)), ("y", Handle(2))])
        async with r.lease():
            r.replace([("x", Handle(1)), ("y", Handle(2))])
            async with r.lease():
                return {n: (c.sent, c.outstanding) for n, c in r.calls.items()}

    # the second call went to the idle member, so the first one's count survived the replace
    assert asyncio.run(scenario()) == {"x": (1, 1), "y": (1, 1)}


def test_stage_router_lease_waits_for_a_member_instead_of_failing():
    async def scenario():
        r = StageRouter([])
        got = []

        async def call():
            async with r.lease() as handle:
                got.append(handle)

        task = asyncio.create_task(call())
        await asyncio.sleep(0.05)
        assert not got and not task.done()  # nothing to route to: the video waits
        r.replace([("late", "handle")])
        await asyncio.wait_for(task, 1)
        return got, r

    got, r = asyncio.run(scenario())
    assert got == ["handle"] and r.calls["late"].sent == 1


def test_stage_router_discard_stops_routing_to_a_dead_member():
    async def scenario():
        r = StageRouter([("a", "A"), ("b", "B")])
        r.discard("A")
        return [await _one(r) for _ in range(3)]

    assert asyncio.run(scenario()) == ["B", "B", "B"]


def test_stage_router_avoids_a_suspect_member_then_tries_it_again():
    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()

    async def scenario():
        r = StageRouter([("a", "A"), ("b", "B")], clock=clock)
        r.suspect("A", for_s=5)
        picks = [await _one(r) for _ in range(2)]  # both go to B while A is suspect
        clock.now = 6.0
        async with r.lease() as first, r.lease() as second:  # A is back in the rotation
            picks.append({first, second})
        return picks

    assert asyncio.run(scenario()) == ["B", "B", {"A", "B"}]


def test_stage_router_all_members_suspect_waits_for_the_next_pool():
    async def scenario():
        r = StageRouter([("a", "A")])
        r.suspect("A", for_s=60)
        task = asyncio.create_task(_one(r))
        await asyncio.sleep(0.05)
        assert not task.done()  # the only member is unreachable: wait, do not fail the video
        r.replace([("a", "A"), ("c", "C")])  # the topology replaced the lost member
        return await asyncio.wait_for(task, 1)

    assert asyncio.run(scenario()) == "C"


async def _one(r):
    async with r.lease() as h:
        return h
