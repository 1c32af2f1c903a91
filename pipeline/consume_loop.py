"""The consumer loop: Kafka jobs in, verdicts stored, offsets committed after.

One asyncio loop per consumer-group member. The steps for each message, in order:
  1. ``KafkaSource.poll`` hands it out (at most ``max_in_flight`` at once);
  2. a task runs the video to a verdict (``process``), or turns a malformed
     message into an error verdict or a dead letter;
  3. the verdict is stored in Redis (retrying while Redis is down);
  4. only then ``KafkaSource.done`` marks it, and the loop commits the finished
     prefix of each partition.
If step 3 cannot finish (shutdown while Redis is down), step 4 never happens:
the message is redelivered to the next run.

All KafkaSource calls run on one dedicated thread (the client is not
thread-safe); blocking Redis calls run on a small pool.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaError

from clipguard.contracts import SourceRef, StageLoad, Verdict, VideoJob
from clipguard.errors import InternalError, VerdictStoreError
from pipeline.kafka_source import KafkaSource
from pipeline.message_codec import ParsedMessage
from pipeline.stage_router import MemberCalls
from pipeline.verdict_store import VerdictStore
from pipeline.video_flow import error_verdict, now_iso

log = logging.getLogger(__name__)


@dataclass
class LoopStats:
    received: int = 0
    verdicts: int = 0
    dead_letters: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    committed: int = 0
    in_flight: int = 0
    lag: dict[int, int] = field(default_factory=dict)
    lag_measured: bool = False  # a lag was measured with partitions assigned
    end_offsets: dict[int, int] = field(default_factory=dict)  # log end per assigned partition (arrival rate)
    partitions: int | None = None  # partitions of the topic (the most decoders that get work)
    last_verdict_at: float | None = None


@dataclass
class ConsumerStats(LoopStats):
    """One consumer actor's counters at one moment: what crosses Ray from ``stats()`` and ``run()``."""

    name: str = ""
    faces_outstanding: int = 0  # face-stage calls waiting on or running in face actors
    detectors_outstanding: int = 0  # scoring calls waiting on or running in scorer actors
    decode: StageLoad = field(default_factory=StageLoad)  # this decoder's own decode stage (busy time, videos)
    pools_version: int = 0  # the last pool push this decoder applied (0: none yet, e.g. after a restart)
    calls: dict[str, MemberCalls] = field(default_factory=dict)  # per face/detector member: sent, outstanding

    @classmethod
    def of(cls, loop: LoopStats, name: str, **actor: Any) -> ConsumerStats:
        """A snapshot of ``loop`` (copied, so the actor's own counters keep moving) with the actor's own fields."""
        return cls(**copy.deepcopy(vars(loop)), name=name, **copy.deepcopy(actor))


def log_verdict(verdict: Verdict) -> None:
    """The one log line per stored verdict: video id, stage, outcome and the time each stage took."""
    fields = {
        "video_id": verdict.video_id,
        "stage": "verdict",
        "source": str(verdict.source),
        "status": verdict.status,
        "label": verdict.label,
        "p_fake": verdict.p_fake,
        "error_kind": verdict.error_kind,
        "model_version": verdict.model_version,
        "timings_s": {k: round(v, 3) for k, v in verdict.timings_s.items()},
    }
    lost = verdict.status == "error" and verdict.error_kind in ("internal", "worker_lost")
    log.log(logging.WARNING if lost else logging.INFO, "verdict %s", verdict.status,
            extra={k: v for k, v in fields.items() if v is not None})  # fmt: skip


