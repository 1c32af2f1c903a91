"""Redis and the broker go away and come back; the consumer group rebalances mid-stream.

* Redis: stopped for some seconds (``SHUTDOWN SAVE``, as a Redis with persistence
  stops) and restarted on the same port. Verdict writes retry with backoff, nothing
  is committed while it is down, the decoder does not crash, nothing is lost.
* Broker: the embedded Tansu broker is memory-only, so a restart loses the topic,
  its messages and the committed offsets; no consumer can make up for that. What we
  can promise, and test: the decoder survives the outage without crashing or being
  replaced, the videos it was working on still get their verdicts, and once the
  broker is back (topic recreated) it rejoins the group and processes what is
  published after the restart, committing only stored work.
* Rebalance: a second decoder joins the group while videos are in flight; every
  video gets one verdict, announced once, and the offsets reach the end.

Each test runs its own Redis or broker, so the session's services are never stopped.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import psutil
import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from clipguard.config import KafkaConfig, RedisConfig
from clipguard.contracts import SourceRef, Verdict, VideoJob
from pipeline.consume_loop import ConsumeLoop
from pipeline.embedded_services import start_kafka, start_redis
from pipeline.kafka_publisher import ensure_topic
from pipeline.kafka_source import KafkaSource
from pipeline.message_codec import ParsedMessage
from pipeline.verdict_store import VerdictStore
from tests.kafka_offsets import committed_offsets
from tests.reliability.conftest import EMPTY_VIDEOS, FACE_VIDEOS, link_videos
from tests.reliability.stream_harness import (
    actor_pid,
    assert_stream_invariants,
    publish,
    run_until,
    stored_count,
    stream_config,
)

pytestmark = pytest.mark.timeout(300)

SOURCES = FACE_VIDEOS + EMPTY_VIDEOS[:1]
OUTAGE_S = 6.0


def test_redis_outage_pauses_commits_retries_writes_and_loses_nothing(kafka_config, ray_address, video_root, tmp_path):
    server = start_redis(workdir=tmp_path)
    redis_cfg = RedisConfig(url=server.url, key_prefix="rel", retry_initial_s=0.1, retry_max_s=1.0)
    cfg = stream_config(kafka_config, redis_cfg, ray_address, video_root, stream={"batch_wait_ms": 300})
    store = VerdictStore(cfg.redis)
    ids = link_videos(video_root, "redis", 16, SOURCES)
    publish(cfg.kafka, ids)
    seen: dict = {"totals": None}
    outage: dict = {}
    servers = [server]

    def fault() -> None:
        port = servers[0].port
        store.client.shutdown(save=True)  # what was stored survives, as with a persistent Redis
        servers[0].stop()
        outage["down_at"] = time.monotonic()
        time.sleep(1.5)  # a commit racing the shutdown (its verdict was stored) may still land
        outage["committed_early"] = committed_offsets(cfg.kafka)
        outage["verdicts_early"] = seen["totals"].verdicts
        time.sleep(OUTAGE_S - 1.5)
        outage["committed_late"] = committed_offsets(cfg.kafka)
        outage["verdicts_late"] = seen["totals"].verdicts
        outage["in_flight_late"] = seen["totals"].in_flight
        servers.append(start_redis(port=port, workdir=tmp_path))  # same port, reloads the saved data
        outage["up_at"] = time.monotonic()

    thread = threading.Thread(target=fault, daemon=True)

    def on_ready(_live, topology) -> None:
        outage["decoder_pid"] = actor_pid(topology.decoders[0])

    def on_progress(totals, topology) -> None:
        seen["totals"] = totals
        if not thread.is_alive() and "down_at" not in outage and totals.in_flight and stored_count(store, ids) >= 3:
            outage["stored_before"] = stored_count(store, ids)
            thread.start()
        if "up_at" in outage:  # the decoder as it is after the outage (the run's end kills it)
            outage["decoder_pid_after"] = actor_pid(topology.decoders[0])
            outage["runs_after"] = len(topology.runs)

    def done() -> bool:
        return "up_at" in outage and stored_count(store, ids) == len(ids)

    try:
        run_until(cfg, done, timeout_s=240, on_progress=on_progress, on_ready=on_ready)
        assert outage["committed_early"] == outage["committed_late"], "offsets were committed while Redis was down"
        assert outage["verdicts_late"] == outage["verdicts_early"], "verdicts counted as stored while Redis was down"
        assert outage["in_flight_late"] > 0  # the outage held work back rather than dropping it
        assert outage["stored_before"] < len(ids)
        assert outage["decoder_pid_after"] == outage["decoder_pid"]  # never crashed nor restarted
        assert outage["runs_after"] == 1  # nor replaced by the supervisor
        assert_stream_invariants(cfg, store, ids)
    finally:
        for s in servers:
            s.stop()
    print(f"\nredis outage: {OUTAGE_S:.0f}s with {outage['in_flight_late']} videos waiting, "
          f"{outage['stored_before']}/{len(ids)} stored before; all {len(ids)} stored after")  # fmt: skip


def test_broker_restart_decoder_survives_rejoins_and_in_flight_verdicts_are_stored(
    redis_config, ray_address, video_root, tmp_path
):
    broker = start_kafka(workdir=tmp_path)
    tag = uuid.uuid4().hex[:8]
    kafka = KafkaConfig(bootstrap=broker.bootstrap, topic=f"t-{tag}", group_id=f"g-{tag}", partitions=2)
    # a long detector batch wait keeps the first videos in flight when the broker goes
    cfg = stream_config(
        kafka, redis_config, ray_address, video_root, stream={"batch_wait_ms": 1500, "max_in_flight": 6}
    )
    store = VerdictStore(cfg.redis)
    before = link_videos(video_root, "broker-a", 4, FACE_VIDEOS)
    after = link_videos(video_root, "broker-b", 6, SOURCES)
    publish(kafka, before)
    brokers = [broker]
    outage: dict = {}

    def fault() -> None:
        port = brokers[0].port
        outage["stored_before"] = stored_count(store, before)
        brokers[0].stop()  # memory-only: topic, messages and committed offsets are gone
        down_at = time.monotonic()
        while stored_count(store, before) < len(before) and time.monotonic() - down_at < 90:
            time.sleep(0.2)  # the videos in flight are finished and stored without the broker
        outage["stored_while_down"] = stored_count(store, before)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        brokers.append(start_kafka(port=port, workdir=tmp_path))
        ensure_topic(kafka)  # the operator recreates the (lost) topic
        outage["rejoin_s"] = _wait_for_reconnect(outage["decoder_pid"], port)
        publish(kafka, after)
        outage["up_at"] = time.monotonic()

    thread = threading.Thread(target=fault, daemon=True)

    def on_ready(_live, topology) -> None:
        outage["decoder_pid"] = actor_pid(topology.decoders[0])

    def on_progress(totals, topology) -> None:
        if not thread.is_alive() and "up_at" not in outage and totals.received >= len(before):
            thread.start()
        if "up_at" in outage:  # the decoder as it is after the outage (the run's end kills it)
            outage["decoder_pid_after"] = actor_pid(topology.decoders[0])
            outage["runs_after"] = len(topology.runs)

    def done() -> bool:
        return "up_at" in outage and stored_count(store, before + after) == len(before + after)

    try:
        run_until(cfg, done, timeout_s=240, on_progress=on_progress, on_ready=on_ready)
        assert outage["stored_before"] < len(before), "the broker must go while videos are in flight"
        assert outage["decoder_pid_after"] == outage["decoder_pid"]  # never crashed nor restarted
        assert outage["runs_after"] == 1  # nor replaced by the supervisor
        assert outage["stored_while_down"] == len(before)
        for vid in before:
            assert store.get(vid).status == "done", vid
        # the new broker's topic holds only what was published after the restart
        assert_stream_invariants(cfg, store, after)
    finally:
        for b in brokers:
            b.stop()
    print(f"\nbroker restart: {len(before) - outage['stored_before']} videos in flight through a {OUTAGE_S:.0f}s "
          f"outage, all stored while it was down; decoder reconnected {outage['rejoin_s']:.0f}s after the "
          f"restart; {len(after)} published then, all stored")  # fmt: skip


def _wait_for_reconnect(pid: int, port: int, timeout_s: float = 60) -> float:
    """Seconds until process ``pid`` is connected to the broker on ``port`` again, plus 3 s for a fetch.

    The decoder still holds fetch positions from the lost topic; its first fetch on
    the recreated, empty topic is out of range and resets them to the start. Published
    before that, messages at offsets below the old positions would be passed over:
    an artefact of a broker that forgets its logs (a real broker keeps them).
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        conns = psutil.Process(pid).net_connections(kind="tcp")
        if any(c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED for c in conns):
            break
        time.sleep(0.2)
    time.sleep(3.0)
    return time.monotonic() - start


