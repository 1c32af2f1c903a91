"""Checkpoint format: round trip, what is stored, and every refusal (tamper, arch, base, preprocessing)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from clipguard.errors import CheckpointError
from clipguard.model import (
    DetectorConfig,
    PreprocessConfig,
    build_detector,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
    untrained_version,
)
from clipguard.model.checkpoint import checkpoint_paths, sha256_file
from clipguard.model.lntuning import is_trained_param

CONFIG = DetectorConfig(arch="ViT-Tiny-test", pretrained="none")


def base_detector(seed: int = 0, config: DetectorConfig = CONFIG):
    # random init (seeded by the config) stands in for fixed pretrained weights
    return build_detector(config.model_copy(update={"init_seed": seed})).eval()


def trained_detector():
    """A base detector whose LayerNorms and head moved, as after training."""
    detector = base_detector()
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, param in detector.named_parameters():
            if is_trained_param(name):
                param.add_(0.1 * torch.randn(param.shape, generator=g))
    return detector


@pytest.fixture
def saved(tmp_path):
    detector = trained_detector()
    manifest = save_checkpoint(
        detector,
        tmp_path / "ckpt",
        preprocess=PreprocessConfig(),
        preset="paper",
        loss_weights={"ce": 1.0, "unif": 0.1, "align": 0.1, "slerp": True},
        metrics={"val/mAP_video": 0.91},
        training_config={"lr": 8e-5, "epochs": 10},
    )
    return detector, manifest, tmp_path / "ckpt.safetensors"


def outputs(detector, seed=5):
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = detector(x)
    return out.logits, out.embeddings


def test_round_trip_reproduces_outputs_exactly(saved):
    trained, manifest, path = saved
    fresh = base_detector()
    assert not torch.equal(outputs(fresh)[0], outputs(trained)[0])

    loaded = load_checkpoint(fresh, path, preprocess=PreprocessConfig())

    assert loaded == manifest
    for a, b in zip(outputs(fresh), outputs(trained), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_manifest_records_identity_hash_and_training_info(saved):
    _, manifest, path = saved
    assert manifest == read_manifest(path) == read_manifest(str(path).replace(".safetensors", ".manifest.json"))
    assert manifest.weights_sha256 == sha256_file(path)
    assert re.fullmatch(r"clipguard-ViT-Tiny-test-[0-9a-f]{12}", manifest.version)
    assert manifest.version.endswith(manifest.weights_sha256[:12])
    assert manifest.arch == "ViT-Tiny-test" and manifest.base_source == "none" and manifest.quick_gelu
    assert manifest.preprocess == PreprocessConfig().to_dict()
    assert manifest.preset == "paper" and manifest.loss_weights["unif"] == 0.1
    assert manifest.metrics == {"val/mAP_video": 0.91} and manifest.training_config["epochs"] == 10
    assert manifest.format_version == 2 and manifest.created_at.endswith("+00:00")
    assert (manifest.tuning, manifest.l2_normalize, manifest.init_seed) == ("ln", True, 0)
    json.loads(path.with_name("ckpt.manifest.json").read_text())  # plain JSON


def test_only_layernorm_and_head_tensors_are_stored(saved):
    detector, manifest, path = saved
    stored = load_file(str(path))
    expected = {name for name, _ in detector.named_parameters() if is_trained_param(name)}
    assert set(stored) == expected == set(manifest.tensors)
    assert all(".ln_" in name or name.startswith("head.fc.") for name in stored)
    assert sum(t.numel() for t in stored.values()) == 10 * 2 * 128 + 2 * 128 + 2
    assert all(t.dtype == torch.float32 for t in stored.values())


def test_tampered_weights_are_rejected_and_model_left_unchanged(saved):
    _, _, path = saved
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    fresh = base_detector()
    before = outputs(fresh)[0]
    with pytest.raises(CheckpointError, match="tampered or corrupt"):
        load_checkpoint(fresh, path, preprocess=PreprocessConfig())
    torch.testing.assert_close(outputs(fresh)[0], before, rtol=0, atol=0)


def test_mismatched_arch_is_rejected(saved):
    _, _, path = saved
    other = base_detector(config=DetectorConfig(arch="ViT-Micro-test", pretrained="none"))
    with pytest.raises(CheckpointError, match="arch 'ViT-Tiny-test'.*'ViT-Micro-test'"):
        load_checkpoint(other, path, preprocess=PreprocessConfig())


def test_different_base_weights_are_rejected(saved):
    _, _, path = saved
    with pytest.raises(CheckpointError, match="different base weights"):
        load_checkpoint(base_detector(seed=1), path, preprocess=PreprocessConfig())


def test_different_preprocessing_or_activation_is_rejected(saved):
    _, _, path = saved
    with pytest.raises(CheckpointError, match="preprocessing"):
        load_checkpoint(base_detector(), path, preprocess=PreprocessConfig(crop_size=224))
    gelu = base_detector(config=DetectorConfig(arch="ViT-Tiny-test", pretrained="none", quick_gelu=False))
    with pytest.raises(CheckpointError, match="quick_gelu"):
        load_checkpoint(gelu, path, preprocess=PreprocessConfig())


def test_extra_tensor_is_rejected_even_with_a_consistent_manifest(saved):
    _, manifest, path = saved
    tensors = load_file(str(path))
    tensors["tower.conv1.weight"] = torch.zeros(128, 3, 32, 32)  # smuggling a frozen tensor in
    save_file(tensors, str(path))
    digest = sha256_file(path)
    data = json.loads(path.with_name("ckpt.manifest.json").read_text())
    data.update(weights_sha256=digest, version=f"clipguard-ViT-Tiny-test-{digest[:12]}")
    data["tensors"]["tower.conv1.weight"] = [128, 3, 32, 32]
    path.with_name("ckpt.manifest.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"unexpected \['tower.conv1.weight'\]"):
        load_checkpoint(base_detector(), path, preprocess=PreprocessConfig())


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(version="clipguard-ViT-Tiny-test-000000000000"), "does not match the weights hash"),
        (lambda d: d.update(surprise=1), "unknown fields"),
        (lambda d: d.pop("base_fingerprint"), "missing fields"),
        (lambda d: d.update(format_version=99), "format_version 99"),
        (lambda d: d["tensors"].pop("head.fc.bias"), "tensors differ from the manifest"),
    ],
)
def test_edited_manifest_is_rejected(saved, edit, match):
    _, _, path = saved
    manifest_path = path.with_name("ckpt.manifest.json")
    data = json.loads(manifest_path.read_text())
    edit(data)
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(base_detector(), path, preprocess=PreprocessConfig())


def test_missing_files_are_rejected(tmp_path, saved):
    _, _, path = saved
    with pytest.raises(CheckpointError, match="manifest not found"):
        load_checkpoint(base_detector(), tmp_path / "nothing.safetensors", preprocess=PreprocessConfig())
    path.unlink()
    with pytest.raises(CheckpointError, match="weights not found"):
        load_checkpoint(base_detector(), path, preprocess=PreprocessConfig())


def test_paths_and_untrained_version():
    weights, manifest = checkpoint_paths("runs/x/best.manifest.json")
    assert (weights.name, manifest.name) == ("best.safetensors", "best.manifest.json")
    assert checkpoint_paths("runs/x/best") == checkpoint_paths("runs/x/best.safetensors")
    assert untrained_version("ViT-L-14", "openai") == "ViT-L-14-openai-untrained-head"


class Wrapper(torch.nn.Module):
    """Stands in for DistributedDataParallel, which exposes the model as ``.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def test_wrapped_model_saves_and_loads_like_the_detector(tmp_path):
    trained = trained_detector()
    manifest = save_checkpoint(Wrapper(trained), tmp_path / "ddp", preprocess=PreprocessConfig())
    assert set(manifest.tensors) == set(load_file(str(tmp_path / "ddp.safetensors")))
    fresh = base_detector()
    load_checkpoint(Wrapper(fresh), tmp_path / "ddp", preprocess=PreprocessConfig())
    torch.testing.assert_close(outputs(fresh)[0], outputs(trained)[0], rtol=0, atol=0)


def test_non_json_training_config_fails_before_writing(tmp_path):
    with pytest.raises(CheckpointError, match="training_config"):
        save_checkpoint(base_detector(), tmp_path / "x", preprocess=PreprocessConfig(), training_config={"p": object()})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="expected a Detector"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "x", preprocess=PreprocessConfig())


def test_a_format_1_manifest_reads_as_what_every_format_1_checkpoint_was(saved):
    """Format 1 had no tuning, l2_normalize or init_seed: every such checkpoint was LN-tuned with the L2 head."""
    _, manifest, path = saved
    manifest_path = checkpoint_paths(path)[1]
    doc = json.loads(manifest_path.read_text())
    for key in ("tuning", "l2_normalize", "init_seed"):
        doc.pop(key)
    doc.update(format_version=1, training_config={"model": {"init_seed": 0}})
    manifest_path.write_text(json.dumps(doc))
    old = read_manifest(path)
    assert (old.format_version, old.tuning, old.l2_normalize, old.init_seed) == (1, "ln", True, 0)
    load_checkpoint(base_detector(), path, preprocess=PreprocessConfig())  # still loads
    doc["tuning"] = "full"
    manifest_path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="format_version 1 manifest cannot have"):
        read_manifest(path)
