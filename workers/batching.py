"""Cross-video crop batching, free of Ray and torch.

Requests (the crops of one video) queue up in arrival order; a batch takes
slices from the front until it holds ``max_batch`` crops, splitting a large
request across batches. A batch is released when it is full or when the oldest
waiting crop has waited ``max_wait_s``: the GPU sees full batches under load and
a lone video is not held back longer than the wait.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    """Crops ``[start, stop)`` of request ``request_id`` inside a batch."""

    request_id: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class _Pending:
    request_id: int
    total: int
    taken: int
    arrived_at: float


class BatchPlanner:
    """Decides which crops go into the next batch."""

    def __init__(self, max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1:
            msg = f"max_batch must be >= 1, got {max_batch}"
            raise ValueError(msg)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: deque[_Pending] = deque()
        self._pending_items = 0

    def add(self, request_id: int, n_items: int, now: float) -> None:
        if n_items <= 0:
            return
        self._queue.append(_Pending(request_id, n_items, 0, now))
        self._pending_items += n_items

    @property
    def pending_items(self) -> int:
        return self._pending_items

    def seconds_until_ready(self, now: float) -> float | None:
        """0 if a batch should go now, the remaining wait otherwise, None if empty."""
        if not self._queue:
            return None
        if self._pending_items >= self.max_batch:
            return 0.0
        return max(0.0, self._queue[0].arrived_at + self.max_wait_s - now)

    def take(self) -> list[Segment]:
        """The next batch (at most ``max_batch`` crops), in arrival order."""
        room, out = self.max_batch, []
        while room and self._queue:
            head = self._queue[0]
            n = min(room, head.total - head.taken)
            out.append(Segment(head.request_id, head.taken, head.taken + n))
            head.taken += n
            room -= n
            if head.taken == head.total:
                self._queue.popleft()
        self._pending_items -= sum(s.size for s in out)
        return out
