"""Model files that are not ours or were tampered with: refused, and nothing in them ever runs.

Serving loads the LN-tuned weights with safetensors after checking a JSON manifest
(``clipguard/model/checkpoint.py``) and the base tower through open_clip with
``torch.load(weights_only=True)``. A pickle whose ``__reduce__`` runs a command is
the classic payload: whichever door it comes through, it must be refused and the
command must not have run.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from clipguard.errors import CheckpointError, ModelError
from clipguard.model import (
    CropScorer,
    DetectorConfig,
    PreprocessConfig,
    build_detector,
    load_checkpoint,
    save_checkpoint,
)
from clipguard.model.checkpoint import checkpoint_paths, checkpoint_version, sha256_file

CONFIG = DetectorConfig(arch="ViT-Tiny-test", pretrained="none", device="cpu")


class _Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def payload(tmp_path):
    marker = tmp_path / "pwned"
    return pickle.dumps({"tower.ln_post.weight": _Payload(marker)}), marker


@pytest.fixture
def detector():
    torch.manual_seed(0)
    return build_detector(CONFIG).eval()


def test_pickle_renamed_safetensors_without_manifest_is_refused_and_never_unpickled(tmp_path, payload):
    blob, marker = payload
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(blob)
    with pytest.raises(CheckpointError, match="manifest not found"):
        CropScorer.from_config(CONFIG, evil)
    assert not marker.exists()


def test_pickle_with_a_forged_consistent_manifest_is_refused_by_safetensors(tmp_path, payload, detector):
    """An attacker who writes both files (hash and version recomputed) still gets no code run."""
    blob, marker = payload
    manifest = save_checkpoint(detector, tmp_path / "ckpt", preprocess=PreprocessConfig())
    weights, manifest_path = checkpoint_paths(tmp_path / "ckpt")
    weights.write_bytes(blob)
    digest = sha256_file(weights)
    doc = json.loads(manifest_path.read_text())
    doc.update(weights_sha256=digest, version=checkpoint_version(manifest.arch, digest))
    manifest_path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(detector, weights, preprocess=PreprocessConfig())
    assert not marker.exists()


def test_tampered_tensor_bytes_fail_the_sha256_check(tmp_path, detector):
    save_checkpoint(detector, tmp_path / "ckpt", preprocess=PreprocessConfig())
    weights, _ = checkpoint_paths(tmp_path / "ckpt")
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"SHA-256 .* does not match the manifest's .*\(tampered or corrupt\)"):
        load_checkpoint(detector, weights, preprocess=PreprocessConfig())


def test_malicious_pickle_as_base_weights_is_refused_by_weights_only_load(tmp_path, payload):
    blob, marker = payload
    evil = tmp_path / "open_clip_model.bin"
    evil.write_bytes(blob)
    with pytest.raises(ModelError, match="could not build ViT-Tiny-test"):
        CropScorer.from_config(DetectorConfig(arch="ViT-Tiny-test", pretrained=str(evil), device="cpu"))
    assert not marker.exists()
