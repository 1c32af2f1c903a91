"""Progress a person can read: ``n/N``, a rate and an ETA, as a bar on a terminal and as plain lines in logs.

On a terminal (stderr is a TTY) a tqdm bar redraws in place and notes are written
above it; anywhere else (a Ray job's log, a pipe, CI) each update is one plain line,
so a log shows how far a run got and how long it still needs::

    prepare  120/4000 videos (3%)  2.41 videos/s  ETA 0:26:50  done  32 crops  FF++/original:...

Lines can be throttled (``min_interval_s``); the last one is always printed.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def format_eta(seconds: float) -> str:
    """H:MM:SS; '?' before a rate is known."""
    if seconds != seconds or seconds == float("inf") or seconds < 0:  # NaN or unknown
        return "?"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def progress_line(what: str, done: int, total: int, unit: str, elapsed_s: float) -> str:
    """``what n/N unit (p%)  rate unit/s  ETA h:mm:ss`` (the plain-line form)."""
    rate = done / elapsed_s if elapsed_s > 0 and done else 0.0
    eta = (total - done) / rate if rate > 0 else float("nan")
    percent = 100.0 * done / total if total else 100.0
    return f"{what} {done}/{total} {unit} ({percent:.0f}%)  {rate:.2f} {unit}/s  ETA {format_eta(eta)}"


class Progress:
    """Counts work done out of a known total and shows it (see the module docstring).

    Args:
        what: the label in front (``prepare``, ``score cdf``, ``epoch 3/30``).
        unit: what is counted (``videos``, ``crops``, ``steps``).
        stream: where to write (default stderr: stdout carries commands' results).
        tty: draw a bar; default: whether ``stream`` is a terminal.
        min_interval_s: plain lines at most this often (notes and the last line are always written).
    """

    def __init__(
        self,
        what: str,
        unit: str,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        min_interval_s: float = 0.0,
    ) -> None:
        self.what, self.unit = what, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.min_interval_s = min_interval_s
        self.total = 0
        self.done = 0
        self._started = 0.0
        self._last_line = float("-inf")
        self._bar: tqdm | None = None

    def start(self, total: int) -> Progress:
        """Begin counting towards ``total`` (the clock starts now)."""
        self.total, self.done = total, 0
        self._started = time.monotonic()
        if self.tty and total:
            self._bar = tqdm(total=total, desc=self.what, unit=f" {self.unit}", file=self.stream, dynamic_ncols=True)
        return self

    def advance(self, n: int = 1, note: str = "", *, always: bool = False) -> None:
        """Count ``n`` more; ``note`` is shown after the counts (above the bar on a terminal, when ``always``).

        Args:
            n: units just finished.
            note: what was just finished (a video and its outcome).
            always: on a terminal, write the note even though the bar shows the count (problems).
        """
        self.done += n
        if self._bar is not None:
            if note and always:
                self._bar.write(note, file=self.stream)
            self._bar.update(n)
            return
        now = time.monotonic()
        last = self.done >= self.total
        if not (last or always or now - self._last_line >= self.min_interval_s):
            return
        self._last_line = now
        line = progress_line(self.what, self.done, self.total, self.unit, now - self._started)
        print(f"{line}  {note}" if note else line, file=self.stream, flush=True)

    def close(self) -> None:
        """Finish the bar (plain lines need nothing)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
