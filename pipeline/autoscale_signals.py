"""The autoscaler's measured inputs, from cumulative counters: per-stage busy rates and the arrival rate.

Pure (no Ray, Kafka or clock): the autoscaler hands in samples with their time.

* :class:`BusyRate` - videos one actor of a stage finishes per *busy* second. Each
  actor reports cumulative :class:`~clipguard.contracts.StageLoad` counters; between
  two samples the stage's rate is (sum of videos finished) / (sum of busy seconds)
  over the actors seen both times, smoothed over samples. An actor that restarted
  (its counters went down) or is new only sets its baseline. Too little busy time
  in a sample (a starved stage) keeps the previous estimate instead of a noisy one.
* :class:`ArrivalRate` - videos/s produced to the topic: the growth of the log-end
  offsets summed over partitions, between two samples. Partitions missing from a
  sample (a rebalance, a decoder that did not answer) are left out of that step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from clipguard.contracts import StageLoad


@dataclass
class BusyRate:
    """Smoothed videos per busy second per actor of one stage; ``None`` until first measured.

    Args:
        min_busy_s: busy seconds a sample needs (summed over actors) to count.
        smoothing: weight of the newest sample (1 = no smoothing).
    """

    min_busy_s: float = 0.5
    smoothing: float = 0.5
    rate: float | None = None
    _last: dict[str, StageLoad] = field(default_factory=dict)

    def update(self, loads: Mapping[str, StageLoad]) -> float | None:
        """Add one sample of every live actor's cumulative counters (keyed by actor name)."""
        busy, done = 0.0, 0
        for name, now in loads.items():
            before = self._last.get(name)
            if before is None or now.busy_s < before.busy_s or now.completed < before.completed:
                continue  # new or restarted: this sample is its baseline
            busy += now.busy_s - before.busy_s
            done += now.completed - before.completed
        self._last = dict(loads)
        if busy >= self.min_busy_s and done > 0:
            sample = done / busy
            self.rate = sample if self.rate is None else self.smoothing * sample + (1 - self.smoothing) * self.rate
        return self.rate


@dataclass
class ArrivalRate:
    """Videos/s appended to the topic, from log-end offsets; ``None`` until a partition is seen twice."""

    rate: float | None = None
    _seen: dict[int, tuple[int, float]] = field(default_factory=dict)  # partition -> (end offset, when)

    def update(self, end_offsets: Mapping[int, int], now: float) -> float | None:
        """Add the log-end offset of each partition seen at time ``now`` (seconds).

        Each partition's growth is divided by the time since that partition was last
        seen, so one missing from a sample does not inflate the next.
        """
        rates = []
        for partition, end in end_offsets.items():
            before = self._seen.get(partition)
            if before is not None and now > before[1]:
                rates.append(max(0, end - before[0]) / (now - before[1]))
            self._seen[partition] = (end, now)
        if rates:
            self.rate = sum(rates)
        return self.rate
