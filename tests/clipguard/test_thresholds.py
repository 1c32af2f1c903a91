"""How the stream resolves its verdict thresholds: calibrated file beside the checkpoint, explicit values, refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

from clipguard.config import ClipguardConfig, ModelConfig, SamplingConfig, VideoScoreConfig
from clipguard.errors import ConfigError
from clipguard.model import DetectorConfig, PreprocessConfig, build_detector, read_manifest, save_checkpoint
from clipguard.model.lntuning import is_trained_param
from clipguard.thresholds import (
    ThresholdsFile,
    resolve_thresholds,
    thresholds_path_for,
    write_thresholds_file,
)
from pipeline.cli_options import build_config

TINY = {"arch": "ViT-Tiny-test", "pretrained": "none"}


def save_tiny_checkpoint(path, seed: int):
    detector = build_detector(DetectorConfig(**TINY, device="cpu")).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in detector.named_parameters():
            if is_trained_param(name):
                param.add_(0.1 * torch.randn(param.shape, generator=g))
    save_checkpoint(detector, path, preprocess=PreprocessConfig())
    return path.with_name(path.name + ".safetensors")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return save_tiny_checkpoint(root / "a", 1), save_tiny_checkpoint(root / "b", 2)


def calibrated_for(checkpoint, fake=0.73, real=0.55, **changes) -> ThresholdsFile:
    manifest = read_manifest(checkpoint) if checkpoint else None
    content = ThresholdsFile(
        fake=fake, real=real, target_fpr=0.01, target_fnr=0.01, achieved={"fpr": 0.0}, validation_set="val.csv",
        model_version=manifest.version if manifest else "ViT-Tiny-test-none-untrained-head", arch="ViT-Tiny-test",
        pretrained="none", checkpoint=str(checkpoint) if checkpoint else None,
        weights_sha256=manifest.weights_sha256 if manifest else None,
        video_score=VideoScoreConfig().definition(SamplingConfig()),
    )  # fmt: skip
    return dataclasses.replace(content, **changes)


@pytest.fixture
def no_env(monkeypatch):
    for key in ("CLIPGUARD_THRESHOLDS__FAKE", "CLIPGUARD_THRESHOLDS__REAL", "CLIPGUARD_THRESHOLDS__FILE",
                "CLIPGUARD_THRESHOLDS__FILE_SHA256"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)


def stream_cfg(checkpoint=None, video_score=None, sampling=None, **thresholds) -> ClipguardConfig:
    model = ModelConfig(**TINY, checkpoint=checkpoint)
    sections = {"video_score": video_score, "sampling": sampling, "thresholds": thresholds or None}
    return ClipguardConfig(model=model, **{k: v for k, v in sections.items() if v is not None})


def test_thresholds_file_name_sits_beside_the_checkpoint(tmp_path):
    expected = tmp_path / "best.thresholds.json"
    for given in ("best", "best.safetensors", "best.manifest.json"):
        assert thresholds_path_for(tmp_path / given) == expected


def test_stream_picks_up_the_file_beside_its_checkpoint(checkpoints, no_env):
    a, _ = checkpoints
    path = write_thresholds_file(thresholds_path_for(a), calibrated_for(a))
    try:
        resolved = resolve_thresholds(stream_cfg(a))
        assert (resolved.thresholds.fake, resolved.thresholds.real, resolved.thresholds.file) == (0.73, 0.55, path)
        assert resolved.thresholds.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # verdicts record it
        assert resolve_thresholds(stream_cfg(None)).thresholds == stream_cfg(None).thresholds  # no checkpoint, no file
    finally:
        path.unlink()
    assert resolve_thresholds(stream_cfg(a)).thresholds.file is None  # file gone: the configured values


def test_explicit_thresholds_win_field_by_field(checkpoints, no_env, monkeypatch):
    a, _ = checkpoints
    path = write_thresholds_file(thresholds_path_for(a), calibrated_for(a))
    try:
        monkeypatch.setenv("CLIPGUARD_THRESHOLDS__FAKE", "0.9")
        resolved = resolve_thresholds(stream_cfg(a))
        assert (resolved.thresholds.fake, resolved.thresholds.real) == (0.9, 0.55)  # real from the file
        flagged = resolve_thresholds(build_config({"thresholds__real": "0.05", "model__checkpoint": str(a), **{
            f"model__{k}": v for k, v in TINY.items()}}))  # fmt: skip
        assert (flagged.thresholds.fake, flagged.thresholds.real) == (0.9, 0.05)  # env fake + flag real
        monkeypatch.setenv("CLIPGUARD_THRESHOLDS__FAKE", "0.5")  # below the file's real: refused, not swapped
        with pytest.raises(ConfigError, match="invalid"):
            resolve_thresholds(stream_cfg(a))
    finally:
        path.unlink()


def test_thresholds_for_other_weights_are_refused(checkpoints, no_env, tmp_path):
    a, b = checkpoints
    stale = write_thresholds_file(tmp_path / "stale.json", calibrated_for(a))
    with pytest.raises(ConfigError, match="calibrated for other weights"):
        resolve_thresholds(stream_cfg(b, file=stale))
    with pytest.raises(ConfigError, match="without a checkpoint"):
        resolve_thresholds(stream_cfg(None, file=stale))
    base = write_thresholds_file(tmp_path / "base.json", calibrated_for(None))
    assert resolve_thresholds(stream_cfg(None, file=base)).thresholds.fake == 0.73
    with pytest.raises(ConfigError, match="calibrated for other weights"):
        resolve_thresholds(stream_cfg(a, file=base))


def test_thresholds_for_another_video_score_are_refused(checkpoints, no_env, tmp_path):
    a, _ = checkpoints
    paper = VideoScoreConfig.paper()
    made = write_thresholds_file(tmp_path / "paper.json",
                                 calibrated_for(a, video_score=paper.definition(SamplingConfig())))  # fmt: skip
    assert resolve_thresholds(stream_cfg(a, video_score=paper, file=made)).thresholds.fake == 0.73
    # The group-scene bug: thresholds picked on largest-face scores, applied to all faces' tracks.
    with pytest.raises(ConfigError, match=r"another video score.*face_policy: 'largest' != 'all'.*pooling"):
        resolve_thresholds(stream_cfg(a, file=made))
    with pytest.raises(ConfigError, match="aggregation: 'mean' != 'median'"):
        resolve_thresholds(stream_cfg(a, video_score=paper.model_copy(update={"aggregation": "median"}), file=made))
    with pytest.raises(ConfigError, match="num_frames: 32 != 8"):
        resolve_thresholds(stream_cfg(a, video_score=paper, sampling=SamplingConfig(num_frames=8), file=made))
    # Fields a definition does not use do not count: max_faces under 'largest', min_track_crops under 'crops'.
    same = paper.model_copy(update={"max_faces": 3, "min_track_crops": 9})
    assert resolve_thresholds(stream_cfg(a, video_score=same, file=made)).thresholds.file == made


def test_pinned_thresholds_hash_is_checked(checkpoints, no_env, tmp_path):
    a, _ = checkpoints
    path = write_thresholds_file(tmp_path / "t.json", calibrated_for(a))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert resolve_thresholds(stream_cfg(a, file=path, file_sha256=digest)).thresholds.file_sha256 == digest
    with pytest.raises(ConfigError, match="is not the pinned"):
        resolve_thresholds(stream_cfg(a, file=path, file_sha256="0" * 64))
    with pytest.raises(ConfigError, match="no thresholds file is in use"):
        resolve_thresholds(stream_cfg(a, file_sha256=digest))


def test_missing_or_malformed_thresholds_file_is_an_error(tmp_path, no_env):
    with pytest.raises(ConfigError, match="not found"):
        resolve_thresholds(stream_cfg(None, file=tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        resolve_thresholds(stream_cfg(None, file=bad))
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="not a clipguard thresholds file"):
        resolve_thresholds(stream_cfg(None, file=bad))
    doc = json.loads(calibrated_for(None).to_json())
    bad.write_text(json.dumps({**doc, "fakee": 0.5}))
    with pytest.raises(ConfigError, match="unknown"):
        resolve_thresholds(stream_cfg(None, file=bad))
    old = {k: v for k, v in doc.items() if k != "video_score"} | {
        "format": "clipguard-thresholds/1",
        "aggregation": "mean",
    }
    bad.write_text(json.dumps(old))  # written before the video score was recorded: which score it was is unknown
    with pytest.raises(ConfigError, match="does not say which video score"):
        resolve_thresholds(stream_cfg(None, file=bad))
