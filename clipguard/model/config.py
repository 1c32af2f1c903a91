"""The detector's configuration: frozen pydantic models on the project's one config base.

The CLIP preprocessing constants live here and nowhere else (docs/method.md §2): the
batched preprocessing reads them, and every checkpoint manifest records them so a
checkpoint is never served with a different input pipeline than it was trained on.
A bad value raises :class:`~clipguard.errors.ConfigError` naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from clipguard.config import InferenceConfig, ModelConfig, Section, validation_problems
from clipguard.errors import ConfigError

# OpenAI CLIP normalisation (equal to open_clip.OPENAI_DATASET_MEAN / _STD; a test checks it).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


class _RaisesConfigError:
    """Mixin: validation failures surface as ConfigError (a ClipguardError), like every model error."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            msg = f"{type(self).__name__}: {validation_problems(exc)}"
            raise ConfigError(msg) from exc


class PreprocessConfig(_RaisesConfigError, Section):
    """How a face crop becomes the tower's input (resize, centre crop, scale, normalise)."""

    crop_size: int = Field(256, ge=1, description="side of the aligned face crop the faces stage produces")
    image_size: int = Field(224, ge=1, description="shorter side after the resize, and the centre-crop side")
    interpolation: Literal["bicubic"] = Field("bicubic", description="CLIP's resize filter (antialiased, as PIL)")
    mean: tuple[float, float, float] = Field(CLIP_MEAN, description="per-channel mean of the [0, 1] image")
    std: tuple[float, float, float] = Field(CLIP_STD, description="per-channel std of the [0, 1] image")

    @model_validator(mode="after")
    def _positive_std(self) -> PreprocessConfig:
        if min(self.std) <= 0:
            msg = f"std must be positive, got {self.std}"
            raise ValueError(msg)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as recorded in a checkpoint manifest."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not ignored."""
        return cls(**data)


class DetectorConfig(_RaisesConfigError, InferenceConfig):
    """Everything needed to build the detector for serving or training.

    Tower, weights and init seed come from :class:`~clipguard.config.TowerConfig`,
    device and precision from :class:`~clipguard.config.InferenceConfig` (one
    default each, shared with the stream's ``model`` section). The checkpoint path
    is not part of it: the same configuration builds the base tower for training
    and, with a checkpoint, the served model.
    """

    num_classes: Literal[2] = Field(2, description="head outputs; class 0 = real, 1 = fake")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    max_batch_size: int = Field(32, ge=1, description="crops per forward pass; larger inputs are chunked")

    @classmethod
    def for_stream(cls, model: ModelConfig, max_batch_size: int) -> DetectorConfig:
        """The detector the stream's (and ``evaluate``'s) scorer builds from a ``model`` section."""
        shared = model.model_dump(include=set(InferenceConfig.model_fields))
        return cls(**shared, max_batch_size=max_batch_size)
