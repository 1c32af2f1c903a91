"""The fused GPU stage's data path on the CPU: device decode -> torch SCRFD -> one warp -> detector, vs today's path.

The same videos through today's CPU stages (ffmpeg frames, insightface SCRFD,
cv2 crops, CropScorer) and through the device path must give the same faces,
crops and scores; bad videos the same typed errors; stage devices resolve
explicitly (a missing GPU capability is a logged reason or an error, never a
silent CPU run).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest
import torch

from clipguard.config import ClipguardConfig, GpuNodeConfig
from clipguard.contracts import VideoJob
from clipguard.errors import ClipguardError, ConfigError, DecodeTimeoutError
from clipguard.model import CropScorer, DetectorConfig
from tests import video_factory as vf
from workers.face_cropper import FaceCropper
from workers.face_detector import CPU, FaceDetector
from workers.frame_decoder import FrameDecoder
from workers.gpu_video_pipeline import GpuVideoPipeline, build_pipeline, resolve_stage_devices

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU resolution of the stage devices")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    vf.make_portrait_video(root / "newton.mp4", "newton", n_frames=6)
    vf.make_pan_video(root / "crowd.mp4", "solvay", n_frames=3, size=(1280, 720))
    vf.make_no_face_video(root / "pattern.mp4")
    vf.make_text_as_video(root / "text.mp4")
    return root


@pytest.fixture(scope="module")
def cfg(root):
    return ClipguardConfig(
        source={"video_root": root},
        sampling={"num_frames": 3},
        model={"arch": "ViT-Tiny-test", "pretrained": "none"},
        stream={"batch_size": 16, "batch_wait_ms": 5},
    )


def test_auto_devices_on_a_cpu_machine_are_cpu_with_the_reason_and_cuda_is_refused():
    auto = resolve_stage_devices(GpuNodeConfig())
    assert auto.decoder == "ffmpeg" and auto.faces == torch.device("cpu")
    assert any("CUDA is not available" in r for r in auto.reasons)
    with pytest.raises(ConfigError, match="faces_device='cuda'"):
        resolve_stage_devices(GpuNodeConfig(faces_device="cuda"))
    with pytest.raises(ConfigError, match="NVDEC"):
        resolve_stage_devices(GpuNodeConfig(decode_device="cuda", faces_device="cpu"))
    assert resolve_stage_devices(GpuNodeConfig(decode_device="cpu", faces_device="cpu")).reasons == ()


def test_device_path_gives_todays_faces_crops_and_scores(cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="workers.gpu_video_pipeline"):
        pipeline = build_pipeline(cfg)
    assert "faces on the CPU: CUDA is not available" in caplog.text  # logged once, at start, with the reason

    async def run_all():
        return await asyncio.gather(*(pipeline.analyse(VideoJob(n)) for n in ("newton.mp4", "crowd.mp4",
                                                                             "pattern.mp4", "text.mp4", "gone.mp4")),
                                    return_exceptions=True)  # fmt: skip

    newton, crowd, pattern, text, gone = asyncio.run(run_all())
    pipeline.close()
    decoder = FrameDecoder(cfg.source, cfg.sampling)
    cropper = FaceCropper(
        cfg.faces, FaceDetector(cfg.faces, providers=[CPU], intra_op_threads=2), selection=cfg.video_score
    )
    scorer = CropScorer.from_config(DetectorConfig.for_stream(cfg.model, 16))
    for got, name in ((newton, "newton.mp4"), (crowd, "crowd.mp4")):
        decoded = decoder.decode(VideoJob(name))
        want = cropper.crop_video(name, list(decoded.frames), (decoded.info.width, decoded.info.height))
        assert got.decoder == "ffmpeg" and got.frames_sampled == want.frames_sampled == 3
        assert (got.frames_with_faces, got.faces_found) == (want.frames_with_faces, want.faces_found)
        assert len(got.crop_scores) == len(want.crops) >= 3
        want_p = scorer.score(np.stack([c.image for c in want.crops]))
        # Faces of (nearly) equal score may come in another order: each crop is matched by frame and box.
        for g in got.crop_scores:
            same_frame = [k for k, w in enumerate(want.crops) if w.frame_index == g.frame_index]
            k = min(same_frame, key=lambda k: np.abs(np.array(want.crops[k].box) - np.array(g.box)).max())
            assert np.abs(np.array(want.crops[k].box) - np.array(g.box)).max() < 2.0
            assert abs(g.p_fake - want_p[k]) < 0.01  # near-identical crops, near-identical scores
        if name == "newton.mp4":
            assert [g.track_id for g in got.crop_scores] == [w.track_id for w in want.crops]
        assert set(got.timings_s) >= {"probe", "decode", "faces", "detect"}
    assert pattern.crop_scores == () and pattern.faces_found == 0
    assert isinstance(text, ClipguardError) and text.kind == "not_a_video"
    assert isinstance(gone, ClipguardError) and gone.kind == "not_found"


def test_a_decode_past_the_time_limit_is_a_timeout_error(cfg):
    class Stuck:
        def decode_frames(self, job):
            time.sleep(1.0)

    pipeline = GpuVideoPipeline(Stuck(), None, CropScorer.from_config(DetectorConfig.for_stream(cfg.model, 4)),
                                decode_workers=1, batch_size=4, batch_wait_s=0.0, decode_timeout_s=0.2)  # fmt: skip
    with pytest.raises(DecodeTimeoutError, match="not finished within"):
        asyncio.run(pipeline.analyse(VideoJob("any.mp4")))
    pipeline.close()