def test_rebalance_when_a_second_decoder_joins_mid_stream_every_video_gets_one_verdict(
    kafka_config, redis_config, ray_address, video_root
):
    cfg = stream_config(
        kafka_config.model_copy(update={"partitions": 4}), redis_config, ray_address, video_root,
        stream={"decoders": 1, "batch_wait_ms": 300, "max_in_flight": 4},
    )  # fmt: skip
    store = VerdictStore(cfg.redis)
    ids = link_videos(video_root, "rebalance", 120, SOURCES)
    published = publish(cfg.kafka, ids[:12])
    seen: dict = {"received": {}}

    def on_progress(totals, topology) -> None:
        nonlocal published
        stored = stored_count(store, ids[:published])
        if "resized_in_flight" not in seen and totals.in_flight and stored >= 1:
            seen["resized_in_flight"] = totals.in_flight
            topology.resize("decoders", 2)  # the new member's join revokes and reassigns every partition
        if "resized_in_flight" in seen:
            seen["received"] = {s.name: s.received for s in topology.stats()}
            joined = len(seen["received"]) == 2 and min(seen["received"].values()) > 0
            if joined and "unfinished_at_join" not in seen:
                seen["unfinished_at_join"] = published - stored
            if not joined and published - stored < 6 and published < len(ids):
                published += publish(cfg.kafka, ids[published : published + 6])  # keep videos in flight

    def done() -> bool:
        return "unfinished_at_join" in seen and stored_count(store, ids[:published]) == published

    run_until(cfg, done, timeout_s=240, on_progress=on_progress)
    assert seen["unfinished_at_join"] > 0, "the rebalance must happen while videos are in flight"
    assert_stream_invariants(cfg, store, ids[:published])
    print(f"\nrebalance: second decoder joined with {seen['unfinished_at_join']} videos unfinished; received per "
          f"decoder {seen['received']} for {published} videos; one verdict event each")  # fmt: skip


