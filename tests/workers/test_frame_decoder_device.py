"""Frames as one device tensor: the NVDEC decoder's index selection, routing and error mapping, and the ffmpeg one.

PyNvVideoCodec cannot run without an NVIDIA GPU, so the NVDEC decoder is driven
here through a stand-in module whose ``SimpleDecoder`` decodes with OpenCV on the
CPU and returns host arrays (DLPack-capable, as NVDEC's frames are). What is
tested is ours: the source checks in front, which indices are asked for, the
rotation/downscale on the device, decoder reuse, the ffmpeg route and the typed
errors. The real NVDEC runs in the last test, where it exists (bench/README.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from clipguard.config import SamplingConfig, SourceConfig
from clipguard.contracts import VideoJob
from clipguard.errors import ClipguardError, ConfigError, CorruptVideoError
from tests import video_factory as vf
from workers.frame_decoder import FrameDecoder
from workers.frame_decoder_device import FfmpegTensorDecoder, NvdecFrameDecoder, nvdec_unavailable_reason
from workers.video_probe import probe_video
from workers.video_source import ResolvedSource, VideoSourceResolver


class FakeSimpleDecoder:
    """PyNvVideoCodec.SimpleDecoder's calls we use, decoding with OpenCV on the CPU."""

    opened: list[str] = []
    reconfigured: list[str] = []
    fail_on: set[str] = set()
    empty_on: set[str] = set()

    def __init__(self, path, gpu_id=0, use_device_memory=True, output_color_type=None):
        assert use_device_memory and output_color_type == "RGB" and gpu_id == 0
        FakeSimpleDecoder.opened.append(Path(path).name)
        self._load(path)

    def _load(self, path: str) -> None:
        if Path(path).name in self.fail_on:
            raise RuntimeError("CUVID_ERROR: bitstream not supported")  # what NVDEC raises: a plain exception
        capture = cv2.VideoCapture(path)
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # NVDEC hands out coded pictures: rotation is ours
        self.frames = []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            self.frames.append(np.ascontiguousarray(bgr[..., ::-1]))
        capture.release()
        self.empty = Path(path).name in self.empty_on

    def reconfigure_decoder(self, path):
        FakeSimpleDecoder.reconfigured.append(Path(path).name)
        self._load(path)

    def __len__(self):
        return len(self.frames)

    def get_batch_frames_by_index(self, indices):
        return [] if self.empty else [self.frames[i] for i in indices]


FAKE_NVC = SimpleNamespace(SimpleDecoder=FakeSimpleDecoder, OutputColorType=SimpleNamespace(RGB="RGB"))


@pytest.fixture(autouse=True)
def _reset_fake():
    FakeSimpleDecoder.opened, FakeSimpleDecoder.reconfigured = [], []
    FakeSimpleDecoder.fail_on, FakeSimpleDecoder.empty_on = set(), set()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    vf.make_numbered_video(root / "numbered.mp4", n_frames=100)
    vf.make_numbered_video(root / "numbered_short.mp4", n_frames=40)
    vf.make_rotated_video(root / "rotated.mp4", 90)
    vf.make_large_video(root / "large.mp4", 1280, 720)
    vf.make_odd_sized_video(root / "yuv444.mp4")
    vf.make_text_as_video(root / "text.mp4")
    vf.make_audio_only(root / "audio.mp4")
    vf.make_truncated_video(root / "truncated.mp4")
    vf.make_huge_declared_video(root / "huge.mov")
    vf.make_long_video(root / "long.mp4")
    return root


def nvdec(root: Path, **sampling) -> NvdecFrameDecoder:
    source = SourceConfig(video_root=root, max_duration_s=3600)
    return NvdecFrameDecoder(source, SamplingConfig(**sampling), torch.device("cpu"), nvc=FAKE_NVC)


def cpu(root: Path, **sampling) -> FrameDecoder:
    return FrameDecoder(SourceConfig(video_root=root, max_duration_s=3600), SamplingConfig(**sampling))


def test_nvdec_decodes_the_cpu_paths_frame_indices_and_reuses_its_decoder(root):
    decoder = nvdec(root, num_frames=8)
    for name in ("numbered.mp4", "numbered_short.mp4"):
        got = decoder.decode_frames(VideoJob(name))
        want = cpu(root, num_frames=8).decode(VideoJob(name))
        assert got.decoder == "nvdec"
        assert got.requested_indices == want.requested_indices
        assert got.indices == tuple(f.index for f in want.frames)
        assert [vf.read_frame_number(f) for f in got.frames.numpy()] == list(got.indices)
        assert got.frames.dtype == torch.uint8 and got.frames.shape[1:] == want.frames[0].image.shape
        assert got.timestamps_s == tuple(i / 25 for i in got.indices)
    assert FakeSimpleDecoder.opened == ["numbered.mp4"] and FakeSimpleDecoder.reconfigured == ["numbered_short.mp4"]


