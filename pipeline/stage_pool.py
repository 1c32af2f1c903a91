"""One stage's actors (face or detector) through their life: pending -> ready -> draining -> retired.

* **pending**: created, not yet ready. Its readiness probe (``ready()``, or the
  detector's ``model_version()``) has not answered: the actor waits for a node (a
  GPU node may take minutes to join) or is still loading its model. It counts in
  the pool's size but is never handed to the decoders, so no video waits on it.
* **ready**: answered its probe; routed to the decoders. Probed for its
  :class:`~clipguard.contracts.StageLoad` every tick; one that dies for good, or
  answers no probe for ``unresponsive_s`` (its node was lost and Ray cannot place it
  again), is killed and replaced by a new pending member. Killing it fails the calls
  queued on it, which ``process_video`` retries on the others.
* **draining**: removed by a scale-down. No longer routed; killed once every decoder
  has applied a pool without it and none has a call outstanding on it (its in-flight
  videos finish), or after ``drain_timeout_s`` (their calls then fail and are redone
  on the other members).

All probes are non-blocking (``ray.wait`` with no timeout): one tick never waits on
an actor. Every change is logged at INFO (scaling) or WARNING (a lost actor).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ray

from clipguard.contracts import StageLoad

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One actor of the pool and what is known about it."""

    name: str
    handle: Any
    created_at: float
    last_answer: float  # last probe answer (creation time before the first)
    probe: Any = None  # ObjectRef of the probe in flight
    ready_at: float | None = None
    load: StageLoad | None = None
    retired_at: float | None = None  # left the routed pool (draining)
    retired_in_version: int = 0  # the pool version that no longer routes to it


