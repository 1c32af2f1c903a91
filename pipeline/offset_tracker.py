"""At-least-once offset bookkeeping, free of Kafka.

Contract: a partition's offset is committable only up to the first message
whose verdict is not yet stored. Messages finish out of order (a short video
overtakes a long one), so we keep, per partition, the offsets handed out and
the ones finished, and commit ``lowest unfinished`` (Kafka's "next offset to
read"). After a revoke, late completions for that partition are ignored: the
new owner redoes them, and verdict writes are idempotent.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from clipguard.errors import InvalidOffsetError


@dataclass
class _PartitionState:
    pending: set[int] = field(default_factory=set)  # handed out, verdict not stored yet
    last_added: int = -1
    committed: int | None = None  # next offset to read, as last committed


class OffsetTracker:
    """Tracks in-flight offsets per partition key (any hashable, e.g. TopicPartition)."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, _PartitionState] = {}

    def assign(self, partition: Hashable) -> None:
        self._parts.setdefault(partition, _PartitionState())

    def revoke(self, partitions: Iterable[Hashable]) -> None:
        for partition in partitions:
            self._parts.pop(partition, None)

    def add(self, partition: Hashable, offset: int) -> None:
        """Record that ``offset`` was handed out for processing."""
        state = self._parts.setdefault(partition, _PartitionState())
        if offset <= state.last_added:
            msg = f"offset {offset} of {partition} is not after {state.last_added}"
            raise InvalidOffsetError(msg)
        state.pending.add(offset)
        state.last_added = offset

    def done(self, partition: Hashable, offset: int) -> bool:
        """Mark an offset's verdict as stored. False if the partition was revoked meanwhile."""
        state = self._parts.get(partition)
        if state is None or offset > state.last_added:
            return False
        state.pending.discard(offset)
        return True

    def in_flight(self, partition: Hashable | None = None) -> int:
        if partition is not None:
            state = self._parts.get(partition)
            return len(state.pending) if state else 0
        return sum(len(s.pending) for s in self._parts.values())

    def next_to_commit(self, partition: Hashable) -> int | None:
        """The offset a commit of ``partition`` would record now; None if nothing was handed out."""
        state = self._parts.get(partition)
        if state is None or state.last_added < 0:
            return None
        return min(state.pending) if state.pending else state.last_added + 1

    def committable(self) -> dict[Hashable, int]:
        """Next-offset-to-read per partition, only where it moved past the last commit."""
        out = {}
        for partition, state in self._parts.items():
            nxt = self.next_to_commit(partition)
            if nxt is None:
                continue
            if state.committed is None or nxt > state.committed:
                out[partition] = nxt
        return out

    def committed(self, partition: Hashable, next_offset: int) -> None:
        """Record a successful commit of ``next_offset`` for ``partition``."""
        state = self._parts.get(partition)
        if state is not None:
            state.committed = next_offset
