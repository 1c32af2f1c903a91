"""The tower builder and LN-tuning counts (docs/method.md §1), on the real ViT-L-14 and on tiny towers."""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import VisionTransformer
from safetensors.torch import save_file

from clipguard.errors import ModelError
from clipguard.model import DetectorConfig, build_detector, build_visual_tower, count_parameters

TINY = "ViT-Tiny-test"


@pytest.mark.slow
def test_vit_l14_ln_tuning_counts_match_the_paper():
    torch.manual_seed(0)
    detector = build_detector(DetectorConfig(arch="ViT-L-14", pretrained="none"))
    counts = count_parameters(detector)

    # 2·1024 (ln_pre) + 24·2·2·1024 (ln_1, ln_2) + 2·1024 (ln_post)
    assert counts.layernorm == 102_400
    assert counts.head == 1024 * 2 + 2 == 2_050
    assert counts.trainable == 104_450
    # The visual tower without its 1024x768 projection, plus the head.
    assert counts.total == 303_966_208 - 1024 * 768 + 2_050
    assert counts.frozen == counts.total - 104_450

    trainable = {name for name, p in detector.named_parameters() if p.requires_grad}
    assert "tower.ln_pre.weight" in trainable and "tower.ln_post.bias" in trainable
    assert "tower.transformer.resblocks.23.ln_2.weight" in trainable
    assert all(".ln_" in name or name.startswith("head.") for name in trainable)
    assert not detector.tower.conv1.weight.requires_grad
    assert not detector.tower.transformer.resblocks[0].attn.in_proj_weight.requires_grad

    assert detector.tower.proj is None
    assert detector.feature_dim == 1024
    assert detector.head.fc.weight.shape == (2, 1024)
    assert isinstance(detector.tower, VisionTransformer)
    # Only the visual tower is kept: no text tower anywhere in the module tree.
    assert {name for name, _ in detector.named_children()} == {"tower", "head"}


def test_tiny_feature_is_cls_token_after_ln_post():
    torch.manual_seed(0)
    detector = build_detector(DetectorConfig(arch=TINY, pretrained="none")).eval()
    captured = {}
    detector.tower.transformer.register_forward_hook(lambda _m, _i, out: captured.setdefault("tokens", out))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        features = detector.features(x)
        expected = detector.tower.ln_post(captured["tokens"][:, 0])
    assert features.shape == (2, 128)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)


def test_micro_arch_goes_through_the_same_builder():
    tower = build_visual_tower("ViT-Micro-test", "none", quick_gelu=True)
    assert isinstance(tower.module, VisionTransformer)
    assert tower.feature_dim == 64 and tower.base_source == "none"
    assert tower.module.proj is None


def test_builder_loads_a_local_weights_file(tmp_path):
    import open_clip

    torch.manual_seed(1)
    build_visual_tower(TINY, "none", quick_gelu=True)  # registers the tiny configs
    clip = open_clip.create_model(TINY, force_quick_gelu=True)
    path = tmp_path / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))

    tower = build_visual_tower(TINY, str(path), quick_gelu=True)

    assert tower.base_source == "file:tiny-clip.safetensors"
    torch.testing.assert_close(tower.module.conv1.weight, clip.visual.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(tower.module.ln_post.weight, clip.visual.ln_post.weight, rtol=0, atol=0)


def test_builder_corrupt_weights_file_raises_model_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="could not build"):
        build_visual_tower(TINY, str(path), quick_gelu=True)


def test_builder_unknown_tag_or_missing_file_raises_model_error(tmp_path):
    with pytest.raises(ModelError, match="not a weights file nor a tag"):
        build_visual_tower(TINY, "openai", quick_gelu=True)
    with pytest.raises(ModelError, match="not a weights file nor a tag"):
        build_visual_tower(TINY, str(tmp_path / "missing.pt"), quick_gelu=True)


def test_builder_quick_gelu_mismatch_with_tag_raises_before_download():
    with pytest.raises(ModelError, match="quick_gelu"):
        build_visual_tower("ViT-L-14", "openai", quick_gelu=False)


def test_builder_unknown_or_non_vit_arch_raises_model_error():
    with pytest.raises(ModelError, match="unknown open_clip architecture"):
        build_visual_tower("ViT-Nope-99", "none", quick_gelu=True)
    with pytest.raises(ModelError, match="not an open_clip VisionTransformer"):
        build_visual_tower("RN50", "none", quick_gelu=True)
