"""The app's Prometheus metrics, exported through Ray's metrics agent.

Ray serves them on each node's metrics export port with a ``ray_`` prefix
(``ray_clipguard_videos_out_total{status="done"}``...); deploy/prometheus scrapes
them and deploy/grafana charts them. Created inside actors (never at import):
Ray metrics need a connected worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.util.metrics import Counter, Gauge, Histogram

_LATENCY_BOUNDS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300]
_FILL_BOUNDS = [0.1, 0.25, 0.5, 0.75, 0.9, 1.0]


@dataclass
class StreamMetrics:
    videos_in: Counter
    videos_out: Counter
    errors: Counter
    dead_letters: Counter
    stage_latency: Histogram
    batch_fill: Histogram
    batch_size: Histogram
    queue_depth: Gauge
    consumer_lag: Gauge
    in_flight: Gauge
    pool_size: Gauge

    @classmethod
    def create(cls) -> StreamMetrics:
        return cls(
            videos_in=Counter("clipguard_videos_in", "Kafka messages handed to the stream"),
            videos_out=Counter("clipguard_videos_out", "verdicts stored", tag_keys=("status",)),
            errors=Counter("clipguard_errors", "error verdicts by kind", tag_keys=("kind",)),
            dead_letters=Counter("clipguard_dead_letters", "records with no usable video ID"),
            stage_latency=Histogram(
                "clipguard_stage_latency_seconds", "time per stage per video", _LATENCY_BOUNDS, tag_keys=("stage",)
            ),
            batch_fill=Histogram("clipguard_batch_fill_ratio", "detector batch size / max batch size", _FILL_BOUNDS),
            batch_size=Histogram("clipguard_batch_size", "crops per detector batch", [1, 2, 4, 8, 16, 32, 64, 128]),
            queue_depth=Gauge("clipguard_queue_depth", "items waiting per stage", tag_keys=("stage",)),
            consumer_lag=Gauge("clipguard_consumer_lag", "messages behind per partition", tag_keys=("partition",)),
            in_flight=Gauge("clipguard_in_flight", "videos in flight per decoder", tag_keys=("decoder",)),
            pool_size=Gauge("clipguard_pool_size", "actors per stage", tag_keys=("stage",)),
        )
