"""Kafka offsets as a consumer group sees them, for the stream tests' at-least-once checks."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from clipguard.config import KafkaConfig
from pipeline.message_codec import parse_message
from pipeline.verdict_store import VerdictStore


def committed_and_ends(kafka: KafkaConfig) -> tuple[dict[int, int | None], dict[int, int]]:
    """Committed offset (None: never) and end offset of every partition of the jobs topic."""
    tps = [TopicPartition(kafka.topic, p) for p in range(kafka.partitions)]
    c = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=kafka.group_id, enable_auto_commit=False)
    try:
        committed = {tp.partition: c.committed(tp) for tp in tps}
        # Tansu answers ListOffsets per record batch; a fetch's high watermark is exact.
        c.assign(tps)
        c.seek_to_beginning()
        ends = dict.fromkeys(range(kafka.partitions), 0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            c.poll(timeout_ms=200)
            ends = {tp.partition: c.highwater(tp) or 0 for tp in tps}
            if all(c.highwater(tp) is not None for tp in tps):
                break
        return committed, ends
    finally:
        c.close()


def committed_offsets(kafka: KafkaConfig) -> dict[int, int | None]:
    c = KafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=kafka.group_id, enable_auto_commit=False)
    try:
        return {p: c.committed(TopicPartition(kafka.topic, p)) for p in range(kafka.partitions)}
    finally:
        c.close()


def assert_committed_only_stored(kafka: KafkaConfig, store: VerdictStore) -> int:
    """Every message below a committed offset has its verdict or dead letter; returns how many were checked."""
    committed, _ = committed_and_ends(kafka)
    c = KafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000,
                      fetch_max_bytes=4 << 20, max_partition_fetch_bytes=4 << 20)  # fmt: skip
    try:
        c.assign([TopicPartition(kafka.topic, p) for p in range(kafka.partitions)])
        c.seek_to_beginning()
        dead = {e["source"] for _, e in store.dead_letters(count=100_000)}
        checked = 0
        for rec in c:
            if rec.offset < (committed[rec.partition] or 0):
                ref = f"{rec.topic}[{rec.partition}]@{rec.offset}"
                parsed = parse_message(rec.value, max_bytes=kafka.max_message_bytes)
                ok = ref in dead if parsed.job is None else bool(store.get_raw(parsed.job.video_id))
                assert ok, f"offset committed past {ref} but nothing stored for it"
                checked += 1
    finally:
        c.close()
    return checked


class CommittedToEnd:
    """Whether every partition's committed offset reached its end (what the tests assert afterwards).

    A scenario is not over when every video has a verdict: a video whose verdict was stored
    by a consumer that died (or lost its partition) before committing is redone by the next
    owner, and its offset is committed only then. Asked at most every ``every_s``.
    """

    def __init__(self, kafka: KafkaConfig, every_s: float = 2.0) -> None:
        self.kafka, self.every_s, self._last = kafka, every_s, float("-inf")

    def __call__(self) -> bool:
        if time.monotonic() - self._last < self.every_s:
            return False
        self._last = time.monotonic()
        committed, ends = committed_and_ends(self.kafka)
        return {p: c or 0 for p, c in committed.items()} == ends
