"""The whole stream for real: embedded broker + Redis, a Ray head, ffmpeg, SCRFD, a tiny CLIP.

~20 messages: faces videos (one with the 29-face Solvay photo), no-face videos,
bad videos and IDs, malformed values. Every video gets exactly one verdict with
the right status, offsets are committed to the end, a rerun processes nothing,
and a `clipguard run` killed with SIGKILL mid-stream loses nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from clipguard.assets import REPO_ROOT
from clipguard.config import (
    ClipguardConfig,
    ModelConfig,
    RayConfig,
    SamplingConfig,
    SourceConfig,
    StreamConfig,
    VideoScoreConfig,
)
from pipeline.kafka_publisher import JobPublisher, ensure_topic
from pipeline.runner import run_stream
from pipeline.verdict_store import VerdictStore
from tests import video_factory as vf
from tests.kafka_offsets import CommittedToEnd, assert_committed_only_stored, committed_and_ends

pytestmark = pytest.mark.timeout(600)

EXPECTED = {
    "faces/astronaut_0.mp4": "done",
    "faces/astronaut_1.mp4": "done",
    "faces/newton_0.mp4": "done",
    "faces/newton_1.mp4": "done",
    "faces/gauss_0.mp4": "done",
    "faces/gauss_1.mp4": "done",
    "faces/astronaut_2.mp4": "done",
    "faces/newton_2.mp4": "done",
    "crowd/solvay.mp4": "done",
    "empty/pattern_0.mp4": "no_face",
    "empty/pattern_1.mp4": "no_face",
    "bad/zero.mp4": "error",
    "bad/text.mp4": "error",
    "bad/audio.mp4": "error",
    "bad/truncated.mp4": "error",
    "bad/huge.mov": "error",
    "bad/long.mp4": "error",
    "bad/missing.mp4": "error",
    "../outside.mp4": "error",
    "/etc/passwd": "error",
}
ERROR_KINDS = {
    "bad/missing.mp4": "not_found",
    "../outside.mp4": "invalid_id",
    "/etc/passwd": "invalid_id",
    "bad/audio.mp4": "no_video_stream",
    "bad/huge.mov": "too_large",
    "bad/long.mp4": "too_long",
}
MALFORMED = [b"\xff\x00\xfe garbage", b'{"video_id": ']


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for d in ("faces", "crowd", "empty", "bad"):
        (root / d).mkdir()
    for photo in ("astronaut", "newton", "gauss"):
        for i in range(3 if photo != "gauss" else 2):
            vf.make_portrait_video(root / f"faces/{photo}_{i}.mp4", photo, n_frames=4 + i)
    vf.make_pan_video(root / "crowd/solvay.mp4", "solvay", n_frames=2, size=(2400, 1600), window=0.95)
    vf.make_no_face_video(root / "empty/pattern_0.mp4")
    vf.make_no_face_video(root / "empty/pattern_1.mp4", size=(200, 160))
    vf.make_zero_byte(root / "bad/zero.mp4")
    vf.make_text_as_video(root / "bad/text.mp4")
    vf.make_audio_only(root / "bad/audio.mp4")
    vf.make_truncated_video(root / "bad/truncated.mp4")
    vf.make_huge_declared_video(root / "bad/huge.mov")
    vf.make_long_video(root / "bad/long.mp4")
    return root


def _config(kafka_config, redis_config, ray_address, video_root) -> ClipguardConfig:
    return ClipguardConfig(
        kafka=kafka_config.model_copy(update={"partitions": 3}),
        redis=redis_config,
        ray=RayConfig(address=ray_address),
        source=SourceConfig(video_root=video_root, timeout_s=30, max_duration_s=3600),
        sampling=SamplingConfig(num_frames=4, max_side=1600),
        video_score=VideoScoreConfig(face_policy="all"),
        model=ModelConfig(arch="ViT-Tiny-test", pretrained="none"),
        stream=StreamConfig(
            decoders=2,
            face_workers=1,
            detectors=1,
            batch_size=16,
            batch_wait_ms=20,
            max_in_flight=4,
            drain_timeout_s=20,
        ),
    )


def _publish(cfg: ClipguardConfig) -> None:
    ensure_topic(cfg.kafka)
    pub = JobPublisher(cfg.kafka)
    for vid in EXPECTED:
        pub.publish(vid, metadata={"case": vid})
    for raw in MALFORMED:
        pub.publish_raw(raw)
    pub.flush()
    pub.close()


def _all_stored(store: VerdictStore) -> bool:
    return all(store.get_raw(v) for v in EXPECTED) and len(store.dead_letters()) >= len(MALFORMED)


def _check_verdicts(store: VerdictStore) -> None:
    for vid, status in EXPECTED.items():
        v = store.get(vid)
        assert v is not None, vid
        assert v.status == status, (vid, v.status, v.error_kind, v.error_message)
        assert v.metadata == {"case": vid}
        if status == "done":
            assert 0.0 <= v.p_fake <= 1.0 and v.label in ("fake", "real", "uncertain")
            assert v.tracks and v.top_track is not None and v.crop_scores
        if status == "error":
            assert v.error_kind and v.error_message
        if vid in ERROR_KINDS:
            assert v.error_kind == ERROR_KINDS[vid], (vid, v.error_kind, v.error_message)
    crowd = store.get("crowd/solvay.mp4")
    assert crowd.faces_found >= 40, crowd.faces_found  # ~29 faces in each of 2 frames
    assert len(crowd.tracks) >= 20
    assert store.get("faces/newton_1.mp4").frames_sampled == 4
    # exactly one event per video in the verdict stream
    events = [e["video_id"] for _, e in store.events(count=10_000)]
    assert sorted(events) == sorted(EXPECTED)
    kinds = sorted(e["kind"] for _, e in store.dead_letters())
    assert kinds == ["bad_message", "bad_message"]


def test_stream_every_video_gets_one_verdict_and_offsets_reach_the_end(
    kafka_config, redis_config, ray_address, video_root
):
    cfg = _config(kafka_config, redis_config, ray_address, video_root)
    _publish(cfg)
    store = VerdictStore(cfg.redis)
    committed_to_end = CommittedToEnd(cfg.kafka)  # a verdict redone after a rebalance commits only then
    totals = run_stream(cfg, stop_when=lambda t: _all_stored(store) and committed_to_end(), interval_s=0.5)
    assert totals.verdicts == len(EXPECTED)
    _check_verdicts(store)
    committed, ends = committed_and_ends(cfg.kafka)
    assert committed == ends and sum(ends.values()) == len(EXPECTED) + len(MALFORMED)

    # a second run over the same topic and group finds nothing new
    start = time.monotonic()
    again = run_stream(cfg, stop_when=lambda t: time.monotonic() - start > 12, interval_s=0.5)
    assert again.received == 0 and again.verdicts == 0
    assert len(store.events(count=10_000)) == len(EXPECTED)


def _run_cli(cfg: ClipguardConfig, *extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "CLIPGUARD_KAFKA__BOOTSTRAP": cfg.kafka.bootstrap,
        "CLIPGUARD_KAFKA__TOPIC": cfg.kafka.topic,
        "CLIPGUARD_KAFKA__GROUP_ID": cfg.kafka.group_id,
        "CLIPGUARD_REDIS__URL": cfg.redis.url,
        "CLIPGUARD_REDIS__KEY_PREFIX": cfg.redis.key_prefix,
        "CLIPGUARD_RAY__ADDRESS": cfg.ray.address,
    }
    argv = [
        sys.executable, "-m", "pipeline.cli", "run",
        "--source-video-root", str(cfg.source.video_root), "--sampling-num-frames", "4",
        "--sampling-max-side", "1600", "--source-max-duration-s", "3600",
        "--model-arch", "ViT-Tiny-test", "--model-pretrained", "none",
        "--stream-decoders", "2", "--stream-max-in-flight", "2", "--stream-drain-timeout-s", "20", *extra,
    ]  # fmt: skip
    return subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def test_stream_sigkill_mid_stream_then_restart_leaves_no_video_without_verdict(
    kafka_config, redis_config, ray_address, video_root
):
    cfg = _config(kafka_config, redis_config, ray_address, video_root)
    _publish(cfg)
    store = VerdictStore(cfg.redis)
    first = _run_cli(cfg)
    log = []
    threading.Thread(target=lambda: log.extend(first.stdout), daemon=True).start()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and sum(bool(store.get_raw(v)) for v in EXPECTED) < 4:
        assert first.poll() is None, b"".join(log).decode(errors="replace")[-3000:]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    assert_committed_only_stored(cfg.kafka, store)
    done_before = sum(bool(store.get_raw(v)) for v in EXPECTED)
    assert 4 <= done_before < len(EXPECTED), "the kill must land mid-stream"

    second = _run_cli(cfg, "--exit-when-idle", "3")
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out.decode(errors="replace")[-3000:]
    _check_verdicts(store)
    committed, ends = committed_and_ends(cfg.kafka)
    assert committed == ends


def test_stream_sigterm_drains_and_exits_zero(kafka_config, redis_config, ray_address, video_root):
    cfg = _config(kafka_config, redis_config, ray_address, video_root)
    cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"group_id": f"g-{uuid.uuid4().hex[:6]}"})})
    _publish(cfg)
    store = VerdictStore(cfg.redis)
    proc = _run_cli(cfg)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not any(store.get_raw(v) for v in EXPECTED):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    # what was committed has its verdict stored: never the other way round
    committed, _ = committed_and_ends(cfg.kafka)
    assert sum(c or 0 for c in committed.values()) >= 1
    assert_committed_only_stored(cfg.kafka, store)