class ConsumeLoop:
    """Runs until :meth:`stop`; then finishes in-flight work (up to a drain timeout) and commits."""

    def __init__(
        self,
        source_factory: Callable[[], KafkaSource],
        store: VerdictStore,
        process: Callable[[VideoJob], Awaitable[Verdict]],
        model_version: Callable[[], str],
        max_in_flight: int,
        on_verdict: Callable[[Verdict], None] = lambda v: None,
        drain_timeout_s: float = 60.0,
        lag_every_s: float = 2.0,
    ) -> None:
        self._source_factory = source_factory
        self.store = store
        self.process = process
        self.model_version = model_version
        self.max_in_flight = max_in_flight
        self.on_verdict = on_verdict
        self.drain_timeout_s = drain_timeout_s
        self.lag_every_s = lag_every_s
        self.stats = LoopStats()
        self._kafka = ThreadPoolExecutor(1, thread_name_prefix="kafka")
        self._io = ThreadPoolExecutor(4, thread_name_prefix="redis")
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._finished: list[SourceRef] = []
        self.source: KafkaSource | None = None

    def stop(self) -> None:
        self._stopping = True

    async def _on_kafka(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._kafka, fn, *args)

    async def run(self) -> LoopStats:
        self.source = await self._on_kafka(self._source_factory)
        last_lag = 0.0
        try:
            while not self._stopping:
                capacity = self.max_in_flight - len(self._tasks)
                messages = await self._on_kafka(self.source.poll, capacity)
                for msg in messages:
                    self.stats.received += 1
                    task = asyncio.create_task(self._handle(msg))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                await self._commit_finished()
                if time.monotonic() - last_lag > self.lag_every_s:
                    await self._measure_lag()
                    last_lag = time.monotonic()
                self.stats.in_flight = len(self._tasks)
                if not messages:
                    await asyncio.sleep(0.01)  # poll() already waited; just yield to tasks
            await self._drain()
        finally:
            await self._on_kafka(self.source.close)
            self._kafka.shutdown(wait=True)
            self._io.shutdown(wait=False, cancel_futures=True)
        return self.stats

    async def _measure_lag(self) -> None:
        """Refresh ``stats.lag``; while the broker is unreachable keep the last value and go on."""

        def measure() -> tuple[dict[int, int], dict[int, int], int | None]:
            return *self.source.lag_and_ends(), self.source.partition_count()

        try:
            lag, ends, partitions = await self._on_kafka(measure)
        except KafkaError as exc:  # e.g. KafkaTimeoutError after request_timeout_ms in a broker outage
            log.warning("consumer lag not measured, keeping the last value: %s", exc)
            return
        self.stats.lag = lag
        self.stats.end_offsets = ends
        self.stats.partitions = partitions or self.stats.partitions
        self.stats.lag_measured = self.stats.lag_measured or bool(lag)

    async def _drain(self) -> None:
        """Give in-flight videos time to finish, commit them, abandon the rest (redelivered later)."""
        if self._tasks:
            log.info("draining %d in-flight videos (up to %.0fs)", len(self._tasks), self.drain_timeout_s)
            _done, pending = await asyncio.wait(set(self._tasks), timeout=self.drain_timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._commit_finished()

    async def _commit_finished(self) -> None:
        finished, self._finished = self._finished, []
        if not finished:
            return

        def mark_and_commit() -> int:
            for ref in finished:
                self.source.done(ref)
            return len(self.source.commit())

        self.stats.committed += await self._on_kafka(mark_and_commit)

    async def _handle(self, msg: ParsedMessage) -> None:
        loop = asyncio.get_running_loop()
        should_stop = self._should_abandon
        try:
            if msg.dead_letter is not None:
                letter = msg.dead_letter
                log.warning("dead letter %s: %s: %s", letter.source, letter.kind, letter.message)
                await loop.run_in_executor(self._io, self.store.put_dead_letter, letter, should_stop)
                self.stats.dead_letters += 1
                self._finished.append(letter.source)
                return
            job = msg.job
            if msg.error is not None:
                verdict = error_verdict(job, self.model_version(), msg.error, received_at=now_iso())
            else:
                verdict = await self._process_safely(job)
            await loop.run_in_executor(self._io, self.store.put, verdict, should_stop)
        except VerdictStoreError as exc:
            log.error("verdict not stored, offset stays uncommitted (redelivered later): %s", exc)
            return
        self._count(verdict)
        log_verdict(verdict)
        self.on_verdict(verdict)
        self._finished.append(job.source)

    def _should_abandon(self) -> bool:
        return self._stopping

    async def _process_safely(self, job: VideoJob) -> Verdict:
        """The one error policy: a bug in a stage becomes an `internal` error verdict, logged with its trace."""
        try:
            return await self.process(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - turned into an explicit error verdict, not swallowed
            log.exception("video %s (%s): unexpected failure", job.video_id, job.source)
            err = InternalError(f"{type(exc).__name__}: {exc}"[:500])
            return error_verdict(job, self.model_version(), err, received_at=now_iso())

    def _count(self, verdict: Verdict) -> None:
        s = self.stats
        s.verdicts += 1
        s.by_status[verdict.status] = s.by_status.get(verdict.status, 0) + 1
        if verdict.error_kind:
            s.errors_by_kind[verdict.error_kind] = s.errors_by_kind.get(verdict.error_kind, 0) + 1
        s.last_verdict_at = time.time()
