"""The training configuration: one frozen pydantic model, loaded from one YAML file plus overrides.

Its sections share the stream's base (:class:`clipguard.config.Section`), and its
``model`` section is :class:`clipguard.config.TowerConfig` itself: the tower, weights
and init seed are defined once for training, serving and the detector.

Precedence (last wins): field defaults here < the YAML file given by ``--config``
< ``--set section.field=value`` overrides. There is no merging of several YAML
files and no inheritance between them: each preset file in ``training/configs/``
is complete and readable on its own. Every section forbids unknown keys, so a
misspelt key (``optim.lr_mx``) is an error, never a silently ignored setting.

Override values are parsed as YAML scalars or flow sequences, so
``--set optim.lr=1e-3``, ``--set augment.enabled=false`` and
``--set optim.betas=[0.9,0.98]`` all give typed values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from clipguard.config import Precision, Section, TowerConfig, validation_problems
from clipguard.errors import ConfigError
from training.losses import LossWeights, loss_weights

Preset = Literal["paper", "gend", "ce-only"]
SELECTION_METRIC = "val_video_map"  # checkpoints are kept and exported by this validation metric (docs/method.md §6)


class DataSection(Section):
    crops: Path = Field(Path("data/crops/crops.csv"), description="crop manifest written by `clipguard prepare`")
    train_split: str = "train"
    val_split: str = Field("val", description="checkpoints are selected on this split; never 'test'")
    batch_size: int = Field(128, ge=1, description="global batch (split evenly across workers)")
    eval_batch_size: int = Field(256, ge=1, description="crops per forward pass in validation, per worker")
    loader_workers: int = Field(4, ge=0, description="DataLoader processes per training worker")
    eval_train_every: int = Field(
        0, ge=0, description="also score the train split (no augmentation) every N epochs and at the last; 0 = never"
    )
    sampling: Literal["shuffle", "pairs"] = Field(
        "shuffle",
        description="shuffle: every train crop once an epoch; pairs (GenD): batches of (real, fake) crop pairs "
        "of one source video (the manifest's source_video), each fake crop once an epoch (training/pair_sampler.py)",
    )


class LossSection(Section):
    preset: Preset = Field("paper", description="loss weights and slerp (docs/method.md §3): paper | gend | ce-only")
    # None keeps the preset's value; a number replaces it (recorded as such in the checkpoint).
    ce: float | None = None
    unif: float | None = None
    align: float | None = None
    slerp: bool | None = None
    slerp_t: tuple[float, float] = Field((0.0, 1.0), description="t ~ U(t0, t1) of the slerp augmentation")

    def weights(self) -> LossWeights:
        """The preset's weights with this section's explicit overrides."""
        overrides = {k: v for k, v in (("ce", self.ce), ("unif", self.unif), ("align", self.align)) if v is not None}
        if self.slerp is not None:
            overrides["slerp"] = self.slerp
        return loss_weights(self.preset, **overrides)


class AugmentSection(Section):
    """Train augmentations on the 256 uint8 crop, before CLIP preprocessing (docs/method.md §7)."""

    enabled: bool = True
    hflip_p: float = Field(0.5, ge=0, le=1)
    rotate_deg: float = Field(10.0, ge=0)
    translate: float = Field(0.1, ge=0, le=1, description="max shift as a fraction of the side")
    scale: tuple[float, float] = (0.9, 1.1)
    blur_p: float = Field(0.5, ge=0, le=1, description="probability of the Gaussian blur (GenD: 0.1)")
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    brightness: float = Field(0.1, ge=0)
    contrast: float = Field(0.1, ge=0)
    jpeg_quality: tuple[int, int] = (40, 100)

    @model_validator(mode="after")
    def _ranges(self) -> AugmentSection:
        for name in ("scale", "blur_sigma", "jpeg_quality"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                msg = f"augment.{name} must be (low, high) with 0 < low <= high, got {(low, high)}"
                raise ValueError(msg)
        if self.jpeg_quality[1] > 100:
            msg = f"augment.jpeg_quality must be within [1, 100], got {self.jpeg_quality}"
            raise ValueError(msg)
        return self


class OptimSection(Section):
    epochs: int = Field(10, ge=1)
    # cosine: per step from lr down to lr_min over the run (reference example).
    # gend: linear warm-up warmup_lr -> lr for warmup_epochs, then cosine warm restarts
    #       every restart_epochs from lr down to lr_min (GenD).
    schedule: Literal["cosine", "gend"] = "cosine"
    lr: float = Field(8e-5, gt=0, description="peak learning rate")
    lr_min: float = Field(5e-5, ge=0)
    warmup_epochs: int = Field(1, ge=0)
    warmup_lr: float = Field(1e-5, ge=0)
    restart_epochs: int = Field(10, ge=1)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _order(self) -> OptimSection:
        if self.lr_min > self.lr:
            msg = f"optim.lr_min ({self.lr_min}) must not exceed optim.lr ({self.lr})"
            raise ValueError(msg)
        return self


class RunSection(Section):
    name: str = Field("clipguard-detector", pattern=r"^[A-Za-z0-9_.-]+$", description="Ray Train run name")
    storage_path: Path = Field(Path("runs"), description="local or shared folder for checkpoints and logs")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(1, ge=-1, description="worker-group restarts from the latest checkpoint")
    num_to_keep: int = Field(2, ge=1, description="checkpoints kept, ranked by val_video_map")
    seed: int = Field(0, description="seeds data order, augmentation and slerp draws (per epoch and rank)")
    precision: Precision = Field("auto", description="auto: bf16 autocast on CUDA, else fp32")
    frozen_weights: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="frozen tower weights cast once to bf16 (auto: when training under bf16 autocast)"
    )
    compile: Literal["off", "default", "max-autotune"] = Field(
        "off", description="torch.compile the tower once per worker at start (names and checkpoints unchanged)"
    )
    export_dir: Path | None = Field(None, description="best checkpoint export; None: <storage_path>/<name>/export")
    tensorboard: bool = Field(False, description="also write TensorBoard events (needs the tensorboard package)")

    @model_validator(mode="after")
    def _frozen_bf16_needs_bf16_autocast(self) -> RunSection:
        if self.frozen_weights == "bf16" and (
            self.precision == "fp32" or (self.precision == "auto" and not self.use_gpu)
        ):
            msg = (
                f"run.frozen_weights='bf16' needs bf16 autocast, and run.precision={self.precision!r} "
                f"with run.use_gpu={self.use_gpu} trains in fp32: set run.precision bf16 on a GPU run, "
                "or leave run.frozen_weights at auto"
            )
            raise ValueError(msg)
        return self


class FaultSection(Section):
    """Test-only fault injection: rank ``rank`` exits once at the start of ``epoch``."""

    rank: int | None = None
    epoch: int | None = None
    marker: Path | None = Field(None, description="created before the exit, so the crash happens once")

    @model_validator(mode="after")
    def _complete(self) -> FaultSection:
        values = (self.rank, self.epoch, self.marker)
        if any(v is not None for v in values) and any(v is None for v in values):
            msg = "fault.rank, fault.epoch and fault.marker must be set together"
            raise ValueError(msg)
        return self

    @property
    def enabled(self) -> bool:
        """True when a crash is configured."""
        return self.rank is not None


class TrainConfig(Section):
    model: TowerConfig = TowerConfig()
    data: DataSection = DataSection()
    loss: LossSection = LossSection()
    augment: AugmentSection = AugmentSection()
    optim: OptimSection = OptimSection()
    run: RunSection = RunSection()
    fault: FaultSection = FaultSection()

    @model_validator(mode="after")
    def _never_select_on_test(self) -> TrainConfig:
        if self.data.val_split.lower() == "test":
            msg = "data.val_split must not be 'test': checkpoints are never selected on a test split"
            raise ValueError(msg)
        if self.data.val_split == self.data.train_split:
            msg = f"data.val_split and data.train_split are both {self.data.val_split!r}"
            raise ValueError(msg)
        if self.data.batch_size < self.run.num_workers:
            msg = f"data.batch_size ({self.data.batch_size}) < run.num_workers ({self.run.num_workers})"
            raise ValueError(msg)
        if self.data.sampling == "pairs" and self.data.batch_size % (2 * self.run.num_workers):
            msg = (
                f"data.sampling=pairs needs data.batch_size ({self.data.batch_size}) to be a multiple of "
                f"2 x run.num_workers ({self.run.num_workers}): every worker's batch is whole (real, fake) pairs"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _sphere_needs_l2(self) -> TrainConfig:
        # Slerp interpolates on the unit sphere (docs/method.md §4): without the L2-normalised head the
        # head would see slerped unit vectors for some samples and raw features for others.
        if self.loss.weights().slerp and not self.model.l2_normalize:
            msg = (
                "loss.slerp needs model.l2_normalize=true (slerp moves points on the unit sphere): set loss.slerp=false"
            )
            raise ValueError(msg)
        return self

    @property
    def run_dir(self) -> Path:
        """Where Ray Train keeps this run: ``<storage_path>/<name>``."""
        return self.run.storage_path / self.run.name

    @property
    def export_dir(self) -> Path:
        """Where the best checkpoint is exported in the detector format."""
        return self.run.export_dir if self.run.export_dir is not None else self.run_dir / "export"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'optim.lr=1e-3'`` -> (['optim', 'lr'], 0.001); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        msg = f"override {text!r} is not of the form section.field=value"
        raise ConfigError(msg)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        msg = f"override {text!r}: value is not valid YAML: {exc}"
        raise ConfigError(msg) from exc
    # YAML 1.1 reads '1e-3' as a string; pydantic's lax mode turns it into the float the field wants.
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``section.field=value`` set (unknown keys fail at validation)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                msg = f"override {text!r}: {part!r} is a value, not a section"
                raise ConfigError(msg)
            node = child
        node[path[-1]] = value
    return out


def build_train_config(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """Validate a plain dict into a :class:`TrainConfig`; any error names the offending key."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        msg = f"{where}: {validation_problems(exc)}"
        raise ConfigError(msg) from exc


def load_train_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (or start from the defaults when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: unreadable file, not a mapping, unknown key, or invalid value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            msg = f"cannot read training config {path}: {exc}"
            raise ConfigError(msg) from exc
        if loaded is not None and not isinstance(loaded, dict):
            msg = f"{path}: a training config must be a YAML mapping of sections"
            raise ConfigError(msg)
        data = loaded or {}
    return build_train_config(apply_overrides(data, overrides), where=str(path or "defaults"))
