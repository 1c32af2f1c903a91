"""The autoscaling proof on a real multi-node Ray cluster, shared by the test and bench/bench_autoscale.py.

Cluster (``tests/local_cluster.py``): a head with no CPUs (only drivers talk to it)
and worker nodes declaring 3 CPUs and 1 GPU each (logical: detectors ask for a GPU, so
at most one lands on a node, and their model runs on the CPU device).

Two scenarios, each on its own topic and Redis prefix, each recording a
:class:`Timeline` (pool sizes, pending/draining actors, lag, stored verdicts,
videos/s, events) once per tick of the stream's supervision loop:

* :func:`run_growth` - a backlog is published; the detector pool grows from its
  minimum; a detector the cluster cannot place waits, pending and without traffic,
  until a new GPU node joins (started by the scenario, as a cluster autoscaler
  would); when the backlog has drained the pools shrink back to their minimum,
  draining retired actors first.
* :func:`run_node_loss` - a backlog is published; mid-way, the worker node holding
  a detector (and, when one is there, a decoder) is killed with SIGKILL, raylet and
  all; the stream goes on, the lost actors are re-created on the other nodes.

Detector model: ``ViT-M-32`` with random weights (open_clip's config, no download),
on frames with two faces each, so that the detector is the stage with the most work
per video, as on a real deployment's crowded videos; ``ViT-Tiny-test`` costs less per
crop than the face stage's alignment, so no correct policy would ever grow its pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

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
from tests import video_factory as vf
from tests.kafka_offsets import CommittedToEnd
from tests.local_cluster import LocalRayCluster

GPU_NODE_CPUS = 3
DETECTOR_ARCH = "ViT-M-32"


def start_cluster(log_dir: Path | None = None, gpu_nodes: int = 2) -> LocalRayCluster:
    """Head + ``gpu_nodes`` worker nodes (g1, g2...), all registered."""
    cluster = LocalRayCluster(log_dir=log_dir).start_head()
    for i in range(1, gpu_nodes + 1):
        cluster.add_node(f"g{i}", num_cpus=GPU_NODE_CPUS, num_gpus=1)
    wait_for_nodes(cluster, gpu_nodes)
    return cluster


def wait_for_nodes(cluster: LocalRayCluster, workers: int, timeout_s: float = 180) -> None:
    """Until ``workers`` worker nodes (plus the head) are alive (connects briefly as a driver)."""
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    try:
        deadline = time.monotonic() + timeout_s
        while len([n for n in ray.nodes() if n["Alive"]]) < workers + 1:
            if time.monotonic() > deadline:
                msg = f"{workers} worker nodes did not join within {timeout_s:.0f}s"
                raise RuntimeError(msg)
            time.sleep(0.5)
    finally:
        ray.shutdown()


def make_videos(root: Path, n: int) -> list[str]:
    """``n`` video IDs (symlinks to one two-face clip, so each is a separate job with the same content)."""
    clip = vf.make_group_video(root / "group.mp4", n_frames=4)
    ids = []
    for i in range(n):
        (root / f"v{i:03d}.mp4").symlink_to(clip.name)
        ids.append(f"v{i:03d}.mp4")
    return ids


def scenario_config(kafka: KafkaConfig, redis: RedisConfig, address: str, video_root: Path,
                    **sections: dict[str, Any]) -> ClipguardConfig:  # fmt: skip
    """Fast intervals and cooldowns (the policy is the shipped one), detectors needing a GPU each.

    ``sections``: fields to change per section, e.g. ``stream={"detectors": 3}``.
    """
    cfg = ClipguardConfig(
        kafka=kafka.model_copy(update={"partitions": 2}),
        redis=redis,
        ray=RayConfig(address=address),
        source=SourceConfig(video_root=video_root, timeout_s=60),
        sampling=SamplingConfig(num_frames=3, max_side=480),
        faces=FacesConfig(),
        video_score=VideoScoreConfig(face_policy="all"),
        model=ModelConfig(arch=DETECTOR_ARCH, pretrained="none", device="cpu"),
        stream=StreamConfig(
            decoders=1, face_workers=1, detectors=1,
            detector_num_gpus=1, detector_num_cpus=1, face_num_cpus=1, decoder_num_cpus=0.5,
            batch_size=16, batch_wait_ms=20, max_in_flight=6,
            drain_timeout_s=20, video_timeout_s=240, actor_unresponsive_s=8,
        ),
        autoscale=AutoscaleConfig(
            interval_s=2, decoders_min=1, decoders_max=2, face_workers_min=1, face_workers_max=2,
            detectors_min=1, detectors_max=3, target_drain_s=4,
            scale_up_cooldown_s=4, scale_down_cooldown_s=6, max_step_up=2,
        ),
    )  # fmt: skip
    changed = {name: getattr(cfg, name).model_copy(update=fields) for name, fields in sections.items()}
    return ClipguardConfig(**{**dict(cfg), **changed})  # validated again: pools within their bounds


def publish(kafka: KafkaConfig, ids: list[str]) -> None:
    ensure_topic(kafka)
    pub = JobPublisher(kafka)
    for vid in ids:
        pub.publish(vid)
    pub.flush()
    pub.close()


# --- the timeline ----------------------------------------------------------------------------
@dataclass
class Sample:
    """One tick of the stream, as the timeline records it."""

    t: float  # seconds since the stream came up
    lag: int  # Kafka lag over the topic (unread + in flight)
    stored: int  # verdicts stored so far (Redis verdict events)
    videos_per_s: float  # stored verdicts per second over the last ~4 s
    decoders: int  # ready (consuming) decoders
    decoders_pending: int
    faces: int  # ready face actors
    faces_pending: int
    detectors: int  # ready detector actors
    detectors_pending: int  # created, waiting for a node or loading: no traffic
    detectors_draining: int  # retired, finishing their in-flight videos
    event: str = ""


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    # A call to a detector before it was ready: (t, member, calls sent) - must stay empty.
    early_calls: list[tuple[float, str, int]] = field(default_factory=list)
    ready_log: list[tuple[str, float, float]] = field(default_factory=list)  # detector, created, ready (s)
    notes: dict[str, Any] = field(default_factory=dict)

    def event(self, t: float, text: str) -> None:
        self.events.append((t, text))
        if self.samples:
            self.samples[-1].event = "; ".join(filter(None, [self.samples[-1].event, text]))

    def column(self, name: str) -> list:
        return [getattr(s, name) for s in self.samples]


class Recorder:
    """Samples the stream every tick (``run_stream``'s on_progress) and hands the tick to a scenario hook."""

    def __init__(self, store: VerdictStore, hook: Callable[[Recorder, RunTotals, Topology], None]) -> None:
        self.store = store
        self.hook = hook
        self.timeline = Timeline()
        self.t0: float | None = None
        self._last_sizes: tuple | None = None

    def now(self) -> float:
        return time.monotonic() - (self.t0 or time.monotonic())

    def stored(self) -> int:
        return int(self.store.client.xlen(f"{self.store.prefix}:verdicts"))

    def __call__(self, totals: RunTotals, topology: Topology) -> None:
        if self.t0 is None:
            self.t0 = time.monotonic()
        t = self.now()
        stored = self.stored()
        window = [s for s in self.timeline.samples if s.t >= t - 4.0]
        rate = (stored - window[0].stored) / (t - window[0].t) if window and t > window[0].t else 0.0
        det, face = topology.detector_pool, topology.face_pool
        sample = Sample(
            t=round(t, 1), lag=totals.lag, stored=stored, videos_per_s=round(rate, 2),
            decoders=topology.size("decoders") - topology.pending("decoders"),
            decoders_pending=topology.pending("decoders"),
            faces=len(face.ready), faces_pending=len(face.pending),
            detectors=len(det.ready), detectors_pending=len(det.pending), detectors_draining=len(det.draining),
        )  # fmt: skip
        self.timeline.samples.append(sample)
        self.timeline.notes["topic_partitions"] = totals.partitions  # what caps the decoders
        # Readiness: no decoder may have sent a call to a detector that is still pending.
        pending = {m.name for m in det.pending}
        for stats in (d.stats for d in topology.decoder_states.values() if d.stats is not None):
            for name, calls in stats.calls.items():
                if name in pending and calls.sent:
                    self.timeline.early_calls.append((sample.t, name, calls.sent))
        self.timeline.ready_log = [(n, round(c - self.t0, 1), round(r - self.t0, 1)) for n, c, r in det.ready_log]
        sizes = (sample.decoders, sample.faces, sample.detectors, sample.detectors_pending, sample.detectors_draining)
        if sizes != self._last_sizes and self._last_sizes is not None:
            self.timeline.event(sample.t, f"pools: {sample.decoders} dec, {sample.faces} face, "
                                f"{sample.detectors} det (+{sample.detectors_pending} pending, "
                                f"{sample.detectors_draining} draining)")  # fmt: skip
        self._last_sizes = sizes
        self.hook(self, totals, topology)


def _run(cfg: ClipguardConfig, recorder: Recorder, done: Callable[[], bool], timeout_s: float) -> RunTotals:
    deadline = time.monotonic() + timeout_s
    finished: list[bool] = []

    def stop_when(_totals: RunTotals) -> bool:
        if done():
            finished.append(True)
            return True
        return time.monotonic() > deadline

    totals = run_stream(cfg, stop_when=stop_when, on_progress=recorder, interval_s=0.5)
    recorder.timeline.notes["finished"] = bool(finished)
    recorder.timeline.notes["wall_s"] = round(recorder.now(), 1)
    return totals


# --- scenario 1: grow under a backlog, wait for a node, shrink when idle -----------------------
def run_growth(cluster: LocalRayCluster, cfg: ClipguardConfig, ids: list[str], *, reserve: list[str] = (),
               new_node: str = "g3", node_delay_s: float = 6.0, top_up_below: int = 8, top_up: int = 6,
               timeout_s: float = 300) -> Timeline:  # fmt: skip
    """Publish ``ids`` as a backlog; run until it is stored and committed and the pools are back at their minimum.

    A detector left pending for ``node_delay_s`` makes the scenario start ``new_node``
    (what KubeRay's autoscaler does for a pending GPU actor, in minutes rather than seconds).
    Traffic goes on until the grown pool serves: while no second detector is ready and fewer
    than ``top_up_below`` published videos are not stored yet, ``top_up`` more IDs from
    ``reserve`` are published. How long a new detector takes to load depends on the
    machine's load; without this, a slow machine drains the backlog first and the shrink
    removes the still-pending detectors.
    ``notes["published_ids"]`` lists every ID published.
    """
    store = VerdictStore(cfg.redis)
    ensure_topic(cfg.kafka)
    publisher = JobPublisher(cfg.kafka)  # the backlog now, more videos later (see above)
    for vid in ids:
        publisher.publish(vid)
    publisher.flush()
    published, reserve = list(ids), list(reserve)
    state: dict[str, Any] = {"pending_since": None, "peak": 0}

    def hook(rec: Recorder, totals: RunTotals, topology: Topology) -> None:
        det = topology.detector_pool
        t = rec.now()
        state["peak"] = max(state["peak"], len(det.ready))
        if det.pending and new_node not in cluster.nodes:
            state["pending_since"] = state["pending_since"] or t
            if t - state["pending_since"] >= node_delay_s:
                cluster.add_node(new_node, num_cpus=GPU_NODE_CPUS, num_gpus=1)
                rec.timeline.event(round(t, 1), f"node {new_node} starts (a GPU node for the pending detector)")
        unstored = len(published) - rec.timeline.samples[-1].stored
        if state["peak"] < 2 and unstored < top_up_below and reserve:
            more, reserve[:] = reserve[:top_up], reserve[top_up:]
            for vid in more:
                publisher.publish(vid)
            publisher.flush()
            published.extend(more)
            rec.timeline.event(round(t, 1), f"{len(more)} more videos arrive (no second detector ready yet)")

    def done() -> bool:
        last = recorder.timeline.samples[-1] if recorder.timeline.samples else None
        at_min = last is not None and (last.detectors, last.detectors_pending, last.detectors_draining) == (1, 0, 0)
        settled = at_min and state["peak"] > 1 and last.faces == 1 and last.decoders == 1
        return settled and last.stored >= len(published) and last.lag == 0 and committed_to_end()

    committed_to_end = CommittedToEnd(cfg.kafka)
    recorder = Recorder(store, hook)
    try:
        _run(cfg, recorder, done, timeout_s)
    finally:
        publisher.close()
    recorder.timeline.notes.update(published=len(published), published_ids=published, peak_detectors=state["peak"])
    return recorder.timeline


# --- scenario 2: a worker node dies mid-backlog ---------------------------------------------------
def actor_nodes(cluster: LocalRayCluster, topology: Topology, timeout_s: float = 10) -> dict[str, str]:
    """Member name -> node name, for every ready actor and decoder (by worker PID in the process tree);
    ``"unreachable"`` for one that does not answer within ``timeout_s`` (its node is gone)."""
    handles = {m.name: m.handle for pool in (topology.face_pool, topology.detector_pool) for m in pool.ready}
    handles.update({d.name: d.handle for d in topology.decoder_states.values() if d.stats is not None})
    refs = {h.pid.remote(): name for name, h in handles.items()}
    answered, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    where = dict.fromkeys(refs.values(), "unreachable")
    for ref in answered:
        try:
            where[refs[ref]] = cluster.node_of_pid(ray.get(ref)) or "?"
        except ray.exceptions.RayError:
            pass
    return where


def node_loss_config(kafka: KafkaConfig, redis: RedisConfig, address: str, video_root: Path) -> ClipguardConfig:
    """Three detectors from the start (one on each GPU node) and two decoders that stay (one per partition):
    whichever node holds a consumer also holds a detector."""
    return scenario_config(kafka, redis, address, video_root, stream={"decoders": 2, "detectors": 3},
                           autoscale={"decoders_min": 2})  # fmt: skip


def run_node_loss(cluster: LocalRayCluster, cfg: ClipguardConfig, ids: list[str], *, kill_after: float = 0.2,
                  timeout_s: float = 300) -> Timeline:  # fmt: skip
    """Publish ``ids``; once ``kill_after`` of them are stored and every detector is ready, kill the worker
    node holding a consuming decoder (and a detector); run until every video is stored."""
    store = VerdictStore(cfg.redis)
    publish(cfg.kafka, ids)
    state: dict[str, Any] = {}

    def hook(rec: Recorder, totals: RunTotals, topology: Topology) -> None:
        t = round(rec.now(), 1)
        last = rec.timeline.samples[-1]
        ready = last.detectors >= 3 and last.decoders >= 2 and not last.decoders_pending
        if "victim" not in state and ready and last.stored >= kill_after * len(ids):
            where = actor_nodes(cluster, topology)
            consuming = {d.name for d in topology.decoder_states.values() if d.stopping_since is None}
            on_node: dict[str, list[str]] = {}
            for name, node in where.items():
                on_node.setdefault(node, []).append(name)
            candidates = [n for n, names in on_node.items() if n.startswith("g") and set(names) & consuming
                          and any(x.startswith("detector") for x in names)]  # fmt: skip
            if not candidates:
                return
            victim = max(candidates, key=lambda n: len(on_node[n]))
            state.update(victim=victim, lost=sorted(on_node[victim]), before=where, killed_at=t,
                         decoders_before=sorted(consuming), lag_at_kill=totals.lag,
                         stored_at_kill=last.stored)  # fmt: skip
            cluster.kill_node(victim)
            state["killed_mono"] = time.monotonic()
            held = ", ".join(on_node[victim])
            rec.timeline.event(t, f"node {victim} killed (SIGKILL, raylet and workers): held {held}")
        if "killed_mono" in state:  # what the pools did about actors they lost, since the kill
            for pool in (topology.face_pool, topology.detector_pool):
                for lost, new, _when in pool.replaced_log:
                    if lost not in state.setdefault("replaced", {}):
                        state["replaced"][lost] = new
                        rec.timeline.event(t, f"{lost} unresponsive: {new} started in its place")
                for name, when, drained in pool.retired_log:
                    if when > state["killed_mono"] and name not in state.setdefault("retired", {}):
                        state["retired"][name] = "drained" if drained else "drain timed out"
        if "victim" in state and "after" not in state and last.stored >= len(ids):
            # Every consumer back with the current pools (a restarted one re-synced), every actor reachable.
            decoders = [d for d in topology.decoder_states.values() if d.stopping_since is None]
            if any(d.stats is None or d.stats.pools_version != topology.pools_version for d in decoders):
                return  # not yet: look again next tick
            after = actor_nodes(cluster, topology, timeout_s=2)
            if "unreachable" in after.values():
                return
            state["after"] = after
            state["decoders_after"] = sorted(d.name for d in decoders)
            # Videos each consumer took since it (re)started: its counters began again at a restart.
            state["received_since_start"] = {d.name: d.stats.received for d in decoders}

    def done() -> bool:
        return "after" in state and recorder.timeline.samples[-1].lag == 0 and committed_to_end()

    committed_to_end = CommittedToEnd(cfg.kafka)
    recorder = Recorder(store, hook)
    _run(cfg, recorder, done, timeout_s)
    state.pop("killed_mono", None)
    recorder.timeline.notes.update(published=len(ids), **state)
    return recorder.timeline
