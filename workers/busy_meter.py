"""How long a stage actor was busy, and how many videos it finished meanwhile.

The autoscaler sizes each pool by what one actor does *while busy*
(``pipeline/autoscaling_policy.py``); a rate over wall-clock time would fall
whenever the stage starves and make it look slow. Work may overlap (a decoder
runs several ffmpeg processes, a detector's model batches many videos): busy
time counts once while anything runs. Thread-safe: the face actor answers
``load()`` on its control thread while ``crop()`` runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from clipguard.contracts import StageLoad


class BusyMeter:
    """Cumulative busy seconds and completions of one actor.

    Args:
        clock: monotonic seconds (injected by tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._active = 0
        self._since = 0.0  # when _active last went from 0 to 1
        self._busy_s = 0.0
        self._completed = 0
        self._in_flight = 0

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Time spent inside the block counts as busy (overlapping blocks count once)."""
        with self._lock:
            if self._active == 0:
                self._since = self._clock()
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._busy_s += self._clock() - self._since

    @contextlib.contextmanager
    def video(self) -> Iterator[None]:
        """One video in this stage: in flight while the block runs, finished when it ends.

        A video that fails (a bad file, an error the stage reports) is finished work all
        the same; only a cancelled one (shutdown, timeout) is not counted.
        """
        with self._lock:
            self._in_flight += 1
        finished = False
        try:
            yield
            finished = True
        except Exception:
            finished = True
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
                self._completed += finished

    def snapshot(self) -> StageLoad:
        """The totals so far, an ongoing busy stretch included."""
        with self._lock:
            busy = self._busy_s + (self._clock() - self._since if self._active else 0.0)
            return StageLoad(busy_s=busy, completed=self._completed, in_flight=self._in_flight)
