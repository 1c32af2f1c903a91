"""Train augmentations: uint8 in, uint8 out, each op configurable, seeded, and the presets' choices."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2 as T

from training.augment import augment_crop, blur_kernel_size, build_train_augment
from training.train_config import AugmentSection, load_train_config

OFF = dict(hflip_p=0.0, rotate_deg=0.0, translate=0.0, scale=(1.0, 1.0), blur_p=0.0, brightness=0.0, contrast=0.0)


@pytest.fixture
def crop() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(256, 256), mode="bilinear")
    return (smooth[0] * 255).round().to(torch.uint8)


def op_types(transform) -> list[type]:
    return [type(t) for t in transform.transforms]


def test_full_chain_keeps_uint8_and_size_and_changes_pixels(crop):
    torch.manual_seed(0)
    out = augment_crop(build_train_augment(AugmentSection()), crop)
    assert out.dtype == torch.uint8 and out.shape == crop.shape
    assert not torch.equal(out, crop)


def test_reference_chain_has_every_op_in_order():
    types = op_types(build_train_augment(AugmentSection()))
    assert types == [T.RandomHorizontalFlip, T.RandomAffine, T.RandomApply, T.ColorJitter, T.JPEG]


def test_same_seed_same_augmentation(crop):
    transform = build_train_augment(AugmentSection())
    torch.manual_seed(7)
    first = transform(crop)
    torch.manual_seed(7)
    assert torch.equal(transform(crop), first)


def test_disabled_is_the_identity(crop):
    assert torch.equal(augment_crop(build_train_augment(AugmentSection(enabled=False)), crop), crop)


def test_flip_with_p1_mirrors_exactly_when_nothing_else_changes_pixels(crop):
    transform = build_train_augment(AugmentSection(**{**OFF, "hflip_p": 1.0}, jpeg_quality=(100, 100)))
    assert op_types(transform) == [T.RandomHorizontalFlip, T.JPEG]
    out = transform(crop)
    # JPEG at quality 100 is near-lossless on a smooth image.
    assert (out.int() - crop.flip(-1).int()).abs().float().mean() < 1.5


def test_low_jpeg_quality_adds_compression_error(crop):
    noisy = crop.clone()
    noisy[:, ::2, ::2] = 255 - noisy[:, ::2, ::2]  # high frequencies JPEG must throw away
    out = build_train_augment(AugmentSection(**OFF, jpeg_quality=(40, 40)))(noisy)
    assert (out.int() - noisy.int()).abs().float().mean() > 5


def test_blur_probability_follows_the_config():
    blur = [t for t in build_train_augment(AugmentSection(blur_p=0.1)).transforms if isinstance(t, T.RandomApply)]
    assert len(blur) == 1 and blur[0].p == pytest.approx(0.1)
    assert isinstance(blur[0].transforms[0], T.GaussianBlur)
    assert T.RandomApply not in op_types(build_train_augment(AugmentSection(blur_p=0.0)))


def test_blur_kernel_covers_three_sigma():
    assert blur_kernel_size(2.0) == 13
    assert blur_kernel_size(0.5) == 5


def test_affine_is_skipped_when_its_ranges_are_zero():
    assert T.RandomAffine not in op_types(build_train_augment(AugmentSection(**OFF)))


def test_presets_choose_the_method_augmentations():
    gend = load_train_config("training/configs/gend.yaml").augment
    paper = load_train_config("training/configs/paper.yaml").augment
    assert gend.blur_p == pytest.approx(0.1)
    for aug in (gend, paper):
        assert (aug.hflip_p, aug.rotate_deg, aug.translate, tuple(aug.scale)) == (0.5, 10.0, 0.1, (0.9, 1.1))
        assert tuple(aug.blur_sigma) == (0.1, 2.0) and (aug.brightness, aug.contrast) == (0.1, 0.1)
        assert tuple(aug.jpeg_quality) == (40, 100)


def test_bad_crop_is_refused(crop):
    with pytest.raises(ValueError, match="uint8"):
        augment_crop(build_train_augment(AugmentSection()), crop.float())
