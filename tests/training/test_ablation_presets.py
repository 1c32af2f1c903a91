"""The ablation presets of docs/method.md §8: which parameters train, what the head sees, what a checkpoint stores.

Each shipped preset is loaded as a user would (``--config training/configs/<name>.yaml``),
with only the tower swapped for the tiny random ``ViT-Micro-test`` so the checks run in
seconds. One real optimiser step through the training forward must change exactly the
parameters the preset's ``tuning`` trains; a hook on the head's linear layer shows whether
it saw unit vectors; the checkpoint holds exactly the trained tensors and loads only
onto a detector built with the same switches.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clipguard.errors import CheckpointError, ConfigError
from clipguard.model import DetectorConfig, PreprocessConfig, build_detector, load_checkpoint, save_checkpoint
from clipguard.model.lntuning import is_layernorm_param
from training.losses import loss_weights
from training.train_config import load_train_config
from training.train_step import TrainForward, train_step

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs"
MICRO = ["model.arch=ViT-Micro-test", "model.pretrained=none"]

# preset file -> (tuning, l2_normalize, (ce, unif, align), slerp); rows of docs/method.md §8 and their variants
PRESETS = {
    "linear-probe": ("linear-probe", False, (1.0, 0.0, 0.0), False),  # linear probe (frozen CLIP)
    "ln-tuning": ("ln", False, (1.0, 0.0, 0.0), False),  # LN-tuning
    "ln-tuning-l2": ("ln", True, (1.0, 0.0, 0.0), False),  # LN-tuning + L2
    "paper": ("ln", True, (1.0, 0.1, 0.1), True),  # full method (LN + L2 + UnAl + slerp)
    "full-method-no-slerp": ("ln", True, (1.0, 0.1, 0.1), False),  # LN + L2 + UnAl
    "ce-only": ("ln", True, (1.0, 0.0, 0.0), True),  # LN + L2 + slerp
    "gend": ("ln", True, (1.0, 0.5, 0.1), False),  # GenD
    "full-finetune": ("full", True, (1.0, 0.1, 0.1), True),  # full fine-tuning
}


def expected_trained(detector, tuning: str) -> set[str]:
    names = {name for name, _ in detector.named_parameters()}
    head = {n for n in names if n.startswith("head.")}
    if tuning == "linear-probe":
        return head
    if tuning == "full":
        return names
    return head | {n for n in names if n.startswith("tower.") and is_layernorm_param(n)}


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    crops = torch.randint(0, 256, (6, 3, 256, 256), dtype=torch.uint8, generator=g)
    return crops, torch.tensor([0, 1, 0, 1, 0, 1])


def test_every_shipped_preset_is_covered():
    shipped = {path.stem for path in CONFIGS.glob("*.yaml")} - {"tiny-cpu"}
    assert shipped == set(PRESETS)


def test_method_doc_names_a_preset_for_every_ablation_row():
    text = (REPO / "docs" / "method.md").read_text(encoding="utf-8")
    section = text[text.index("## §8") : text.index("## §9")]
    row = re.compile(r"^\| ([a-zA-Z][^|]+?) \| `training/configs/([a-z0-9-]+)\.yaml`", re.MULTILINE)
    rows = dict(row.findall(section))
    for row in ("linear probe (frozen CLIP)", "LN-tuning", "LN-tuning + L2", "full method (LN + L2 + UnAl + slerp)"):
        assert row in rows, f"docs/method.md §8 names no preset for {row!r}"
        assert rows[row] in PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_trains_what_it_says_and_the_head_sees_what_it_says(name, tmp_path):
    tuning, l2, (ce, unif, align), slerp = PRESETS[name]
    cfg = load_train_config(CONFIGS / f"{name}.yaml", MICRO)
    assert (cfg.model.tuning, cfg.model.l2_normalize) == (tuning, l2)
    assert cfg.loss.weights() == loss_weights(None, ce=ce, unif=unif, align=align, slerp=slerp)
    assert cfg.data.sampling == ("pairs" if name == "gend" else "shuffle")

    detector = build_detector(DetectorConfig(**cfg.model.model_dump()))
    trained = expected_trained(detector, tuning)
    assert {n for n, p in detector.named_parameters() if p.requires_grad} == trained

    # One optimiser step through the training forward: exactly the trained parameters move.
    seen: list[torch.Tensor] = []
    hook = detector.head.fc.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    before = {n: p.detach().clone() for n, p in detector.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=1e-2)
    crops, labels = batch()
    result = train_step(TrainForward(detector, slerp=slerp, seed=1), crops, labels, optimizer, cfg.loss.weights(),
                        preprocess=PreprocessConfig(), autocast_dtype=None)  # fmt: skip
    assert not result.skipped
    changed = {n for n, p in detector.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == trained

    # What the head saw in training, and what it sees when serving: unit vectors only with L2.
    detector.eval()
    with torch.no_grad():
        pixels = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(2))
        features = detector.features(pixels)
        out = detector(pixels)
    hook.remove()
    train_norms, serve_norms = seen[0].norm(dim=-1), seen[1].norm(dim=-1)
    ones = torch.ones_like(train_norms)
    assert torch.allclose(train_norms, ones, atol=1e-5) is l2
    assert torch.allclose(serve_norms, torch.ones_like(serve_norms), atol=1e-5) is l2
    if not l2:
        torch.testing.assert_close(seen[1], features, rtol=0, atol=0)  # the raw CLS feature
    assert torch.allclose(out.embeddings.norm(dim=-1), torch.ones(4), atol=1e-5)  # losses always get unit z

    # The checkpoint stores exactly what trained and loads only with the same switches.
    manifest = save_checkpoint(detector, tmp_path / "ckpt", preprocess=PreprocessConfig())
    assert (manifest.tuning, manifest.l2_normalize) == (tuning, l2)
    assert set(load_file(str(tmp_path / "ckpt.safetensors"))) == trained == set(manifest.tensors)
    fresh = build_detector(DetectorConfig(**cfg.model.model_dump())).eval()
    load_checkpoint(fresh, tmp_path / "ckpt", preprocess=PreprocessConfig())
    with torch.no_grad():
        torch.testing.assert_close(fresh(pixels).logits, out.logits, rtol=0, atol=0)
    other = DetectorConfig(**{**cfg.model.model_dump(), "l2_normalize": not l2})
    with pytest.raises(CheckpointError, match="l2_normalize"):
        load_checkpoint(build_detector(other), tmp_path / "ckpt", preprocess=PreprocessConfig())
    other_tuning = "ln" if tuning != "ln" else "linear-probe"
    other = DetectorConfig(**{**cfg.model.model_dump(), "tuning": other_tuning})
    with pytest.raises(CheckpointError, match=f"tuning={tuning!r}"):
        load_checkpoint(build_detector(other), tmp_path / "ckpt", preprocess=PreprocessConfig())


def test_full_checkpoint_loads_onto_any_base_of_its_architecture(tmp_path):
    config = DetectorConfig(arch="ViT-Micro-test", pretrained="none", tuning="full")
    trained = build_detector(config.model_copy(update={"init_seed": 5})).eval()
    save_checkpoint(trained, tmp_path / "full", preprocess=PreprocessConfig())
    other_base = build_detector(config.model_copy(update={"init_seed": 9})).eval()
    load_checkpoint(other_base, tmp_path / "full", preprocess=PreprocessConfig())  # every tensor overwritten
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(other_base(pixels).logits, trained(pixels).logits, rtol=0, atol=0)
    ln = DetectorConfig(arch="ViT-Micro-test", pretrained="none")
    save_checkpoint(
        build_detector(ln.model_copy(update={"init_seed": 5})), tmp_path / "ln", preprocess=PreprocessConfig()
    )
    with pytest.raises(CheckpointError, match="different base weights"):  # an LN checkpoint needs its own base
        load_checkpoint(build_detector(ln.model_copy(update={"init_seed": 9})), tmp_path / "ln",
                        preprocess=PreprocessConfig())  # fmt: skip


def test_slerp_without_the_l2_head_is_refused():
    with pytest.raises(ConfigError, match=r"loss\.slerp needs model\.l2_normalize=true"):
        load_train_config(CONFIGS / "ln-tuning.yaml", [*MICRO, "loss.slerp=true"])
    # UnAl without L2 is allowed: the losses live on the unit embeddings either way (as the reference code does).
    cfg = load_train_config(CONFIGS / "ln-tuning.yaml", [*MICRO, "loss.unif=0.1", "loss.align=0.1"])
    assert cfg.loss.weights().unif == 0.1 and not cfg.model.l2_normalize


def test_tuning_and_l2_normalize_are_validated():
    with pytest.raises(ConfigError, match="model.tuning"):
        load_train_config(CONFIGS / "paper.yaml", [*MICRO, "model.tuning=lora"])
    with pytest.raises(ConfigError, match="model.l2_normalize"):
        load_train_config(CONFIGS / "paper.yaml", [*MICRO, "model.l2_normalize=maybe"])
