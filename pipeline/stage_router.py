"""Pick the least-busy actor of a stage pool (free of Ray: handles are opaque, hashable values).

The topology hands every decoder the pool's *ready* members, by name; the pool may
be replaced while calls run (an actor that left keeps its calls until they finish,
then gets none). With no member to call (the only detector was lost and its
replacement waits for a node), a lease waits for the next pool instead of failing
the video. A member whose call failed as unreachable (its node is gone, or Ray is
restarting it) is avoided for ``SUSPECT_S`` so that the retry goes to another
member; one that died for good is dropped until the topology says otherwise.
Counts per member name tell the topology when a retired actor has drained, and
show that no call ever went to an actor before it was ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass

# Long enough for the retry of a failed call to go elsewhere, short enough that a member
# Ray restarted in place (same handle) gets work again soon.
SUSPECT_S = 5.0


@dataclass
class MemberCalls:
    """Calls this router sent to one member: all so far, and those not finished yet."""

    sent: int = 0
    outstanding: int = 0


class StageRouter:
    """Tracks calls outstanding per member; leases go to the member with the fewest."""

    def __init__(
        self, members: Sequence[tuple[str, Hashable]] = (), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._members: dict[Hashable, str] = {}  # handle -> name, in pool order
        self.calls: dict[str, MemberCalls] = {}  # by member name, also for members that left
        self._suspect_until: dict[Hashable, float] = {}
        self._clock = clock
        self._changed = asyncio.Event()
        self.replace(members)

    def replace(self, members: Sequence[tuple[str, Hashable]]) -> None:
        """The new pool: ``(name, handle)`` of each ready member (may be empty)."""
        self._members = {handle: name for name, handle in members}
        for name in self._members.values():
            self.calls.setdefault(name, MemberCalls())
        # Forget members that left once their calls are done (they never come back under that name).
        current = set(self._members.values())
        self.calls = {n: c for n, c in self.calls.items() if n in current or c.outstanding}
        self._changed.set()
        self._changed = asyncio.Event()

    def suspect(self, handle: Hashable, for_s: float = SUSPECT_S) -> None:
        """Avoid a member whose call failed as unreachable for ``for_s`` (while another one is there)."""
        self._suspect_until[handle] = self._clock() + for_s

    def discard(self, handle: Hashable) -> None:
        """Stop routing to a member this decoder saw die, until the next pool says otherwise."""
        name = self._members.pop(handle, None)
        if name is not None and not self.calls[name].outstanding:
            self.calls.pop(name, None)

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Hashable]:
        """The member with the fewest calls outstanding, counted while the block runs.

        Waits while no member is there or all are suspect; the caller's own timeout bounds the wait.
        """
        while True:
            now = self._clock()
            healthy = [h for h in self._members if self._suspect_until.get(h, 0.0) <= now]
            if healthy:
                break
            # Nothing to call: wait for a new pool, or for the first suspicion to lapse.
            lapse = min((self._suspect_until[h] - now for h in self._members), default=None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), lapse)
        handle = min(healthy, key=lambda h: self.calls[self._members[h]].outstanding)
        name = self._members[handle]
        calls = self.calls[name]
        calls.sent += 1
        calls.outstanding += 1
        try:
            yield handle
        finally:
            calls.outstanding -= 1
            if not calls.outstanding and name not in self._members.values():
                self.calls.pop(name, None)  # it left the pool and its last call is done

    @property
    def outstanding(self) -> int:
        return sum(c.outstanding for c in self.calls.values())

    def __len__(self) -> int:
        return len(self._members)
