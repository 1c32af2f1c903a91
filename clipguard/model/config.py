"""The detector's configuration: one frozen dataclass, the architecture named as data.

The CLIP preprocessing constants live here and nowhere else (METHOD.md §2): the
batched preprocessing reads them, and every checkpoint manifest records them so a
checkpoint is never served with a different input pipeline than it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from clipguard.errors import ConfigError

# OpenAI CLIP normalisation (equal to open_clip.OPENAI_DATASET_MEAN / _STD; a test checks it).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]
_DEVICES = ("auto", "cpu", "cuda")
_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a face crop becomes the tower's input (resize, centre crop, scale, normalise)."""

    crop_size: int = 256  # side of the aligned face crop the faces stage produces
    image_size: int = 224  # shorter side after the resize, and the centre-crop side
    interpolation: Literal["bicubic"] = "bicubic"  # CLIP's resize filter (antialiased, as PIL)
    mean: tuple[float, float, float] = CLIP_MEAN  # per-channel mean of the [0, 1] image
    std: tuple[float, float, float] = CLIP_STD  # per-channel std of the [0, 1] image

    def __post_init__(self) -> None:
        if self.image_size < 1 or self.crop_size < 1:
            msg = f"preprocess sizes must be positive, got crop_size={self.crop_size}, image_size={self.image_size}"
            raise ConfigError(msg)
        if self.interpolation != "bicubic":
            msg = f"only bicubic interpolation is supported (CLIP's), got {self.interpolation!r}"
            raise ConfigError(msg)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            msg = f"mean and std need 3 values and a positive std, got mean={self.mean}, std={self.std}"
            raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as recorded in a checkpoint manifest."""
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not ignored."""
        known = {"crop_size", "image_size", "interpolation", "mean", "std"}
        unknown = set(data) - known
        if unknown:
            msg = f"unknown preprocessing keys {sorted(unknown)}"
            raise ConfigError(msg)
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to build the detector for serving or training.

    The checkpoint path is not part of it: the same configuration builds the base
    tower for training and, with a checkpoint, the served model.
    """

    arch: str = "ViT-L-14"  # open_clip ViT config name (a built-in, or one in model/model_configs/)
    # 'openai' (or any open_clip tag of the arch); a local full-CLIP weights file in open_clip format
    # (e.g. open_clip_model.safetensors of timm/vit_large_patch14_clip_224.openai); or 'none' (random init).
    pretrained: str = "openai"
    # OpenAI CLIP and the authors' HF checkpoints use QuickGELU; a tag that disagrees is refused.
    quick_gelu: bool = True
    num_classes: int = 2  # head outputs; class 0 = real, 1 = fake
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    device: Device = "auto"  # 'cuda' without CUDA is an error, never a CPU fallback
    precision: Precision = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    max_batch_size: int = 32  # crops per forward pass; larger inputs are chunked
    init_seed: int = 0  # seed of every randomly initialised tensor (head; tower when pretrained='none')

    def __post_init__(self) -> None:
        if not self.arch:
            msg = "arch must name an open_clip ViT config"
            raise ConfigError(msg)
        if not self.pretrained:
            msg = "pretrained must be a tag (e.g. 'openai'), a weights file, or 'none'"
            raise ConfigError(msg)
        if self.device not in _DEVICES:
            msg = f"device must be one of {_DEVICES}, got {self.device!r}"
            raise ConfigError(msg)
        if self.precision not in _PRECISIONS:
            msg = f"precision must be one of {_PRECISIONS}, got {self.precision!r}"
            raise ConfigError(msg)
        if self.num_classes != 2:
            msg = f"the detector is binary (real/fake); num_classes must be 2, got {self.num_classes}"
            raise ConfigError(msg)
        if self.max_batch_size < 1:
            msg = f"max_batch_size must be >= 1, got {self.max_batch_size}"
            raise ConfigError(msg)
