"""Kafka consumer adapter: poll jobs with a capacity bound, commit only finished work.

The commit protocol, in order (the one place that owns it):
  1. ``poll(capacity)`` hands out at most ``capacity`` messages; each offset is
     recorded in the :class:`OffsetTracker` as pending. With no capacity left all
     assigned partitions are paused, yet ``poll`` keeps being called so the group
     membership and ``max.poll.interval.ms`` stay healthy.
  2. The caller stores the verdict (or dead letter) in Redis.
  3. Only then does it call ``done(source)``.
  4. ``commit()`` commits, per partition, the lowest offset whose verdict is not
     stored yet (Kafka's "next to read"). A failed commit is retried next time.
  On a rebalance, revoked partitions are forgotten: their in-flight results no
  longer commit (the next owner redoes them; Redis writes are idempotent). A
  partition assigned straight back to us is no exception: kafka-python 3 would
  resume it at its fetch position, past offsets still in flight, so it is sought
  back to the first of them and they are redone too. The listener does not
  commit: kafka-python 3 runs it on its IO thread, where a blocking commit is
  refused, and the loop already commits finished prefixes after every poll, so
  at most the last poll interval's finished work is redone.

Not thread-safe, like KafkaConsumer itself: use it from one thread.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from clipguard.config import KafkaConfig
from clipguard.contracts import SourceRef
from pipeline.message_codec import ParsedMessage, parse_message
from pipeline.offset_tracker import OffsetTracker

log = logging.getLogger(__name__)


def security_kwargs(cfg: KafkaConfig) -> dict[str, Any]:
    """kafka-python client settings for SASL/SSL (shared by consumer, producer, admin)."""
    kw: dict[str, Any] = {"security_protocol": cfg.security_protocol}
    if cfg.sasl_mechanism:
        kw["sasl_mechanism"] = cfg.sasl_mechanism
        kw["sasl_plain_username"] = cfg.sasl_username
        kw["sasl_plain_password"] = cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(cfg, name)
        if value is not None:
            kw[name] = str(value)
    return kw


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked):
        self.source._on_revoked(list(revoked))  # noqa: SLF001 - the listener is part of the source

    def on_partitions_assigned(self, assigned):
        self.source._on_assigned(list(assigned))  # noqa: SLF001


class KafkaSource:
    """A consumer-group member handing out parsed jobs and committing finished ones."""

    def __init__(self, cfg: KafkaConfig, bootstrap: str | None = None, client_id: str = "clipguard") -> None:
        self.cfg = cfg
        self.tracker = OffsetTracker()
        self._redo_from: dict[TopicPartition, int] = {}  # revoked partition -> its first offset in flight
        self.consumer = KafkaConsumer(
            bootstrap_servers=(bootstrap or cfg.bootstrap).split(","),
            group_id=cfg.group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            fetch_max_bytes=max(cfg.max_message_bytes * 4, 1 << 20),
            **security_kwargs(cfg),
        )
        self.consumer.subscribe([cfg.topic], listener=_Rebalance(self))

    # --- rebalance ----------------------------------------------------------------------
    def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", revoked)
        for tp in revoked:
            if self.tracker.in_flight(tp):  # only ever sought back to these, never past fresh offsets
                self._redo_from[tp] = self.tracker.next_to_commit(tp)
        self.tracker.revoke(revoked)

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", assigned)
        for tp in assigned:
            self.tracker.assign(tp)
            if tp in self._redo_from:  # ours again: kafka-python kept its position, past our in-flight offsets
                self.consumer.seek(tp, self._redo_from[tp])
        self._redo_from.clear()

    # --- the loop's three calls -----------------------------------------------------------
    def poll(self, capacity: int) -> list[ParsedMessage]:
        """Up to ``capacity`` parsed messages; pauses/resumes partitions to keep the bound."""
        # Asked of the consumer each time: kafka-python keeps a partition paused when a
        # rebalance assigns it again, so a flag of our own would go stale.
        paused = self.consumer.paused()
        if capacity <= 0:
            running = self.consumer.assignment() - paused
            if running:
                self.consumer.pause(*running)
            self.consumer.poll(timeout_ms=self.cfg.poll_timeout_ms)  # heartbeats, rebalances
            return []
        if paused:
            self.consumer.resume(*paused)
        batches = self.consumer.poll(timeout_ms=self.cfg.poll_timeout_ms, max_records=capacity)
        out = []
        for tp, records in batches.items():
            for rec in records:
                self.tracker.add(tp, rec.offset)
                ref = SourceRef(tp.topic, tp.partition, rec.offset)
                out.append(parse_message(rec.value, ref, self.cfg.max_message_bytes))
        return out

    def done(self, source: SourceRef) -> bool:
        """The verdict of ``source`` is stored; False if its partition was revoked meanwhile."""
        return self.tracker.done(TopicPartition(source.topic, source.partition), source.offset)

    def commit(self) -> dict[TopicPartition, int]:
        """Commit finished prefixes; returns what was committed."""
        ready = self.tracker.committable()
        if not ready:
            return {}
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in ready.items()}
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Not fatal: the same prefix is committed next time, or redone by the next owner.
            log.warning("offset commit failed (%s); will retry: %s", exc, ready)
            return {}
        for tp, off in ready.items():
            self.tracker.committed(tp, off)
        return ready

    @property
    def in_flight(self) -> int:
        return self.tracker.in_flight()

    def lag(self) -> dict[int, int]:
        """Consumer lag per assigned partition (see :meth:`lag_and_ends`)."""
        return self.lag_and_ends()[0]

    def partition_count(self) -> int | None:
        """Partitions of the topic, from the client's metadata (None while unknown)."""
        partitions = self.consumer.partitions_for_topic(self.cfg.topic)
        return len(partitions) if partitions else None

    def lag_and_ends(self) -> tuple[dict[int, int], dict[int, int]]:
        """Consumer lag per assigned partition, and the log end of those fetched from (arrival rate).

        Lag is log end minus the offset to commit.

        This is what monitoring tools call lag, so it counts both unread and in-flight
        (read but not yet stored) messages. The offset to commit comes from our own
        bookkeeping (or, for a partition not read from since it was assigned, its fetch
        position, which starts at the committed offset), never from
        ``KafkaConsumer.committed()``: asking the coordinator while a rebalance was
        pending left kafka-python 3 members outside the group for good, their partitions
        unread (tests/reliability/test_service_faults.py, the rebalance test).
        """
        assignment = list(self.consumer.assignment())
        if not assignment:
            return {}, {}
        ends = self.consumer.end_offsets(assignment)
        out, log_ends = {}, {}
        for tp in assignment:
            base = self.tracker.next_to_commit(tp)
            if base is None:
                base = self.consumer.position(tp)
            if base is None:
                continue
            # The fetch high watermark is exact; Tansu's ListOffsets answers per record
            # batch, so take the larger of the two.
            highwater = self.consumer.highwater(tp)
            end = max(ends.get(tp, 0), highwater or 0)
            out[tp.partition] = max(0, end - base)
            if highwater is not None:  # exact; a batch-granular ListOffsets answer would look like arrivals later
                log_ends[tp.partition] = highwater
        return out, log_ends

    def close(self) -> None:
        """Commit what is finished and leave the group (fast rebalance for the others)."""
        try:
            self.commit()
        finally:
            self.consumer.close(autocommit=False)
