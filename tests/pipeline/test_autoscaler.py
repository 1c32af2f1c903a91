"""The autoscaler adapter (pure part) and, on a real Ray head, pools that grow and shrink."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from clipguard.config import AutoscaleConfig, StreamConfig
from pipeline.autoscaler import PoolAutoscaler, policy_from_config


@dataclass
class Totals:
    verdicts: int = 0
    lag: int = 0
    in_flight: int = 0
    faces_outstanding: int = 0
    detectors_outstanding: int = 0


class Pools:
    def __init__(self, **sizes):
        self.sizes = dict(sizes)
        self.calls = []

    def size(self, stage):
        return self.sizes[stage]

    def resize(self, stage, n):
        self.calls.append((stage, n))
        self.sizes[stage] = n


AUTO = AutoscaleConfig(
    enabled=True,
    interval_s=1,
    face_workers_max=3,
    decoders_max=2,
    target_drain_s=5,
    scale_up_cooldown_s=0,
    scale_down_cooldown_s=2,
)


def test_policy_bounds_default_to_the_stream_counts():
    p = policy_from_config(AutoscaleConfig(), StreamConfig(decoders=2, face_workers=3, detectors=1))
    assert (p.decoders.min_size, p.decoders.max_size) == (2, 2)
    assert (p.face_workers.min_size, p.face_workers.max_size) == (3, 3)


def test_autoscaler_grows_under_backlog_and_shrinks_when_idle():
    scaler = PoolAutoscaler(AUTO, StreamConfig())
    pools = Pools(decoders=1, face_workers=1, detectors=1)
    scaler.step(Totals(verdicts=0, lag=60, in_flight=4, faces_outstanding=4), pools, now=100.0)
    d = scaler.step(Totals(verdicts=2, lag=58, in_flight=4, faces_outstanding=4), pools, now=102.0)
    assert d.face_workers.desired > 1 and pools.sizes["face_workers"] > 1
    assert scaler.step(Totals(verdicts=3), pools, now=102.5) is None  # not before interval_s
    for t in range(104, 140, 2):
        scaler.step(Totals(verdicts=60), pools, now=float(t))
    assert pools.sizes == {"decoders": 1, "face_workers": 1, "detectors": 1}


@pytest.mark.timeout(600)
def test_autoscaler_on_ray_grows_the_face_pool_under_backlog_and_releases_it_when_idle(
    kafka_config, redis_config, ray_address, tmp_path
):
    from clipguard.config import ClipguardConfig, FacesConfig, ModelConfig, RayConfig, SamplingConfig, SourceConfig
    from pipeline.kafka_publisher import JobPublisher, ensure_topic
    from pipeline.runner import run_stream
    from tests import video_factory as vf

    ids = []
    for i in range(16):
        vf.make_portrait_video(tmp_path / f"v{i}.mp4", ("astronaut", "newton")[i % 2], n_frames=8)
        ids.append(f"v{i}.mp4")
    cfg = ClipguardConfig(
        kafka=kafka_config.model_copy(update={"partitions": 2}),
        redis=redis_config,
        ray=RayConfig(address=ray_address),
        source=SourceConfig(video_root=tmp_path),
        sampling=SamplingConfig(num_frames=8),
        faces=FacesConfig(),
        model=ModelConfig(arch="ViT-Tiny-test", pretrained="none"),
        stream=StreamConfig(decoders=1, face_workers=1, detectors=1, max_in_flight=6, face_num_cpus=0.5),
        autoscale=AUTO,
    )
    ensure_topic(cfg.kafka)
    pub = JobPublisher(cfg.kafka)
    for vid in ids:
        pub.publish(vid)
    pub.flush()
    pub.close()
    sizes: list[int] = []
    finished_at: list[float] = []

    def progress(totals, topology):
        sizes.append(topology.size("face_workers"))
        if totals.verdicts >= len(ids) and not finished_at:
            finished_at.append(time.monotonic())

    def stop_when(totals):
        return bool(finished_at) and sizes[-1] == 1 and time.monotonic() - finished_at[0] > 1

    start = time.monotonic()
    totals = run_stream(
        cfg, stop_when=lambda t: stop_when(t) or time.monotonic() - start > 400, on_progress=progress, interval_s=0.5
    )
    assert totals.verdicts == len(ids)
    assert max(sizes) > 1, sizes  # grew under the backlog
    assert sizes[-1] == 1, sizes  # released when idle
