"""Shared pieces of the reliability tests: a small stream config, publishing, invariants, actor probes.

The invariants every fault test checks (``assert_stream_invariants``):
  * every published video has a stored verdict (none lost);
  * no video was announced twice with different content (one event per video in the
    verdict stream: the store's digest check drops same-content redeliveries);
  * offsets are committed only where the verdict (or dead letter) is stored, and at
    the end the committed offsets reach the end of every partition.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import ray
import redis

from clipguard.config import (
    AutoscaleConfig,
    ClipguardConfig,
    FacesConfig,
    KafkaConfig,
    ModelConfig,
    RayConfig,
    RedisConfig,
    SamplingConfig,
    SourceConfig,
    StreamConfig,
    VideoScoreConfig,
)
from pipeline.kafka_publisher import JobPublisher, ensure_topic
from pipeline.runner import RunTotals, run_stream
from pipeline.topology import Topology
from pipeline.verdict_store import VerdictStore
from tests.kafka_offsets import CommittedToEnd, assert_committed_only_stored, committed_and_ends


def stream_config(
    kafka: KafkaConfig,
    redis: RedisConfig,
    ray_address: str,
    video_root: Path,
    *,
    source: dict[str, Any] | None = None,
    stream: dict[str, Any] | None = None,
    sampling: dict[str, Any] | None = None,
    faces: dict[str, Any] | None = None,
) -> ClipguardConfig:
    """A small, fast stream: tiny random-init CLIP, 4 frames of at most 320 px, one actor per stage.

    Autoscaling is off: these tests inject faults into, or resize, pools they hold fixed.
    """
    return ClipguardConfig(
        kafka=kafka,
        redis=redis,
        ray=RayConfig(address=ray_address),
        source=SourceConfig(**{"video_root": video_root, "timeout_s": 20, "max_duration_s": 3600, **(source or {})}),
        sampling=SamplingConfig(**{"num_frames": 4, "max_side": 320, **(sampling or {})}),
        faces=FacesConfig(**(faces or {})),
        video_score=VideoScoreConfig(face_policy="all"),
        model=ModelConfig(arch="ViT-Tiny-test", pretrained="none"),
        stream=StreamConfig(
            **{
                "decoders": 1,
                "face_workers": 1,
                "detectors": 1,
                "batch_size": 16,
                "batch_wait_ms": 20,
                "max_in_flight": 4,
                "drain_timeout_s": 15,
                "video_timeout_s": 90,
                **(stream or {}),
            }
        ),  # fmt: skip
        autoscale=AutoscaleConfig(enabled=False),
    )


# --- publishing ---------------------------------------------------------------------------
def publish(kafka: KafkaConfig, items: Iterable[str | bytes | dict]) -> int:
    """Create the topic if needed, then send each item: str = plain ID, bytes = raw value, dict = JSON job."""
    ensure_topic(kafka)
    pub = JobPublisher(kafka)
    n = 0
    for item in items:
        if isinstance(item, bytes):
            pub.publish_raw(item)
        elif isinstance(item, dict):
            pub.publish(item["video_id"], item.get("uri"), item.get("metadata"))
        else:
            pub.publish(item)
        n += 1
    pub.flush()
    pub.close()
    return n


# --- running ------------------------------------------------------------------------------
def run_until(
    cfg: ClipguardConfig,
    done: Callable[[], bool],
    *,
    timeout_s: float,
    on_progress: Callable[[RunTotals, Topology], None] | None = None,
    on_ready: Callable[[ClipguardConfig, Topology], None] | None = None,
) -> RunTotals:
    """Run the stream in-process until ``done()`` (checked every 0.5 s) and every offset of the topic is
    committed, or the timeout; fails on timeout. (A verdict stored by a consumer that then died or lost its
    partition is redone, and committed, by the next owner: stopping at the last verdict would cut that short.)
    """
    deadline = time.monotonic() + timeout_s
    finished: list[bool] = []
    committed_to_end = CommittedToEnd(cfg.kafka)

    def stop_when(_totals: RunTotals) -> bool:
        if done() and committed_to_end():
            finished.append(True)
            return True
        return time.monotonic() > deadline

    totals = run_stream(cfg, stop_when=stop_when, on_progress=on_progress, on_ready=on_ready, interval_s=0.5)
    assert finished, f"stream did not finish within {timeout_s:.0f}s: {totals}"
    return totals


# --- invariants ---------------------------------------------------------------------------
def stored_count(store: VerdictStore, ids: Iterable[str]) -> int:
    return sum(bool(store.client.exists(f"{store.prefix}:verdict:{v}")) for v in ids)


def events_per_video(store: VerdictStore) -> Counter:
    return Counter(e["video_id"] for _, e in store.events(count=100_000))


def _errors_of(watch: ErrorWatch | None, videos: Iterable[str]) -> str:
    if watch is None:
        return ""
    found = [e for e in watch.errors if e.get("video_id") in set(videos)]
    return f"; error verdicts stored first: {found}"


def assert_stream_invariants(
    cfg: ClipguardConfig, store: VerdictStore, ids: Iterable[str], errors: ErrorWatch | None = None
) -> None:
    """Nothing lost, nothing announced twice, offsets committed to the end and only for stored work."""
    ids = list(ids)
    missing = [v for v in ids if not store.get_raw(v)]
    assert not missing, f"{len(missing)} videos without a verdict: {missing[:10]}"
    events = events_per_video(store)
    twice = {v: [e for _, e in store.events(count=100_000) if e["video_id"] == v] for v, n in events.items() if n != 1}
    assert not twice, f"videos announced more than once (different content): {twice}{_errors_of(errors, twice)}"
    assert set(ids) <= set(events)
    committed, ends = committed_and_ends(cfg.kafka)
    assert {p: c or 0 for p, c in committed.items()} == ends, (committed, ends)
    assert_committed_only_stored(cfg.kafka, store)


class ErrorWatch:
    """Follows the verdict stream in a thread and keeps every error verdict as first stored.

    A later redelivery may replace an error with a good verdict; this keeps the evidence.
    """

    def __init__(self, store: VerdictStore) -> None:
        self.store = VerdictStore(store.cfg)  # its own connection: XREAD blocks
        self.errors: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> ErrorWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _follow(self) -> None:
        last = "0"
        key = f"{self.store.prefix}:verdicts"
        while not self._stop.is_set():
            try:
                reply = self.store.client.xread({key: last}, block=300, count=100) or []
            except redis.ConnectionError:  # Redis is being restarted by a test
                time.sleep(0.5)
                continue
            for _stream, entries in reply:
                for entry_id, event in entries:
                    last = entry_id
                    if event["status"] == "error":
                        self.errors.append(self.store.get_raw(event["video_id"]))


# --- actors ---------------------------------------------------------------------------------
def actor_pid(handle: Any, timeout_s: float = 120) -> int:
    """The worker PID of an actor; waits through a restart (calls are retried on the new worker)."""
    return ray.get(handle.pid.remote(), timeout=timeout_s)


@dataclass
class Fault:
    """One injected actor failure and what was observed around it."""

    stage: str  # decoders | face_workers | detectors
    how: str  # ray.kill | sigkill
    old_pid: int = 0
    new_pid: int = 0
    outstanding: int = 0  # calls in flight to that stage (videos for decoders) when it was killed
    restart_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def inject(fault: Fault, handle: Any) -> Fault:
    """Kill one actor (Ray restarts it), then wait until its replacement answers."""
    fault.old_pid = actor_pid(handle)
    start = time.monotonic()
    if fault.how == "ray.kill":
        ray.kill(handle, no_restart=False)
    else:
        os.kill(fault.old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            pid = actor_pid(handle, timeout_s=30)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            fault.notes.append(type(exc).__name__)
            time.sleep(0.5)
            continue
        if pid != fault.old_pid:
            fault.new_pid = pid
            break
        time.sleep(0.2)  # the call may have reached the old worker before it died
    fault.restart_s = time.monotonic() - start
    return fault


def rss_mib(pids: Iterable[int]) -> dict[int, float]:
    """Resident memory of each process, MiB."""
    return {pid: psutil.Process(pid).memory_info().rss / 2**20 for pid in pids}