def test_nvdec_frames_are_turned_upright_and_downscaled_like_the_cpu_path(root):
    for name, sampling in (("rotated.mp4", {"num_frames": 2}), ("large.mp4", {"num_frames": 2, "max_side": 640})):
        got = nvdec(root, **sampling).decode_frames(VideoJob(name)).frames.numpy()
        want = np.stack([f.image for f in cpu(root, **sampling).decode(VideoJob(name)).frames])
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want).mean() < 6  # different resizers and chroma upsampling


def test_formats_nvdec_does_not_take_go_through_ffmpeg(root):
    got = nvdec(root, num_frames=3).decode_frames(VideoJob("yuv444.mp4"))
    assert got.decoder == "ffmpeg" and FakeSimpleDecoder.opened == []
    assert got.frames.shape == (3, 201, 333, 3)
    remote = ResolvedSource("v", "https://cdn.example/v.mp4", "https", "https://cdn.example/v.mp4")
    probe = probe_video(VideoSourceResolver(SourceConfig(video_root=root)).resolve(VideoJob("numbered.mp4")),
                        SourceConfig(video_root=root))  # fmt: skip
    assert "remote" in NvdecFrameDecoder.nvdec_refusal(remote, probe)


@pytest.mark.parametrize("name", ["missing.mp4", "text.mp4", "audio.mp4", "truncated.mp4", "huge.mov", "long.mp4"])
def test_bad_videos_get_the_same_typed_error_as_on_the_cpu_path(root, name):
    source = SourceConfig(video_root=root, max_duration_s=3600)
    with pytest.raises(ClipguardError) as on_cpu:
        FrameDecoder(source, SamplingConfig()).decode(VideoJob(name))
    with pytest.raises(ClipguardError) as on_nvdec:
        NvdecFrameDecoder(source, SamplingConfig(), torch.device("cpu"), nvc=FAKE_NVC).decode_frames(VideoJob(name))
    assert on_nvdec.value.kind == on_cpu.value.kind


def test_a_video_nvdec_rejects_is_a_corrupt_verdict_and_its_decoder_is_not_reused(root):
    decoder = nvdec(root, num_frames=4)
    decoder.decode_frames(VideoJob("numbered.mp4"))
    FakeSimpleDecoder.fail_on = {"numbered_short.mp4"}
    with pytest.raises(CorruptVideoError, match="NVDEC could not decode it: RuntimeError: CUVID_ERROR") as info:
        decoder.decode_frames(VideoJob("numbered_short.mp4"))
    assert info.value.kind == "corrupt"  # as ffmpeg's "decoded none of N sampled frames" on the CPU path
    FakeSimpleDecoder.fail_on = set()
    decoder.decode_frames(VideoJob("numbered.mp4"))
    assert FakeSimpleDecoder.opened == ["numbered.mp4", "numbered.mp4"]  # a fresh decoder after the failure
    FakeSimpleDecoder.empty_on = {"numbered.mp4"}
    with pytest.raises(CorruptVideoError, match="decoded 0 of 4"):
        decoder.decode_frames(VideoJob("numbered.mp4"))


def test_nvdec_without_cuda_or_pynvvideocodec_is_refused_not_replaced(root):
    reason = nvdec_unavailable_reason(torch.device("cpu"))
    assert reason and "not a CUDA device" in reason
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="NVDEC decoding was requested but is not possible"):
        NvdecFrameDecoder(SourceConfig(video_root=root), SamplingConfig(), torch.device("cuda"))


def test_ffmpeg_tensor_decoder_uploads_the_cpu_frames_once(root):
    got = FfmpegTensorDecoder(cpu(root, num_frames=5), torch.device("cpu")).decode_frames(VideoJob("numbered.mp4"))
    assert got.decoder == "ffmpeg" and got.frames.shape[0] == 5
    assert [vf.read_frame_number(f) for f in got.frames.numpy()] == list(got.indices)


@pytest.mark.skipif(
    nvdec_unavailable_reason(torch.device("cuda")) is not None,
    reason=f"needs NVDEC: {nvdec_unavailable_reason(torch.device('cuda'))} (runs on the GPU machine: bench/README.md)",
)
def test_real_nvdec_decodes_the_sampled_frames_of_a_clip():
    from bench.gpu_clips import load_clip_set

    clips = load_clip_set(Path(os.environ["CLIPGUARD_GPU_CLIPS"]))  # the carried clip folder (bench/README.md)
    name = clips.names[0]
    decoder = NvdecFrameDecoder(clips.source, SamplingConfig(num_frames=8), torch.device("cuda"), prober=clips.prober)
    got = decoder.decode_frames(VideoJob(name))
    assert got.decoder == "nvdec" and got.frames.is_cuda and len(got.indices) == 8
    reference = FakeSimpleDecoder(str(clips.source.video_root / name), output_color_type="RGB")  # OpenCV's decode
    want = np.stack([reference.frames[i] for i in got.indices])
    assert np.abs(got.frames.cpu().numpy().astype(int) - want).mean() < 4  # same bitstream, two RGB conversions