class StagePool:
    """The members of one stage.

    Args:
        stage: pool name as the autoscaler knows it (``face_workers``, ``detectors``).
        prefix: member names are ``<prefix>-<n>``, unique for the stream's life.
        make: creates one actor (its Ray options included).
        ready_probe: starts the readiness call on a new actor.
        check_ready: raises ``ValueError`` if the probe's answer makes the actor unusable.
        unresponsive_s: a ready member answering no probe this long is replaced.
        drain_timeout_s: a draining member is killed after this long at most.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        stage: str,
        prefix: str,
        make: Callable[[], Any],
        ready_probe: Callable[[Any], Any],
        *,
        check_ready: Callable[[Any], None] = lambda answer: None,
        unresponsive_s: float = 60.0,
        drain_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.prefix = prefix
        self._make = make
        self._ready_probe = ready_probe
        self._check_ready = check_ready
        self.unresponsive_s = unresponsive_s
        self.drain_timeout_s = drain_timeout_s
        self._clock = clock
        self._count = 0
        self.members: list[Member] = []  # pending and ready, in creation order
        self.draining: list[Member] = []
        # What happened to members, for reports and tests: (name, created_at, ready_at); (lost, replacement,
        # when); (name, when, drained: False if its drain timed out).
        self.ready_log: list[tuple[str, float, float]] = []
        self.replaced_log: list[tuple[str, str, float]] = []
        self.retired_log: list[tuple[str, float, bool]] = []

    # --- views --------------------------------------------------------------------------
    @property
    def ready(self) -> list[Member]:
        return [m for m in self.members if m.ready_at is not None]

    @property
    def pending(self) -> list[Member]:
        return [m for m in self.members if m.ready_at is None]

    def routed(self) -> list[tuple[str, Any]]:
        """``(name, handle)`` of the ready members: all the decoders may call."""
        return [(m.name, m.handle) for m in self.ready]

    def handles(self) -> list[Any]:
        return [m.handle for m in self.ready]

    def loads(self) -> dict[str, StageLoad]:
        return {m.name: m.load for m in self.ready if m.load is not None}

    def __len__(self) -> int:
        return len(self.members)

    # --- sizing -------------------------------------------------------------------------
    def add(self) -> Member:
        """A new pending member."""
        now = self._clock()
        member = Member(f"{self.prefix}-{self._count}", self._make(), created_at=now, last_answer=now)
        self._count += 1
        member.probe = self._ready_probe(member.handle)
        self.members.append(member)
        return member

    def resize(self, n: int, version: int) -> bool:
        """Grow with pending members, or shrink: pending ones first (killed), then the newest ready ones
        (drained). Returns whether the routed set changed; ``version`` is the pool version that leaves them out.
        """
        while len(self.members) < n:
            self.add()
        changed = False
        while len(self.members) > max(n, 0):
            pending = self.pending
            member = pending[-1] if pending else self.members[-1]
            self.members.remove(member)
            if member.ready_at is None:
                log.info("%s: %s removed before it was ready", self.stage, member.name)
                ray.kill(member.handle, no_restart=True)
                continue
            member.retired_at, member.retired_in_version = self._clock(), version
            self.draining.append(member)
            changed = True
            log.info("%s: %s draining (no new work; its calls finish first)", self.stage, member.name)
        return changed

    # --- upkeep, once per tick ------------------------------------------------------------
    def poll(self) -> bool:
        """Take probe answers: promote ready members, replace dead or lost ones. Returns whether routing changed."""
        changed = False
        probes = {m.probe: m for m in self.members if m.probe is not None}
        answered, _ = ray.wait(list(probes), num_returns=len(probes), timeout=0) if probes else ([], [])
        now = self._clock()
        for ref in answered:
            member = probes[ref]
            member.probe = None
            try:
                answer = ray.get(ref)
            except ray.exceptions.ActorUnavailableError:
                continue  # restarting or briefly unreachable: ask again
            except ray.exceptions.RayActorError as exc:
                if member.ready_at is None:  # it never started (a bad model file...): no endless retries
                    log.error("%s: %s failed to start and was removed: %s", self.stage, member.name, exc)
                    self.members.remove(member)
                else:
                    changed |= self._replace(member, f"died: {type(exc).__name__}", now)
                continue
            except ray.exceptions.RayTaskError as exc:  # the probe itself failed: a bug, not a lost actor
                log.error("%s: probe of %s failed: %s", self.stage, member.name, exc)
                if member.ready_at is None:
                    self.members.remove(member)
                    ray.kill(member.handle, no_restart=True)
                continue
            member.last_answer = now
            if member.ready_at is None:
                try:
                    self._check_ready(answer)
                except ValueError as exc:
                    log.error("%s: %s is not usable and was removed: %s", self.stage, member.name, exc)
                    self.members.remove(member)
                    ray.kill(member.handle, no_restart=True)
                    continue
                member.ready_at = now
                self.ready_log.append((member.name, member.created_at, now))
                changed = True
                log.info("%s: %s ready after %.1fs; routing work to it", self.stage, member.name,
                         now - member.created_at)  # fmt: skip
            else:
                member.load = answer
        for member in list(self.members):
            if member.ready_at is None:
                continue  # pending: waiting for a node is not a fault
            if now - member.last_answer > self.unresponsive_s:
                reason = f"answered no probe for {now - member.last_answer:.0f}s (node lost?)"
                changed |= self._replace(member, reason, now)
            elif member.probe is None and member in self.members:
                member.probe = member.handle.load.remote()
        return changed

    def _replace(self, member: Member, reason: str, now: float) -> bool:
        """Kill a broken member and put a new pending one in its place."""
        if member not in self.members:
            return False
        was_ready = member.ready_at is not None
        log.warning("%s: %s %s; replacing it", self.stage, member.name, reason)
        self.members.remove(member)
        ray.kill(member.handle, no_restart=True)  # fails its queued calls: redone on the other members
        replacement = self.add()
        self.replaced_log.append((member.name, replacement.name, now))
        log.info("%s: %s started in place of %s", self.stage, replacement.name, member.name)
        return was_ready

    def retire_drained(self, outstanding: Mapping[str, int], applied_version: int | None) -> list[str]:
        """Kill draining members that are done: every decoder applied a pool without them
        (``applied_version``: the lowest version the decoders report, None if one did not
        answer) and no call to them is outstanding; or their drain timed out.
        """
        now = self._clock()
        retired = []
        for member in list(self.draining):
            applied = applied_version is not None and applied_version >= member.retired_in_version
            idle = applied and not outstanding.get(member.name, 0)
            timed_out = now - member.retired_at > self.drain_timeout_s
            if not (idle or timed_out):
                continue
            self.draining.remove(member)
            ray.kill(member.handle, no_restart=True)
            retired.append(member.name)
            self.retired_log.append((member.name, now, idle))
            if idle:
                log.info("%s: %s retired after draining its in-flight videos", self.stage, member.name)
            else:
                log.warning("%s: %s retired after %.0fs with calls still outstanding (they are redone)",
                            self.stage, member.name, self.drain_timeout_s)  # fmt: skip
        return retired

    def kill_all(self) -> None:
        for member in self.members + self.draining:
            ray.kill(member.handle, no_restart=True)
        self.members, self.draining = [], []