def test_kafka_source_lag_counts_unread_and_in_flight_without_asking_the_coordinator(kafka_config):
    cfg = kafka_config.model_copy(update={"partitions": 1})
    publish(cfg, [f"v{i}" for i in range(5)])
    src = KafkaSource(cfg)
    try:
        got: list = []
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            got += src.poll(2 - len(got))
        assert src.lag() == {0: 5}  # 2 in flight + 3 unread
        src.done(got[0].job.source)
        src.commit()
        assert src.lag() == {0: 4}
    finally:
        src.close()


def test_kafka_source_measuring_lag_while_a_member_joins_strands_no_partition(kafka_config):
    """Two members measuring lag every loop, as the decoders do; the second joins mid-stream.

    kafka-python 3's ``committed()`` during a pending rebalance left the first member
    outside the group with its old assignment and two partitions nobody read.
    """
    cfg = kafka_config.model_copy(update={"partitions": 4})
    publish(cfg, [f"v{i}" for i in range(24)])
    stop = threading.Event()
    seen: dict[str, int] = {"A": 0, "B": 0}
    assigned: dict[str, set] = {}

    def member(name: str, delay: float) -> None:
        time.sleep(delay)
        src = KafkaSource(cfg, client_id=name)
        held: list = []  # (done at, message): each "video" takes 0.5 s, at most 4 at once
        try:
            while not stop.is_set():
                for msg in src.poll(4 - len(held)):
                    held.append((time.monotonic() + 0.5, msg))
                for item in [h for h in held if h[0] <= time.monotonic()]:
                    held.remove(item)
                    seen[name] += src.done(item[1].job.source)
                src.commit()
                src.lag()
                assigned[name] = {tp.partition for tp in src.consumer.assignment()}
        finally:
            src.close()

    threads = [threading.Thread(target=member, args=(n, d), daemon=True) for n, d in (("A", 0), ("B", 2))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and sum(seen.values()) < 24:
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(30)
    assert sum(seen.values()) >= 24, (seen, assigned)  # nothing stranded (redeliveries may add a few)
    assert seen["B"] > 0 and assigned.get("A") and assigned["A"] != {0, 1, 2, 3}, (seen, assigned)


def test_kafka_source_partition_assigned_straight_back_is_resumed_and_redoes_its_in_flight_offsets(kafka_config):
    """A member busy (paused) when another joins keeps its partition; kafka-python keeps its position and pause.

    Before: the partition stayed paused for good (our pause flag was reset), or, once
    resumed, went on after the in-flight offsets, and the next commit passed them
    although their verdicts were not stored.
    """
    cfg = kafka_config.model_copy(update={"partitions": 1})
    publish(cfg, [f"v{i}" for i in range(12)])
    a = KafkaSource(cfg, client_id="a-member")  # range assignment: the first member id keeps partition 0
    assignments: list = []
    on_assigned = a._on_assigned
    a._on_assigned = lambda tps: (assignments.append(tps), on_assigned(tps))
    stop = threading.Event()
    other = threading.Thread(target=_idle_member, args=(cfg, stop), daemon=True)
    try:
        held = []
        deadline = time.monotonic() + 30
        while len(held) < 4 and time.monotonic() < deadline:
            held += a.poll(4 - len(held))
        assert [m.job.source.offset for m in held] == [0, 1, 2, 3]
        a.done(held[0].job.source)  # offset 0 stored; 1, 2, 3 still in flight
        n_before = len(assignments)
        other.start()
        while len(assignments) == n_before and time.monotonic() < deadline + 30:
            a.poll(0)  # busy: partitions paused, the group rebalances meanwhile
        assert assignments[-1] == [TopicPartition(cfg.topic, 0)], assignments
        again = []
        while len(again) < 4 and time.monotonic() < deadline + 60:
            again += a.poll(4 - len(again))  # right after the rebalance: must resume by itself
        assert [m.job.source.offset for m in again][:3] == [1, 2, 3]  # redone, not skipped
        for m in again:
            if m.job.source.offset != 2:
                a.done(m.job.source)
        committed = a.commit()
        assert committed[TopicPartition(cfg.topic, 0)] <= 2  # never past a verdict not stored
    finally:
        stop.set()
        other.join(10)
        a.close()


def _idle_member(cfg, stop: threading.Event) -> None:
    member = KafkaSource(cfg, client_id="b-member")
    try:
        while not stop.is_set():
            assert member.poll(4) == []  # gets no partition (1 partition, 2 members)
    finally:
        member.close()


class _BrokerDownSource:
    """A KafkaSource stand-in whose broker went away after handing out one job."""

    def __init__(self) -> None:
        self.jobs = [ParsedMessage(job=VideoJob("v.mp4", source=SourceRef("t", 0, 0)))]
        self.lag_calls = 0
        self.finished: list = []

    def poll(self, capacity: int) -> list:
        time.sleep(0.01)
        out, self.jobs = self.jobs[:capacity], self.jobs[capacity:]
        return out

    def lag_and_ends(self) -> tuple[dict, dict]:
        self.lag_calls += 1
        raise KafkaTimeoutError("Failed to get offsets by timestamps in 30000 ms")  # what a real outage gives

    def partition_count(self) -> int:
        return 1

    def done(self, source) -> bool:
        self.finished.append(source)
        return True

    def commit(self) -> dict:
        return {}

    def close(self) -> None:
        """Nothing to release."""


def test_consume_loop_keeps_running_when_lag_cannot_be_measured_in_a_broker_outage(redis_config):
    """Past ``request_timeout_ms`` (30 s) of outage, measuring the lag raises; that used to end the consumer loop."""
    source = _BrokerDownSource()

    async def process(job):
        return Verdict(job.video_id, "no_face", "m-1", source=job.source)

    loop = ConsumeLoop(lambda: source, VerdictStore(redis_config), process, lambda: "m-1", max_in_flight=2,
                       lag_every_s=0.05)  # fmt: skip

    async def main():
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(1.0)
        assert not task.done(), task  # still consuming
        loop.stop()
        return await task

    stats = asyncio.run(main())
    assert stats.verdicts == 1 and source.finished == [SourceRef("t", 0, 0)] and source.lag_calls >= 3
