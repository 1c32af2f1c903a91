"""Actors killed mid-work: Ray restarts them and their in-flight videos are redone.

One stream run, six faults in turn: the detector, the face actor and the decoder
(the Kafka group member) are each killed once with ``ray.kill(no_restart=False)``
and once with SIGKILL of the worker process, each while that stage has work in
flight. Videos keep being published while faults remain. Afterwards every video has
its normal verdict (no ``worker_lost``), one event each, and offsets reach the end,
committed only over stored verdicts.

The whole `clipguard run` process killed with SIGKILL and restarted is covered by
``tests/pipeline/test_stream_e2e.py::test_stream_sigkill_mid_stream_then_restart_leaves_no_video_without_verdict``.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from clipguard.config import ClipguardConfig
from clipguard.contracts import FaceStageResult, SampledFrame, VideoJob
from clipguard.errors import ProcessKilledError
from pipeline.verdict_store import VerdictStore
from pipeline.video_flow import Stages, process_video
from tests.reliability.conftest import EMPTY_VIDEOS, FACE_VIDEOS, link_videos
from tests.reliability.stream_harness import (
    ErrorWatch,
    Fault,
    assert_stream_invariants,
    inject,
    publish,
    run_until,
    stored_count,
    stream_config,
)
from workers.ffmpeg_process import run_with_timeout

pytestmark = pytest.mark.timeout(420)

FAULTS = [
    ("detectors", "ray.kill"), ("detectors", "sigkill"),
    ("face_workers", "ray.kill"), ("face_workers", "sigkill"),
    ("decoders", "ray.kill"), ("decoders", "sigkill"),
]  # fmt: skip
SOURCES = FACE_VIDEOS + EMPTY_VIDEOS[:1]


def _expected(vid_index: int) -> str:
    return "no_face" if SOURCES[vid_index % len(SOURCES)] in EMPTY_VIDEOS else "done"


def test_killed_detector_face_and_decoder_actors_restart_and_no_video_is_lost(
    kafka_config, redis_config, ray_address, video_root
):
    cfg = stream_config(
        kafka_config, redis_config, ray_address, video_root,
        # crops wait up to 0.4 s in the detector's batch, so a kill lands on a batch being formed or scored
        stream={"batch_wait_ms": 400, "max_in_flight": 4},
    )  # fmt: skip
    store = VerdictStore(cfg.redis)
    ids = link_videos(video_root, "faults", 120, SOURCES)
    published = publish(cfg.kafka, ids[:10])
    pending = list(FAULTS)
    done_faults: list[Fault] = []
    running: list[threading.Thread] = []

    def on_progress(totals, topology) -> None:
        nonlocal published
        busy = bool(pending) or any(t.is_alive() for t in running)
        if busy and published - stored_count(store, ids[:published]) < 6 and published < len(ids):
            published += publish(cfg.kafka, ids[published : published + 6])  # keep work in flight
        if not pending or any(t.is_alive() for t in running):
            return
        stage, how = pending[0]
        outstanding = {"detectors": totals.detectors_outstanding, "face_workers": totals.faces_outstanding,
                       "decoders": totals.in_flight}[stage]  # fmt: skip
        if outstanding <= 0:
            return
        pending.pop(0)
        fault = Fault(stage, how, outstanding=outstanding)
        handle = {"detectors": topology.detectors, "face_workers": topology.faces, "decoders": topology.decoders}
        thread = threading.Thread(target=lambda: done_faults.append(inject(fault, handle[stage][0])), daemon=True)
        running.append(thread)
        thread.start()

    def done() -> bool:
        idle = not pending and not any(t.is_alive() for t in running)
        return idle and stored_count(store, ids[:published]) == published

    start = time.monotonic()
    with ErrorWatch(store) as errors:
        run_until(cfg, done, timeout_s=360, on_progress=on_progress)
    elapsed = time.monotonic() - start

    assert [(f.stage, f.how) for f in done_faults] == FAULTS
    for f in done_faults:
        assert f.new_pid and f.new_pid != f.old_pid, f"{f.stage} was not restarted: {f}"
        assert f.outstanding > 0
    wrong = {}
    for i, vid in enumerate(ids[:published]):
        v = store.get(vid)
        if v.status != _expected(i):
            wrong[vid] = (v.status, v.error_kind, v.error_message)
    assert not wrong, wrong
    assert not errors.errors, errors.errors
    assert_stream_invariants(cfg, store, ids[:published], errors)
    summary = ", ".join(
        f"{f.stage} {f.how} ({f.outstanding} in flight, back in {f.restart_s:.1f}s)" for f in done_faults
    )
    print(f"\nactor faults: {published} videos, {len(done_faults)} faults in {elapsed:.0f}s: {summary}")


# --- ffmpeg killed under a decoder that is going down ---------------------------------------------
def test_ffmpeg_killed_by_a_signal_is_not_a_property_of_the_video():
    """Ray kills a dying worker's children: their cut-off output must not become a verdict."""
    with pytest.raises(ProcessKilledError, match="killed by signal 9, not by the time limit"):
        run_with_timeout(["sh", "-c", 'printf "{\\"streams\\": ["; kill -9 $$'], timeout_s=10, video_id="v",
                         what="ffprobe")  # fmt: skip


def test_a_killed_ffmpeg_is_retried_like_a_lost_worker_not_stored_as_an_error():
    calls = []

    async def decode(job):
        calls.append(job.video_id)
        if len(calls) == 1:
            raise ProcessKilledError("ffprobe of video 'v' was killed by signal 9, not by the time limit")
        return [SampledFrame(0, 0.0, np.zeros((8, 8, 3), np.uint8))], (8, 8)

    async def faces(video_id, frames, size):
        return FaceStageResult(crops=[], frames_sampled=len(frames), frames_with_faces=0, faces_found=0)

    async def score(crops):
        raise AssertionError("no crops to score")

    stages = Stages(decode=decode, faces=faces, score=score, worker_errors=(ProcessKilledError,))
    verdict = asyncio.run(process_video(VideoJob("v"), stages, ClipguardConfig(), "m-1", backoff_s=(0.0,)))
    assert verdict.status == "no_face" and len(calls) == 2
