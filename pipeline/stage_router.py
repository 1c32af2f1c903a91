"""Pick the least-busy actor of a stage pool (free of Ray: handles are opaque)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any


class StageRouter:
    """Tracks calls outstanding per handle; the pool can be replaced while calls run."""

    def __init__(self, handles: Sequence[Any]) -> None:
        self._outstanding: dict[int, int] = {}
        self._handles: list[Any] = []
        self.replace(handles)

    def replace(self, handles: Sequence[Any]) -> None:
        if not handles:
            msg = "a stage pool needs at least one actor"
            raise ValueError(msg)
        self._handles = list(handles)
        self._outstanding = {id(h): self._outstanding.get(id(h), 0) for h in self._handles}

    @contextlib.contextmanager
    def lease(self) -> Iterator[Any]:
        """The handle with the fewest calls outstanding, counted while the block runs."""
        handle = min(self._handles, key=lambda h: self._outstanding.get(id(h), 0))
        key = id(handle)
        self._outstanding[key] = self._outstanding.get(key, 0) + 1
        try:
            yield handle
        finally:
            if key in self._outstanding:
                self._outstanding[key] -= 1

    @property
    def outstanding(self) -> int:
        return sum(self._outstanding.values())

    def __len__(self) -> int:
        return len(self._handles)
