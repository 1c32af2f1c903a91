"""The stream with the fused GPU stage selected (gpu_node.actors = 1), end to end on the CPU.

Embedded broker + Redis, the session Ray head, ffmpeg, torch SCRFD and a tiny
CLIP: the Kafka consumers hand whole jobs to the GPU stage actor, which decodes,
finds faces, aligns and scores on its device (the CPU here). Every video gets
one verdict of the right status and error kind, and the offsets reach the end.
"""

from __future__ import annotations

import pytest

from clipguard.config import (
    AutoscaleConfig,
    ClipguardConfig,
    GpuNodeConfig,
    ModelConfig,
    RayConfig,
    SamplingConfig,
    SourceConfig,
    StreamConfig,
)
from pipeline.kafka_publisher import JobPublisher, ensure_topic
from pipeline.runner import run_stream
from pipeline.verdict_store import VerdictStore
from tests import video_factory as vf
from tests.kafka_offsets import CommittedToEnd, committed_and_ends

pytestmark = pytest.mark.timeout(300)

EXPECTED = {
    "newton.mp4": ("done", None),
    "crowd.mp4": ("done", None),
    "pattern.mp4": ("no_face", None),
    "text.mp4": ("error", "not_a_video"),
    "missing.mp4": ("error", "not_found"),
    "../outside.mp4": ("error", "invalid_id"),
}


def test_gpu_stage_stream_gives_every_video_one_verdict(kafka_config, redis_config, ray_address, tmp_path):
    vf.make_portrait_video(tmp_path / "newton.mp4", "newton", n_frames=4)
    vf.make_pan_video(tmp_path / "crowd.mp4", "solvay", n_frames=2, size=(1280, 720))
    vf.make_no_face_video(tmp_path / "pattern.mp4")
    vf.make_text_as_video(tmp_path / "text.mp4")
    cfg = ClipguardConfig(
        kafka=kafka_config,
        redis=redis_config,
        ray=RayConfig(address=ray_address),
        source=SourceConfig(video_root=tmp_path, timeout_s=30),
        sampling=SamplingConfig(num_frames=2),
        model=ModelConfig(arch="ViT-Tiny-test", pretrained="none"),
        stream=StreamConfig(decoders=1, batch_size=16, batch_wait_ms=10, max_in_flight=4, drain_timeout_s=20),
        gpu_node=GpuNodeConfig(actors=1, num_gpus=0, num_cpus=1, decode_workers=2, face_batch=4),
        autoscale=AutoscaleConfig(enabled=False),  # the GPU stage pool is sized by gpu_node.actors
    )
    ensure_topic(cfg.kafka)
    publisher = JobPublisher(cfg.kafka)
    for vid in EXPECTED:
        publisher.publish(vid)
    publisher.flush()
    publisher.close()
    store = VerdictStore(cfg.redis)
    committed_to_end = CommittedToEnd(cfg.kafka)
    totals = run_stream(cfg, stop_when=lambda t: all(store.get_raw(v) for v in EXPECTED) and committed_to_end(),
                        interval_s=0.5)  # fmt: skip
    assert totals.verdicts == len(EXPECTED)
    for vid, (status, kind) in EXPECTED.items():
        verdict = store.get(vid)
        assert (verdict.status, verdict.error_kind) == (status, kind), (vid, verdict.error_message)
    done = store.get("newton.mp4")
    assert "gpu_stage" in done.timings_s and done.frames_sampled == 2 and len(done.crop_scores) == 2
    assert store.get("crowd.mp4").faces_found >= 40  # ~29 faces in each of 2 frames
    committed, ends = committed_and_ends(cfg.kafka)
    assert committed == ends and sum(ends.values()) == len(EXPECTED)
