"""`clipguard convert --from-hf`: a tiny random transformers CLIP model in the authors' layout, round-tripped
into a clipguard checkpoint that the stream's scorer and `clipguard evaluate` load from its manifest alone.

The reference numbers come from transformers itself (``CLIPVisionModel.pooler_output`` and the
authors' head), so the round trip checks the converter, the checkpoint format and the loaders
together. ``evaluate`` is given no ``--arch``/``--pretrained``: it must take them from the
checkpoint's manifest (with ``HF_HUB_OFFLINE=1`` any download attempt would fail).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import save_file

from clipguard.config import ClipguardConfig, ModelConfig
from clipguard.errors import CheckpointError, ConfigError
from clipguard.model import CropScorer, DetectorConfig, PreprocessConfig, build_detector, clip_preprocess
from clipguard.model.manifest import read_manifest
from pipeline.cli import cli
from tests.clipguard.model.test_convert_hf import hf_state_from_tower, tiny_hf_model
from tests.training.test_evaluate import FRAMES, write_crop_set

transformers = pytest.importorskip("transformers")

TINY_BASE = DetectorConfig(arch="ViT-Tiny-test", pretrained="none")  # init_seed 0: what serving rebuilds


def hf_model_on_the_tiny_base(seed: int):
    """A transformers CLIPVisionModel holding the tiny random base tower, its LayerNorms moved (LN-tuned)."""
    model = tiny_hf_model()
    base = build_detector(TINY_BASE)
    state = hf_state_from_tower(base.tower.state_dict(), "")
    model.load_state_dict(state, strict=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=g))
    return model.eval()


def write_authors_layout(folder: Path, model, head: str) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """``model.safetensors`` + ``config.json`` as the authors publish them (prefix, projection, head)."""
    folder.mkdir(parents=True)
    state = {f"feature_extractor.vision_model.{k}": v for k, v in model.state_dict().items()}
    state["feature_extractor.visual_projection.weight"] = torch.randn(64, 128)
    g = torch.Generator().manual_seed(11)
    weight, bias = torch.randn(2, 128, generator=g), torch.randn(2, generator=g)
    state["model.linear.weight"], state["model.linear.bias"] = weight, bias
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"backbone": "openai/clip-vit-large-patch14", "head": head}))
    return folder, weight, bias


def reference_p_fake(model, weight, bias, crops: np.ndarray, *, l2: bool) -> np.ndarray:
    """p_fake as the authors' model computes it, on clipguard's preprocessing of the crops."""
    pixels = clip_preprocess(torch.from_numpy(crops).permute(0, 3, 1, 2), PreprocessConfig())
    with torch.no_grad():
        pooled = model(pixel_values=pixels).pooler_output
        logits = F.linear(F.normalize(pooled, dim=-1) if l2 else pooled, weight, bias)
    return torch.softmax(logits, dim=-1)[:, 1].numpy()


def crops(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)


def convert(*args: str):
    """`clipguard convert ARGS`; a refusal is the ClipguardError in ``.exception`` (the entry point prints it)."""
    return CliRunner().invoke(cli, ["convert", *args])


def stream_scores(checkpoint: Path, batch: np.ndarray) -> tuple[ModelConfig, np.ndarray]:
    """Score as `clipguard run --model-checkpoint <ckpt>` does: no arch or base weights given."""
    model = ClipguardConfig(model={"checkpoint": checkpoint, "device": "cpu"}).with_model_files().model
    scorer = CropScorer.from_config(DetectorConfig.for_stream(model, 8), model.checkpoint)
    return model, scorer.score(batch)


@pytest.fixture(scope="module")
def ln_converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert-ln")
    model = hf_model_on_the_tiny_base(seed=3)
    source, weight, bias = write_authors_layout(root / "hf", model, "LinearNorm")
    result = convert("--from-hf", str(source), "--out", str(root / "ckpt"), "--arch", "ViT-Tiny-test",
                     "--pretrained", "none")  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1]), model, weight, bias


def test_converted_ln_checkpoint_scores_like_the_authors_model_in_the_stream(ln_converted):
    out, model, weight, bias = ln_converted
    checkpoint = Path(out["checkpoint"])
    assert checkpoint.name == "detector.safetensors" and checkpoint.parent.name == "ckpt"
    manifest = read_manifest(checkpoint)
    assert (manifest.tuning, manifest.l2_normalize, manifest.base_source) == ("ln", True, "none")
    assert manifest.preset == "converted" and manifest.training_config["hf_config"]["head"] == "LinearNorm"
    assert set(manifest.tensors) == {n for n in manifest.tensors if ".ln_" in n or n.startswith("head.")}
    served_model, scores = stream_scores(checkpoint, crops())
    assert (served_model.arch, served_model.pretrained, served_model.tuning) == ("ViT-Tiny-test", "none", "ln")
    np.testing.assert_allclose(scores, reference_p_fake(model, weight, bias, crops(), l2=True), atol=1e-5)


def test_full_conversion_of_a_model_with_a_plain_linear_head(tmp_path):
    model = tiny_hf_model(seed=8)  # every tensor its own: not an LN-tuned copy of any base
    source, weight, bias = write_authors_layout(tmp_path / "hf", model, "linear")
    refused = convert("--from-hf", str(source), "--out", str(tmp_path / "ln"), "--arch", "ViT-Tiny-test",
                      "--pretrained", "none")  # fmt: skip
    assert isinstance(refused.exception, CheckpointError) and "convert it with tuning 'full'" in str(refused.exception)
    result = convert("--from-hf", str(source), "--out", str(tmp_path / "full.safetensors"), "--arch", "ViT-Tiny-test",
                     "--tuning", "full")  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "full.safetensors")
    assert (manifest.tuning, manifest.l2_normalize) == ("full", False)  # config.json's head 'linear'
    assert len(manifest.tensors) == len(list(build_detector(TINY_BASE).parameters()))  # every tensor stored
    served_model, scores = stream_scores(tmp_path / "full.safetensors", crops())
    assert (served_model.pretrained, served_model.tuning, served_model.l2_normalize) == ("none", "full", False)
    np.testing.assert_allclose(scores, reference_p_fake(model, weight, bias, crops(), l2=False), atol=1e-5)
    contradicting = convert("--from-hf", str(source), "--out", str(tmp_path / "x"), "--arch", "ViT-Tiny-test",
                            "--tuning", "full", "--l2-normalize")  # fmt: skip
    assert "l2_normalize=True was given" in str(contradicting.exception)


def test_a_hub_repo_id_works_offline_only_from_the_cache(tmp_path):
    result = convert("--from-hf", "someone/not-in-the-cache", "--out", str(tmp_path / "x"))
    assert isinstance(result.exception, CheckpointError)
    assert "HF_HUB_OFFLINE is set" in str(result.exception) and "Hugging Face cache" in str(result.exception)
    assert not (tmp_path / "x").exists()


def test_explicit_settings_that_contradict_the_checkpoint_are_refused_before_anything_loads(ln_converted):
    checkpoint = Path(ln_converted[0]["checkpoint"])
    with pytest.raises(ConfigError, match=r"model.arch='ViT-L-14' \(the checkpoint's: 'ViT-Tiny-test'\)"):
        ModelConfig(checkpoint=checkpoint, arch="ViT-L-14").with_checkpoint_identity()
    with pytest.raises(ConfigError, match="model.tuning='full'"):
        ModelConfig(checkpoint=checkpoint, tuning="full").with_checkpoint_identity()
    with pytest.raises(CheckpointError, match="manifest not found"):
        ModelConfig(checkpoint=checkpoint.with_name("missing.safetensors")).with_checkpoint_identity()
    kept = ModelConfig(checkpoint=checkpoint, pretrained="none", init_seed=0).with_checkpoint_identity()
    assert kept.arch == "ViT-Tiny-test" and kept.with_checkpoint_identity() == kept  # idempotent


def test_a_base_read_from_a_file_is_found_by_name_in_the_model_directory(tmp_path):
    import open_clip

    build_detector(TINY_BASE)  # registers the tiny configs with open_clip
    torch.manual_seed(4)
    clip = open_clip.create_model("ViT-Tiny-test", force_quick_gelu=True)
    models = tmp_path / "models"
    models.mkdir()
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(models / "tiny-clip.safetensors"))
    detector = build_detector(TINY_BASE.model_copy(update={"pretrained": str(models / "tiny-clip.safetensors")}))
    from clipguard.model import save_checkpoint

    save_checkpoint(detector, tmp_path / "ckpt", preprocess=PreprocessConfig())
    assert read_manifest(tmp_path / "ckpt").base_source == "file:tiny-clip.safetensors"
    model = ModelConfig(checkpoint=tmp_path / "ckpt.safetensors").with_model_files(models)
    assert (model.arch, model.pretrained) == ("ViT-Tiny-test", str(models / "tiny-clip.safetensors"))
    with pytest.raises(ConfigError, match="'tiny-clip.safetensors' \\(model.pretrained\\) not found"):
        ModelConfig(checkpoint=tmp_path / "ckpt.safetensors").with_model_files(tmp_path / "elsewhere")


def test_evaluate_takes_arch_and_base_weights_from_the_checkpoint(ln_converted, ray_address, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    checkpoint = Path(ln_converted[0]["checkpoint"])
    videos = [(f"r{i}", 0, "test", 2) for i in range(3)] + [(f"f{i}", 1, "test", 2) for i in range(3)]
    crop_set = write_crop_set(tmp_path / "crops", videos, seed=0)
    runner = CliRunner()
    args = ["evaluate", "--checkpoint", str(checkpoint), "--test-set", f"syn={crop_set}", "--device", "cpu",
            "--num-frames", str(FRAMES), "--out", str(tmp_path / "eval")]  # fmt: skip
    result = runner.invoke(cli, args, catch_exceptions=False)  # no --arch, no --pretrained
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    manifest = read_manifest(checkpoint)
    assert report["model"]["arch"] == "ViT-Tiny-test" and report["model"]["pretrained"] == "none"
    assert report["model"]["model_version"] == manifest.version
    refused = runner.invoke(cli, [*args, "--arch", "ViT-L-14"])
    assert isinstance(refused.exception, ConfigError) and "made with other settings" in str(refused.exception)
