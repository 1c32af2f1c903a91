import asyncio

import numpy as np
import pytest

from clipguard.config import ClipguardConfig, StreamConfig, ThresholdConfig, VideoScoreConfig
from clipguard.contracts import FaceCrop, FaceStageResult, SampledFrame, SourceRef, VideoJob
from clipguard.errors import CorruptVideoError
from pipeline.video_flow import Stages, process_video

JOB = VideoJob("vid", metadata={"k": 1}, source=SourceRef("t", 0, 4))
CFG = ClipguardConfig()


def _crop(frame, track):
    return FaceCrop(
        "vid", frame, frame / 10, track, (0, 0, 10, 10), 0.9, np.zeros((5, 2)), np.full((256, 256, 3), frame, np.uint8)
    )


async def _decode(job):
    return [SampledFrame(i, i / 10, np.zeros((8, 8, 3), np.uint8)) for i in range(4)], (8, 8)


async def _faces(video_id, frames, source_size):
    crops = [_crop(f.index, t) for f in frames for t in (0, 1)]
    return FaceStageResult(crops, len(frames), len(frames), len(crops))


async def _score(crops):
    # track 1 crops look fake: score by pixel value parity of the frame is irrelevant; use order
    return np.array([0.9 if i % 2 else 0.1 for i in range(len(crops))], dtype=np.float32)


def test_process_video_done_verdict_has_scores_tracks_and_provenance():
    v = asyncio.run(process_video(JOB, Stages(_decode, _faces, _score), CFG, "m-1"))
    # Default video score: the most suspicious face track (track 1, 0.9), not the 0.5 average of both faces.
    assert v.status == "done" and v.p_fake == pytest.approx(0.9) and v.label == "fake"
    assert [(t.track_id, round(t.p_fake, 3)) for t in v.tracks] == [(0, 0.1), (1, 0.9)]
    assert v.top_track == 1
    # What made the label: the definition and the thresholds (no calibrated file here).
    assert v.video_score == "all faces (max 32), most suspicious track (mean, >=2 crops), 32 frames"
    assert (v.thresholds_fake, v.thresholds_real, v.thresholds_sha256) == (0.6, 0.4, None)
    assert (v.frames_sampled, v.frames_with_faces, v.faces_found) == (4, 4, 8)
    assert len(v.crop_scores) == 8 and v.source == JOB.source and v.metadata == {"k": 1}
    assert {"decode", "faces", "detect", "total"} <= set(v.timings_s)
    assert v.model_version == "m-1" and v.received_at and v.completed_at


def test_process_video_no_face_is_its_own_status():
    async def no_faces(video_id, frames, source_size):
        return FaceStageResult([], len(frames), 0, 0)

    v = asyncio.run(process_video(JOB, Stages(_decode, no_faces, _score), CFG, "m-1"))
    assert v.status == "no_face" and v.p_fake is None and v.label is None and v.frames_sampled == 4


def test_process_video_typed_error_becomes_error_verdict():
    async def corrupt(job):
        raise CorruptVideoError("moov atom not found")

    v = asyncio.run(process_video(JOB, Stages(corrupt, _faces, _score), CFG, "m-1"))
    assert (v.status, v.error_kind, v.error_message) == ("error", "corrupt", "moov atom not found")
    assert v.p_fake is None


class Died(Exception):
    pass


def test_process_video_retries_a_lost_worker_then_succeeds():
    calls = []

    async def flaky(crops):
        calls.append(1)
        if len(calls) == 1:
            raise Died("actor died")
        return await _score(crops)

    v = asyncio.run(
        process_video(JOB, Stages(_decode, _faces, flaky, worker_errors=(Died,)), CFG, "m-1", backoff_s=(0.01,))
    )
    assert v.status == "done" and len(calls) == 2


def test_process_video_gives_a_worker_lost_error_after_the_attempts():
    async def dead(crops):
        raise Died("actor died")

    v = asyncio.run(
        process_video(JOB, Stages(_decode, _faces, dead, worker_errors=(Died,)), CFG, "m-1", backoff_s=(0.01,))
    )
    assert (v.status, v.error_kind) == ("error", "worker_lost")


def test_process_video_times_out_with_a_timeout_error_verdict():
    async def hang(job):
        await asyncio.sleep(60)

    cfg = CFG.model_copy(update={"stream": StreamConfig(video_timeout_s=0.2)})
    v = asyncio.run(process_video(JOB, Stages(hang, _faces, _score), cfg, "m-1"))
    assert (v.status, v.error_kind) == ("error", "timeout")


def test_fused_gpu_stage_result_becomes_the_same_verdict_shape():
    from clipguard.contracts import CropScore, VideoAnalysis

    async def analyse(job):
        scores = tuple(CropScore(job.video_id, i, 0, (0.0, 0.0, 10.0, 10.0), 0.9, p) for i, p in enumerate((0.2, 0.6)))
        return VideoAnalysis(scores, frames_sampled=4, frames_with_faces=2, faces_found=3,
                             timings_s={"decode": 0.1, "faces": 0.2, "detect": 0.3}, decoder="nvdec")  # fmt: skip

    async def nothing(job):
        return VideoAnalysis((), frames_sampled=4, frames_with_faces=0, faces_found=0)

    v = asyncio.run(process_video(JOB, Stages(analyse=analyse), CFG, "m-1"))
    assert v.status == "done" and v.p_fake == pytest.approx(0.4) and len(v.crop_scores) == 2
    assert (v.frames_sampled, v.frames_with_faces, v.faces_found) == (4, 2, 3)
    assert {"decode", "faces", "detect", "gpu_stage", "total"} <= set(v.timings_s)
    assert asyncio.run(process_video(JOB, Stages(analyse=nothing), CFG, "m-1")).status == "no_face"
    with pytest.raises(ValueError, match="either"):
        Stages(_decode, _faces, _score, analyse=analyse)


def test_process_video_paper_pooling_averages_every_crop_and_records_the_thresholds_file():
    thresholds = ThresholdConfig(fake=0.45, real=0.2, file_sha256="ab" * 32)
    cfg = CFG.model_copy(update={"video_score": VideoScoreConfig(pooling="crops"), "thresholds": thresholds})
    v = asyncio.run(process_video(JOB, Stages(_decode, _faces, _score), cfg, "m-1"))
    assert v.p_fake == pytest.approx(0.5) and v.label == "fake" and v.top_track == 1
    assert v.video_score == "all faces (max 32), mean of all crops, 32 frames"
    assert (v.thresholds_fake, v.thresholds_real, v.thresholds_sha256) == (0.45, 0.2, "ab" * 32)
