"""Batched CLIP preprocessing against open_clip's own PIL eval transform (docs/method.md §2)."""

from __future__ import annotations

import warnings

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from clipguard.errors import ModelError
from clipguard.model import CLIP_MEAN, CLIP_STD, PreprocessConfig, as_uint8_nchw, clip_preprocess

FACES = ("faces/newton.png", "faces/gauss.png", "faces/solvay_conference_1927.png")


def reference(images: list[np.ndarray]) -> torch.Tensor:
    transform = open_clip.image_transform(
        224, is_train=False, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic", resize_mode="shortest"
    )
    return torch.stack([transform(Image.fromarray(image)) for image in images])


def smooth_image(seed: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    return np.asarray(coarse.resize((size[1], size[0]), Image.BILINEAR))


@pytest.fixture
def face_crops(assets) -> list[np.ndarray]:
    crops = [np.asarray(Image.open(assets / name).convert("RGB").resize((256, 256), Image.BICUBIC)) for name in FACES]
    return crops + [smooth_image(0, (256, 256))]


def test_matches_open_clip_pil_transform_within_one_level(face_crops):
    ours = clip_preprocess(as_uint8_nchw(np.stack(face_crops)), PreprocessConfig())
    ref = reference(face_crops)
    assert ours.shape == ref.shape == (4, 3, 224, 224) and ours.dtype == torch.float32
    diff = (ours - ref).abs()
    # PIL's fixed-point and torch's float antialiased bicubic agree to 1 uint8 level almost
    # everywhere; sharp edges (the 1927 group photo) differ by a few levels at most.
    level = 1.0 / 255 / min(CLIP_STD)
    assert torch.quantile(diff.flatten(), 0.999).item() <= 1.01 * level
    assert diff.max().item() <= 6 * level
    assert diff.mean().item() < 0.005


def test_non_square_and_already_224_inputs_match_reference():
    for size in ((256, 320), (224, 224), (300, 256)):
        image = smooth_image(1, size)
        ours = clip_preprocess(as_uint8_nchw(image[None]), PreprocessConfig())
        ref = reference([image])
        assert ours.shape == (1, 3, 224, 224)
        assert (ours - ref).abs().max().item() <= 1.01 / 255 / min(CLIP_STD)


def test_layouts_and_containers_give_identical_results(face_crops):
    nhwc = np.stack(face_crops)
    expected = clip_preprocess(as_uint8_nchw(nhwc), PreprocessConfig())
    for batch in (torch.from_numpy(nhwc), torch.from_numpy(nhwc).permute(0, 3, 1, 2).contiguous(), face_crops):
        torch.testing.assert_close(clip_preprocess(as_uint8_nchw(batch), PreprocessConfig()), expected, rtol=0, atol=0)


def test_constants_are_openai_clip_constants():
    assert CLIP_MEAN == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert CLIP_STD == tuple(open_clip.OPENAI_DATASET_STD)
    assert PreprocessConfig().to_dict() == {
        "crop_size": 256,
        "image_size": 224,
        "interpolation": "bicubic",
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
    }
    assert PreprocessConfig.from_dict(PreprocessConfig().to_dict()) == PreprocessConfig()


def test_read_only_arrays_are_accepted_without_warning(face_crops):
    batch = np.stack(face_crops)
    batch.flags.writeable = False  # as Ray's object store returns them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = as_uint8_nchw(batch)
    assert torch.equal(out, torch.from_numpy(np.stack(face_crops)).permute(0, 3, 1, 2))


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (np.zeros((2, 256, 256, 3), dtype=np.float32), "uint8"),
        (np.zeros((256, 256, 3), dtype=np.uint8), "batch"),
        (np.zeros((2, 256, 256, 4), dtype=np.uint8), "3 \\(RGB\\) channels"),
        ([np.zeros((256, 256, 3), np.uint8), np.zeros((128, 128, 3), np.uint8)], "one shape"),
    ],
)
def test_bad_inputs_raise_model_error(batch, match):
    with pytest.raises(ModelError, match=match):
        as_uint8_nchw(batch)
