"""`clipguard run`: start (or join) Ray, build the topology, supervise, shut down cleanly.

SIGTERM/SIGINT stop polling everywhere; in-flight videos get
``stream.drain_timeout_s`` to finish and be committed; the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from clipguard.assets import REPO_ROOT
from clipguard.config import ClipguardConfig
from clipguard.logging_setup import ray_logging_args
from clipguard.prometheus import StreamMetrics
from clipguard.ray_connection import ray_connection
from clipguard.thresholds import resolve_thresholds
from pipeline.autoscaler import PoolAutoscaler
from pipeline.consume_loop import ConsumerStats
from pipeline.endpoints import resolved_endpoints
from pipeline.topology import Topology, local_ray_cpus

log = logging.getLogger(__name__)


@dataclass
class RunTotals:
    """Sum of the decoders' counters at one moment."""

    received: int = 0
    verdicts: int = 0
    dead_letters: int = 0
    in_flight: int = 0
    lag: int = 0  # summed over partitions (see remember_lag: partitions nobody reports keep their last value)
    lag_by_partition: dict[int, int] = field(default_factory=dict)  # as the decoders report it now
    lag_measured: bool = False
    decodes_outstanding: int = 0  # videos waiting for or in a decode
    faces_outstanding: int = 0  # calls waiting on or running in face actors
    detectors_outstanding: int = 0
    end_offsets: dict[int, int] = field(default_factory=dict)  # log end per partition (arrival rate)
    partitions: int | None = None  # partitions of the topic
    by_status: dict[str, int] = field(default_factory=dict)
    errors_by_kind: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, stats: list[ConsumerStats]) -> RunTotals:
        t = cls()
        lag_by_partition: dict[int, int] = {}  # during a rebalance two members may report one partition
        for s in stats:
            t.received += s.received
            t.verdicts += s.verdicts
            t.dead_letters += s.dead_letters
            t.in_flight += s.in_flight
            t.lag_measured = t.lag_measured or s.lag_measured
            t.decodes_outstanding += s.decode.in_flight
            t.faces_outstanding += s.faces_outstanding
            t.detectors_outstanding += s.detectors_outstanding
            for p, end in s.end_offsets.items():  # a partition mid-rebalance may show up twice
                t.end_offsets[p] = max(end, t.end_offsets.get(p, 0))
            for p, lag in s.lag.items():
                lag_by_partition[p] = max(lag, lag_by_partition.get(p, 0))
            if s.partitions:
                t.partitions = max(s.partitions, t.partitions or 0)
            for k, v in s.by_status.items():
                t.by_status[k] = t.by_status.get(k, 0) + v
            for k, v in s.errors_by_kind.items():
                t.errors_by_kind[k] = t.errors_by_kind.get(k, 0) + v
        t.lag_by_partition = lag_by_partition
        t.lag = sum(lag_by_partition.values())
        return t

    def remember_lag(self, seen: dict[int, int]) -> RunTotals:
        """Count a partition no decoder reports now with its last measured lag (``seen``, updated here).

        A partition whose consumer was lost (its node died) is reported by nobody until the
        group hands it to another member, which takes a session timeout or more: its videos
        are still waiting, and a lag of 0 there would make the autoscaler shrink mid-backlog.
        """
        seen.update(self.lag_by_partition)
        self.lag = sum(seen.values())
        return self


def ray_init_args(cfg: ClipguardConfig) -> dict:
    """``ray.init`` arguments: the configured cluster, or a new local instance on loopback.

    Either way every actor of the job logs with the driver's format and level (``log`` section).
    """
    logging_args = ray_logging_args(cfg.log)
    if cfg.ray.address:
        return {"address": cfg.ray.address, "namespace": cfg.ray.namespace, **logging_args}
    return {
        **logging_args,
        "address": "local",  # a new local instance, never a stray one found on this machine
        "namespace": cfg.ray.namespace,
        "num_cpus": local_ray_cpus(cfg),
        "_node_ip_address": "127.0.0.1",  # a local instance talks over loopback only
        # Workers import this checkout's packages exactly as the driver does.
        "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
    }


class StopFlag:
    """Set by SIGTERM/SIGINT (installed only on the main thread)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        self.reason = reason
        self.event.set()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self.set(signal.Signals(signum).name))


def run_stream(
    cfg: ClipguardConfig,
    *,
    stop_when: Callable[[RunTotals], bool] | None = None,
    on_progress: Callable[[RunTotals, Topology], None] | None = None,
    on_ready: Callable[[ClipguardConfig, Topology], None] | None = None,
    stop: StopFlag | None = None,
    interval_s: float = 1.0,
) -> RunTotals:
    """Run the stream until a signal, ``stop`` or ``stop_when(totals)``; returns the last totals."""
    stop = stop or StopFlag()
    # For every caller, not only the CLI: model files found on the driver (actors get absolute paths),
    # then calibrated thresholds beside the checkpoint.
    cfg = resolve_thresholds(cfg.with_model_files())
    with resolved_endpoints(cfg) as live, ray_connection(**ray_init_args(live)):
        stop.install()  # after ray.init: Ray's core worker installs its own (aborting) SIGTERM handler
        topology = Topology(live).start()
        log.info("stream up: model %s; %d decoders, %d face, %d detector actors", topology.model_version,
                 len(topology.decoders), len(topology.faces), len(topology.detectors))  # fmt: skip
        if on_ready:
            on_ready(live, topology)
        totals = RunTotals()
        lag_seen: dict[int, int] = {}
        autoscaler = PoolAutoscaler(live.autoscale, live.stream) if live.autoscale.enabled else None
        if autoscaler is None:
            log.info("autoscaling off: pools stay at %d decoders, %d face, %d detector actors",
                     live.stream.decoders, live.stream.face_workers, live.stream.detectors)  # fmt: skip
        pool_size = StreamMetrics.create().pool_size
        while not stop.event.is_set():
            stop.event.wait(interval_s)
            topology.supervise()
            totals = RunTotals.of(topology.stats()).remember_lag(lag_seen)
            topology.maintain()
            if autoscaler:
                autoscaler.step(totals, topology)
            for stage in ("decoders", "face_workers", "detectors"):
                pool_size.set(topology.size(stage), tags={"stage": stage})
            if on_progress:
                on_progress(totals, topology)
            if stop_when and stop_when(totals):
                stop.set("done")
        log.info("stopping (%s): draining in-flight videos", stop.reason)
        final = topology.stop(live.stream.drain_timeout_s + 30)
        return RunTotals.of(final) if final else totals
