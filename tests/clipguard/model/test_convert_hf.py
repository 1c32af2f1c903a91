"""HF transformers CLIP-vision -> open_clip tower: numerical parity on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from clipguard.errors import CheckpointError
from clipguard.model import DetectorConfig, PreprocessConfig, build_detector, load_checkpoint
from clipguard.model.convert_hf import convert_hf_state_dict, convert_to_checkpoint, load_converted, read_hf_weights

transformers = pytest.importorskip("transformers", reason="transformers is the optional 'hf' extra")

CONFIG = DetectorConfig(arch="ViT-Tiny-test", pretrained="none")


def tiny_hf_model(seed: int = 0):
    """A random CLIPVisionModel with ViT-Tiny-test's dims, every tensor randomised (LayerNorms too)."""
    torch.manual_seed(seed)
    config = transformers.CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=224,
        patch_size=32,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    model = transformers.CLIPVisionModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def released_layout(model) -> dict[str, torch.Tensor]:
    """State dict as the released (transformers 4) checkpoints name it: ``vision_model.*``."""
    state = model.state_dict()
    return {k if k.startswith("vision_model.") else f"vision_model.{k}": v for k, v in state.items()}


def hf_state_from_tower(tower_state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The inverse mapping (open_clip -> HF), to build HF checkpoints of a known base tower."""
    out = {
        f"{prefix}embeddings.class_embedding": tower_state["class_embedding"],
        f"{prefix}embeddings.patch_embedding.weight": tower_state["conv1.weight"],
        f"{prefix}embeddings.position_embedding.weight": tower_state["positional_embedding"],
    }
    renames = {"ln_pre": "pre_layrnorm", "ln_post": "post_layernorm"}
    layer_renames = {
        "attn.out_proj": "self_attn.out_proj",
        "ln_1": "layer_norm1",
        "ln_2": "layer_norm2",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
    }
    for key, tensor in tower_state.items():
        module, _, kind = key.rpartition(".")
        if module in renames:
            out[f"{prefix}{renames[module]}.{kind}"] = tensor
        elif key.startswith("transformer.resblocks."):
            _, _, layer, rest = key.split(".", 3)
            base = f"{prefix}encoder.layers.{layer}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                suffix = "weight" if rest.endswith("weight") else "bias"
                for letter, part in zip("qkv", tensor.chunk(3, dim=0), strict=True):
                    out[f"{base}self_attn.{letter}_proj.{suffix}"] = part.contiguous()
            else:
                sub, _, kind = rest.rpartition(".")
                out[f"{base}{layer_renames[sub]}.{kind}"] = tensor
    return out


def test_converted_tower_matches_hf_pooler_output():
    hf = tiny_hf_model()
    converted = convert_hf_state_dict(released_layout(hf))
    assert converted.head is None
    detector = build_detector(CONFIG).eval()
    load_converted(detector, converted)

    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(pixel_values=x).pooler_output
        got = detector.features(x)
    assert got.shape == expected.shape == (3, 128)
    assert (got - expected).abs().max().item() < 1e-4


def test_authors_layout_with_prefix_and_head_is_converted(tmp_path):
    hf = tiny_hf_model(seed=2)
    state = {f"feature_extractor.{k}": v for k, v in released_layout(hf).items()}
    state["feature_extractor.visual_projection.weight"] = torch.randn(64, 128)
    head_w, head_b = torch.randn(2, 128), torch.randn(2)
    state["model.linear.weight"], state["model.linear.bias"] = head_w, head_b
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    gend_config = {"backbone": "openai/clip-vit-large-patch14", "head": "LinearNorm"}
    (tmp_path / "config.json").write_text(json.dumps(gend_config))

    weights = read_hf_weights(tmp_path)
    converted = convert_hf_state_dict(weights.state_dict, weights.config)
    assert "feature_extractor.visual_projection.weight" in converted.ignored
    detector = build_detector(CONFIG).eval()
    load_converted(detector, converted)

    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = F.linear(F.normalize(hf(pixel_values=x).pooler_output, dim=-1), head_w, head_b)
        got = detector(x).logits
    assert (got - expected).abs().max().item() < 1e-4


def test_save_pretrained_directory_round_trips(tmp_path):
    hf = tiny_hf_model(seed=4)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    weights = read_hf_weights(tmp_path)
    assert weights.config["hidden_act"] == "quick_gelu"
    converted = convert_hf_state_dict(weights.state_dict, weights.config)
    detector = build_detector(CONFIG).eval()
    load_converted(detector, converted)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (detector.features(x) - hf(pixel_values=x).pooler_output).abs().max().item() < 1e-4


def test_convert_to_checkpoint_serves_the_hf_model_on_its_base(tmp_path):
    torch.manual_seed(0)
    base = build_detector(CONFIG).eval()
    state = hf_state_from_tower(base.tower.state_dict(), "feature_extractor.vision_model.")
    for key in [k for k in state if "layer_norm" in k or "layrnorm" in k]:  # LN-tuning moved the LayerNorms
        state[key] = state[key] + 0.1 * torch.randn_like(state[key])
    state["model.linear.weight"], state["model.linear.bias"] = torch.randn(2, 128), torch.randn(2)
    source = tmp_path / "hf"
    source.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(source / "model.safetensors"))

    torch.manual_seed(0)  # the converter rebuilds the same random base
    manifest = convert_to_checkpoint(source, CONFIG, tmp_path / "converted")
    assert manifest.preset == "converted" and manifest.training_config["converted_from"] == str(source)

    torch.manual_seed(0)
    served = build_detector(CONFIG).eval()
    load_checkpoint(served, tmp_path / "converted.safetensors", preprocess=PreprocessConfig())
    reference = build_detector(CONFIG).eval()
    load_converted(reference, convert_hf_state_dict(state))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(served(x).logits, reference(x).logits, rtol=0, atol=0)


def test_convert_to_checkpoint_refuses_changed_frozen_weights(tmp_path):
    state = released_layout(tiny_hf_model(seed=5))
    state["head.weight"], state["head.bias"] = torch.randn(2, 128), torch.randn(2)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not a tuning='ln' checkpoint of that base; convert it with tuning"):
        convert_to_checkpoint(tmp_path / "model.safetensors", CONFIG, tmp_path / "out")


@pytest.mark.parametrize(
    ("config", "match"),
    [({"head": "MLP"}, "not one the detector computes"), ({"hidden_act": "gelu"}, "hidden_act='gelu'")],
)
def test_incompatible_config_is_refused(config, match):
    with pytest.raises(CheckpointError, match=match):
        convert_hf_state_dict(released_layout(tiny_hf_model()), config)


def test_unknown_tensors_and_incomplete_qkv_are_refused():
    state = released_layout(tiny_hf_model())
    with pytest.raises(CheckpointError, match="unknown tensor"):
        convert_hf_state_dict({**state, "vision_model.encoder.layers.0.lora_A.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="outside the vision tower"):
        convert_hf_state_dict({**state, "adapter.scale": torch.zeros(3)})
    state.pop("vision_model.encoder.layers.1.self_attn.k_proj.bias")
    with pytest.raises(CheckpointError, match="q/k/v bias incomplete"):
        convert_hf_state_dict(state)


def test_pickle_only_directory_is_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="expected model.safetensors"):
        read_hf_weights(tmp_path)


def test_unprefixed_transformers5_layout_finds_head_by_name():
    hf = tiny_hf_model(seed=6)
    state = {k.removeprefix("vision_model."): v for k, v in hf.state_dict().items()}  # as transformers 5 saves it
    state["classifier.weight"], state["classifier.bias"] = torch.randn(2, 128), torch.randn(2)
    converted = convert_hf_state_dict(state)
    assert converted.head is not None
    torch.testing.assert_close(converted.head["fc.weight"], state["classifier.weight"], rtol=0, atol=0)
