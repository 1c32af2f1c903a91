"""Pool upkeep on a real Ray head with tiny actors: pending actors get no work, retired ones drain first,
and a decoder stopped by a scale-down is released at INFO, never reported as a failure."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import ray

from clipguard.config import ClipguardConfig
from clipguard.contracts import StageLoad
from pipeline.consume_loop import ConsumerStats
from pipeline.stage_pool import StagePool
from pipeline.topology import DecoderState, Topology


@ray.remote(num_cpus=0.01, max_concurrency=4)
class Worker:
    def __init__(self) -> None:
        self.done = 0

    def ready(self) -> bool:
        return True

    def load(self) -> StageLoad:
        return StageLoad(busy_s=float(self.done), completed=self.done)

    def work(self, seconds: float) -> str:
        time.sleep(seconds)
        self.done += 1
        return "finished"


@ray.remote(num_cpus=0.01, max_concurrency=4)
class StoppableDecoder:
    """Stands in for ConsumerActor: run() returns its counters once stop() was called."""

    def __init__(self) -> None:
        self.stopped = threading.Event()

    def run(self) -> ConsumerStats:
        self.stopped.wait(60)
        return ConsumerStats(name="decoder-9", received=3, verdicts=3)

    def stop(self) -> None:
        self.stopped.set()


@pytest.fixture
def ray_session(ray_address):
    ray.init(address=ray_address, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


def _poll_until(pool: StagePool, cond, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        pool.poll()
        time.sleep(0.1)


@pytest.mark.timeout(180)
def test_stage_pool_routes_only_ready_actors_drains_before_retiring_and_removes_pending_first(ray_session):
    unplaceable = {"resources": {"a-node-that-never-joins": 1}}
    make = {"n": 0}

    def factory():
        make["n"] += 1
        return Worker.options(**(unplaceable if make["n"] == 3 else {})).remote()

    pool = StagePool("workers", "w", factory, lambda h: h.ready.remote(), drain_timeout_s=60)
    first, second = pool.add(), pool.add()
    assert pool.routed() == [] and len(pool.pending) == 2  # created, not ready: no work for them yet
    _poll_until(pool, lambda: len(pool.ready) == 2)
    assert [name for name, _ in pool.routed()] == ["w-0", "w-1"]
    waiting = pool.add()  # needs a resource no node has: it stays pending, like a detector waiting for a GPU pod
    for _ in range(10):
        pool.poll()
        time.sleep(0.05)
    assert waiting.ready_at is None and [name for name, _ in pool.routed()] == ["w-0", "w-1"]

    # Scale 3 -> 1: the pending actor goes first, then the newest ready one drains.
    call = second.handle.work.remote(2.0)
    assert pool.resize(1, version=7) is True  # routing changed: w-1 left
    assert [m.name for m in pool.members] == ["w-0"] and [m.name for m in pool.draining] == ["w-1"]
    assert pool.retire_drained({"w-1": 1}, applied_version=7) == []  # a decoder still has a call on it
    assert pool.retire_drained({}, applied_version=6) == []  # a decoder still routes by the old pool
    assert ray.get(call, timeout=30) == "finished"  # its in-flight work completed, not cut off
    assert pool.retire_drained({}, applied_version=7) == ["w-1"]
    assert first in pool.members and pool.loads().keys() <= {"w-0"}
    pool.kill_all()


@pytest.mark.timeout(120)
def test_stage_pool_retires_a_draining_actor_after_the_drain_timeout(ray_session):
    pool = StagePool("workers", "w", Worker.remote, lambda h: h.ready.remote(), drain_timeout_s=0.5)
    pool.add(), pool.add()
    _poll_until(pool, lambda: len(pool.ready) == 2)
    pool.resize(1, version=2)
    time.sleep(0.6)
    assert pool.retire_drained({"w-1": 5}, applied_version=None) == ["w-1"]  # stuck calls are redone elsewhere
    pool.kill_all()


@pytest.mark.timeout(120)
def test_decoder_stopped_by_a_scale_down_is_released_at_info_not_replaced(ray_session, caplog):
    topology = Topology(ClipguardConfig())
    handle = StoppableDecoder.remote()
    decoder = DecoderState("decoder-9", handle, run=handle.run.remote())
    topology.decoder_states["decoder-9"] = decoder
    topology.runs[decoder.run] = handle
    decoder.stopping_since = time.monotonic()
    handle.stop.remote()
    ray.get(decoder.run, timeout=30)
    with caplog.at_level(logging.INFO, logger="pipeline.topology"):
        assert topology.supervise() == 1
    assert topology.decoder_states == {} and topology.runs == {}  # released, and no replacement started
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "decoder-9 stopped after draining (3 verdicts)" in caplog.text
    assert topology.finished.verdicts == 3  # its counts stay in the stream's totals
