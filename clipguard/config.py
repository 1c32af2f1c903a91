"""Typed configuration for the stream, in one place.

Precedence (last wins): defaults here < files in ``$CLIPGUARD_SECRETS_DIR`` named like
the environment variables < environment ``CLIPGUARD_<SECTION>__<FIELD>`` < CLI flags
``--<section>-<field>`` (generated from these models by ``pipeline/cli_options.py``).
Secrets (``SecretStr`` fields: ``kafka.sasl_password``, ``redis.password``) have no flag:
they come from the environment or from a file in the secrets directory (a Kubernetes
Secret mounted as files, a Docker secret). Defaults serve the embedded mode:
``kafka.bootstrap`` and ``redis.url`` set to ``embedded`` start a loopback broker and
Redis; with ``ray.address`` set (a cluster) that default is refused, and ``embedded``
must be named (:meth:`ClipguardConfig.embedded_by_default`).

Every model is frozen with ``extra="forbid"``, so a misspelt key is an error,
never a silently ignored setting. Validation errors never echo input values
(``hide_input_in_errors``): a misspelt ``CLIPGUARD_REDIS__PASWORD`` must not print
the password into the logs. :class:`Section` is the one base of every
configuration model in the project: the stream's sections here, the training
config (``training/train_config.py``) and the detector's (``clipguard/model/config.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, NestedSecretsSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from clipguard.errors import ConfigError
from clipguard.model.manifest import model_identity, read_manifest
from clipguard.model_files import MODEL_DIR_ENV, SCRFD_DEFAULT, find_checkpoint, find_model_file, names_a_file

EMBEDDED = "embedded"
# A folder of files named like the environment variables (CLIPGUARD_REDIS__PASSWORD...), each holding
# one value: how a Kubernetes Secret mounted as a volume, or a Docker secret, hands over credentials.
SECRETS_DIR_ENV = "CLIPGUARD_SECRETS_DIR"


def secrets_dir() -> Path | None:
    """The secrets directory, ``$CLIPGUARD_SECRETS_DIR`` (None when unset).

    Raises:
        ConfigError: the variable names something that is not a directory (a mount that is missing).
    """
    raw = os.environ.get(SECRETS_DIR_ENV)
    if not raw:
        return None
    path = Path(raw)
    if not path.is_dir():
        msg = f"{SECRETS_DIR_ENV}={raw} is not a directory (is the secret volume mounted?)"
        raise ConfigError(msg)
    return path


class Section(BaseModel):
    """Base of every configuration model: frozen, unknown keys refused, inputs never echoed in errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


def validation_problems(exc: ValidationError) -> str:
    """One line per problem, ``section.field: message``, without the input values."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors())


def field_default(model: type[BaseModel], name: str) -> Any:
    """A field's default as its model declares it: command-line flags show it instead of repeating it."""
    return model.model_fields[name].get_default(call_default_factory=True)


Device = Literal["auto", "cpu", "cuda"]
Tuning = Literal["ln", "linear-probe", "full"]
Precision = Literal["auto", "fp32", "bf16"]


class KafkaConfig(Section):
    bootstrap: str = Field(EMBEDDED, description="host:port[,host:port] or 'embedded' (start a loopback broker)")
    topic: str = Field("clipguard.videos", description="topic carrying video IDs / JSON jobs")
    group_id: str = Field("clipguard", description="consumer group of the decoders")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # A new group's first join on the embedded broker waits ~session_timeout/2.
    session_timeout_ms: int = Field(6000, ge=1000)
    heartbeat_interval_ms: int = Field(1000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    max_message_bytes: int = Field(64 * 1024, ge=1024, description="larger values become error verdicts")
    poll_timeout_ms: int = Field(200, ge=10)
    partitions: int = Field(4, ge=1, description="partitions when the topic is created by us")


class RedisConfig(Section):
    url: str = Field(EMBEDDED, description="redis:// or rediss:// URL, or 'embedded'")
    password: SecretStr | None = Field(None, description="overrides the URL's password; never logged")
    ssl_ca_certs: Path | None = None
    key_prefix: str = Field("clipguard", pattern=r"^[A-Za-z0-9_.-]+$")
    stream_maxlen: int = Field(100_000, ge=100, description="approximate cap of the verdict event stream")
    verdict_ttl_s: int | None = Field(None, ge=60, description="expire verdict hashes after this long; None keeps them")
    dead_letter_dedupe_s: int = Field(
        7 * 24 * 3600, ge=60, description="a redelivered bad message is dead-lettered once within this window"
    )
    retry_initial_s: float = Field(0.2, gt=0)
    retry_max_s: float = Field(5.0, gt=0)


class RayConfig(Section):
    address: str | None = Field(None, description="Ray address ('auto', ray://...); None starts a local Ray")
    namespace: str = "clipguard"
    num_cpus: int | None = Field(None, description="CPUs for a local Ray (None: all)")


class SourceConfig(Section):
    video_root: Path = Field(Path("videos"), description="plain IDs are paths under this folder")
    allowed_schemes: tuple[str, ...] = ("file", "http", "https", "s3")
    allow_private_hosts: bool = Field(False, description="allow URLs that resolve to loopback/private addresses")
    max_duration_s: float = Field(4 * 3600.0, gt=0)
    max_pixels: int = Field(8192 * 8192, gt=0, description="width*height above this is refused")
    max_file_bytes: int = Field(20 * 1024**3, gt=0)
    timeout_s: float = Field(120.0, gt=0, description="wall-clock limit of one ffmpeg/ffprobe call")


class SamplingConfig(Section):
    mode: Literal["uniform", "fps"] = Field("uniform", description="uniform: linspace over frames (paper); fps: stride")
    num_frames: int = Field(32, ge=1, le=1024)
    fps: float = Field(1.0, gt=0, description="frames per second in fps mode (capped by num_frames)")
    max_side: int = Field(1280, ge=64, description="frames are downscaled so the longer side is at most this")
    # Added for workers/frame_decoder.py: below this, one pass with a select filter
    # (exact frame indices, VFR-safe); above it, one seek per sampled frame.
    select_max_frames: int = Field(
        3000, ge=1, description="videos with at most this many frames are decoded in one select pass; longer ones seek"
    )


class FacesConfig(Section):
    detector_path: Path = Field(
        Path(SCRFD_DEFAULT),
        description="SCRFD ONNX model with 5 keypoints: a file name in the model directory, or a path",
    )
    input_size: int = Field(640, ge=128)
    det_thresh: float = Field(0.5, gt=0, lt=1)
    nms_thresh: float = Field(0.4, gt=0, lt=1)
    crop_size: int = Field(256, ge=32)
    margin_scale: float = Field(1.3, ge=1.0)
    track_iou: float = Field(0.3, gt=0, lt=1, description="min box IoU to link a face to a track")


class VideoScoreConfig(Section):
    """How a video's score is made from its faces: one definition for prepare, evaluate, calibration and the stream.

    ``face_policy`` picks the crops (per sampled frame: the largest face, docs/method.md §5, or every face up to
    ``max_faces``); ``pooling`` turns their p_fake into the video's (docs/method.md §6): ``crops`` aggregates
    every crop of the video (the paper's protocol, with ``largest``); ``tracks`` aggregates each face track and
    takes the most suspicious track among those with at least ``min_track_crops`` crops (the longest tracks
    when none has that many). Thresholds calibrated under one definition are refused under another.
    """

    face_policy: Literal["all", "largest"] = Field("all", description="faces scored per frame: all (up to "
                                                   "max_faces) or the largest (paper protocol)")  # fmt: skip
    max_faces: int = Field(32, ge=1, description="faces kept per frame with face_policy=all (highest detector scores)")
    pooling: Literal["tracks", "crops"] = Field("tracks", description="tracks: the most suspicious face track; "
                                                "crops: all crops together (paper protocol)")  # fmt: skip
    aggregation: Literal["mean", "median"] = Field("mean", description="crop p_fake -> track/video score")
    min_track_crops: int = Field(2, ge=1, description="pooling=tracks: shorter tracks (detector flickers) count "
                                 "only when no track is this long")  # fmt: skip

    @classmethod
    def paper(cls) -> VideoScoreConfig:
        """The paper's protocol: the largest face of each frame, the mean of all its crops."""
        return cls(face_policy="largest", pooling="crops")

    def crop_selection(self, sampling: SamplingConfig) -> dict[str, Any]:
        """Which crops a video gives (frames sampled, faces kept): what ``prepare`` records beside its crops."""
        return {
            "face_policy": self.face_policy,
            "max_faces": self.max_faces if self.face_policy == "all" else 1,
            "sampling_mode": sampling.mode,
            "num_frames": sampling.num_frames,
            "fps": sampling.fps if sampling.mode == "fps" else None,
        }

    def definition(self, sampling: SamplingConfig) -> dict[str, Any]:
        """The whole definition (crops + pooling), as thresholds files record it; unused fields are None."""
        return {
            **self.crop_selection(sampling),
            "pooling": self.pooling,
            "aggregation": self.aggregation,
            "min_track_crops": self.min_track_crops if self.pooling == "tracks" else None,
        }


def describe_video_score(definition: dict[str, Any]) -> str:
    """One line describing a definition, for logs, verdicts and tables.

    E.g. ``all faces (max 32), most suspicious track (mean, >=2 crops), 32 frames``.
    """
    d = definition
    faces = "largest face" if d["face_policy"] == "largest" else f"all faces (max {d['max_faces']})"
    if d["pooling"] == "crops":
        pooled = f"{d['aggregation']} of all crops"
    else:
        pooled = f"most suspicious track ({d['aggregation']}, >={d['min_track_crops']} crops)"
    frames = f"{d['num_frames']} frames" + (f" at {d['fps']:g} fps" if d.get("fps") is not None else "")
    return f"{faces}, {pooled}, {frames}"


def video_score_differences(made_for: dict[str, Any], used: dict[str, Any]) -> list[str]:
    """``key: made-for value != used value`` for every field where two definitions differ (both directions)."""
    keys = sorted(set(made_for) | set(used))
    return [f"{k}: {made_for.get(k)!r} != {used.get(k)!r}" for k in keys if made_for.get(k) != used.get(k)]


class TowerConfig(Section):
    """Which CLIP tower, which base weights, which head init: shared by serving, training and the detector."""

    arch: str = Field("ViT-L-14", min_length=1, description="open_clip ViT config name")
    pretrained: str = Field(
        "openai", min_length=1, description="'openai' (an open_clip tag), a local full-CLIP weights file, or 'none'"
    )
    quick_gelu: bool = Field(True, description="OpenAI CLIP weights need QuickGELU; a tag that disagrees is refused")
    # Every randomly initialised tensor (the head; the whole tower with pretrained='none') is drawn from
    # this seed, so every actor, restart and process builds the same model and a checkpoint only loads
    # onto the base it was trained on.
    init_seed: int = Field(0, description="seed of the random init (head; tower with pretrained='none')")
    # The ablation switches of docs/method.md §8. A checkpoint records both; loading refuses another value,
    # and a checkpoint given without them explicitly supplies its own (see with_checkpoint_identity).
    tuning: Tuning = Field(
        "ln",
        description="what trains: ln = the tower's LayerNorms + head (the method); linear-probe = the head only "
        "(frozen CLIP); full = every weight (full fine-tuning; its checkpoint stores the whole tower)",
    )
    l2_normalize: bool = Field(True, description="the head sees f/||f|| (the method); false: the raw CLS feature")


class InferenceConfig(TowerConfig):
    """Where and how the detector runs."""

    device: Device = Field("auto", description="auto: CUDA if present; 'cuda' without CUDA is an error")
    precision: Precision = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU; bf16 on CPU is refused")


# What a checkpoint fixes: given explicitly with other values, the checkpoint is refused before anything loads.
# model.pretrained and model.init_seed given explicitly win (the same base weights may live in a local file);
# loading then checks the base tower's fingerprint.
_FIXED_BY_CHECKPOINT = ("arch", "quick_gelu", "tuning", "l2_normalize")


class ModelConfig(InferenceConfig):
    checkpoint: Path | None = Field(
        None, description="trained checkpoint (.safetensors + manifest); its manifest supplies arch, base weights, "
        "tuning and l2_normalize unless they are given"
    )  # fmt: skip
    # CUDA serving only (clipguard/model/device_scorer.py); the CPU path stays the plain fp32 scorer.
    batch_buckets: tuple[int, ...] = Field(
        (16, 64, 128, 256), min_length=1, description="CUDA: fixed detector batch sizes; partial batches are padded"
    )
    compile_mode: Literal["none", "default", "reduce-overhead", "max-autotune"] = Field(
        "reduce-overhead", description="CUDA: torch.compile mode of the detector (reduce-overhead adds CUDA graphs)"
    )

    @model_validator(mode="after")
    def _positive_buckets(self) -> ModelConfig:
        if min(self.batch_buckets) < 1:
            msg = f"batch_buckets must be positive, got {self.batch_buckets}"
            raise ValueError(msg)
        return self

    def with_checkpoint_identity(self) -> ModelConfig:
        """This section with the tower fields its checkpoint's manifest fixes, where they were not given.

        Fields given explicitly (flag, environment, constructor) are kept; ``arch``,
        ``quick_gelu``, ``tuning`` or ``l2_normalize`` given with a value other than the
        checkpoint's is an error here, before any weights are built or downloaded.
        Without a checkpoint, the section itself.

        Raises:
            CheckpointError: the manifest is missing or unreadable.
            ConfigError: an explicit setting contradicts the checkpoint.
        """
        if self.checkpoint is None:
            return self
        manifest = read_manifest(self.checkpoint)
        identity = model_identity(manifest)
        given = self.model_fields_set
        conflicts = [f"model.{k}={getattr(self, k)!r} (the checkpoint's: {identity[k]!r})"
                     for k in _FIXED_BY_CHECKPOINT if k in given and getattr(self, k) != identity[k]]  # fmt: skip
        if conflicts:
            msg = (
                f"checkpoint {self.checkpoint} was made with other settings than given: {'; '.join(conflicts)}. "
                "Leave them unset to use the checkpoint's"
            )
            raise ConfigError(msg)
        values = {**{k: v for k, v in identity.items() if k not in given}, **{k: getattr(self, k) for k in given}}
        try:
            return type(self)(**values)
        except ValidationError as exc:
            msg = (
                f"checkpoint {self.checkpoint}: its manifest gives an invalid model section: {validation_problems(exc)}"
            )
            raise ConfigError(msg) from exc

    def with_model_files(self, model_dir: Path | None = None) -> ModelConfig:
        """The checkpoint found (model directory, then working directory), its identity applied, base weights found.

        Raises:
            CheckpointError: the checkpoint's manifest is missing or unreadable.
            ConfigError: base weights named by file cannot be found, or a setting contradicts the checkpoint.
        """
        model = self
        if model.checkpoint is not None:
            model = model.model_copy(update={"checkpoint": find_checkpoint(model.checkpoint, model_dir)})
            model = model.with_checkpoint_identity()
        if names_a_file(model.pretrained):
            found = find_model_file(model.pretrained, what="base CLIP weights", setting="model.pretrained",
                                    configured_dir=model_dir)  # fmt: skip
            model = model.model_copy(update={"pretrained": str(found)})
        return model


class StreamConfig(Section):
    decoders: int = Field(1, ge=1)
    face_workers: int = Field(1, ge=1)
    detectors: int = Field(1, ge=1)
    detector_num_gpus: float = Field(0.0, ge=0, description="GPUs per detector actor (0 = CPU)")
    detector_num_cpus: float = Field(1.0, gt=0)
    decoder_num_cpus: float = Field(0.5, gt=0, description="ffmpeg runs as a child process of the decoder")
    face_num_cpus: float = Field(1.0, gt=0)
    decode_concurrency: int = Field(2, ge=1, description="ffmpeg processes at once per decoder")
    drain_timeout_s: float = Field(60.0, ge=0, description="on shutdown, wait this long for in-flight videos")
    batch_size: int = Field(32, ge=1, description="max crops per detector batch")
    batch_wait_ms: int = Field(50, ge=0, description="max wait to fill a batch")
    max_in_flight: int = Field(8, ge=1, description="videos in flight (backpressure bound)")
    max_restarts: int = Field(3, ge=0, description="Ray actor restarts before a video errors")
    actor_unresponsive_s: float = Field(
        60.0, gt=0, description="a face/detector actor that answers no probe this long (node lost) is replaced"
    )
    video_timeout_s: float = Field(600.0, gt=0, description="a video still unfinished after this errors out")


class GpuNodeConfig(Section):
    """The fused GPU stage (workers/gpu_stage_actor.py): decode, faces, alignment and the detector on one device.

    With ``actors`` > 0 the stream runs these actors, fed by the Kafka consumers,
    instead of separate face and detector actors: a video's frames cross to the
    GPU once (NVDEC decodes straight into GPU memory) and only boxes and scores
    come back. ``auto`` devices resolve at actor start and say so in the log once,
    with the reason when a GPU-node capability (CUDA, NVDEC) is missing.
    """

    actors: int = Field(0, ge=0, description="fused GPU actors; 0 = decoder -> face -> detector actors")
    num_gpus: float = Field(1.0, ge=0, description="GPUs per fused actor (0 only for CPU test clusters)")
    num_cpus: float = Field(4.0, gt=0, description="CPUs per fused actor (its decode threads and Python)")
    decode_device: Device = Field("auto", description="cuda = NVDEC (PyNvVideoCodec); cpu = ffmpeg + one upload")
    faces_device: Device = Field("auto", description="where SCRFD (torch), NMS and the alignment warp run")
    decode_workers: int = Field(4, ge=1, description="videos decoded at once per fused actor (decode threads)")
    face_batch: int = Field(64, ge=1, description="frames per SCRFD forward pass")


class AutoscaleConfig(Section):
    """Pool sizes follow Kafka lag, arrivals and stage queues between these bounds (pipeline/autoscaler.py).

    On by default: each pool starts at its ``stream`` count, which must lie within its
    ``[min, max]``, and moves within them. Decoders are the Kafka consumers: their
    maximum is also capped, at run time, by the topic's partition count. Growing past
    what the Ray cluster holds leaves the new actors pending (no work goes to them) and,
    on an autoscaling cluster, makes Ray add a node; a pool waits for its pending actors
    before it grows again. Cooldowns and the interval are here so tests can run fast.
    """

    enabled: bool = Field(True, description="resize pools with lag/arrivals/queue depth (false: fixed stream counts)")
    interval_s: float = Field(10.0, gt=0, description="seconds between decisions")
    decoders_min: int = Field(1, ge=1, description="fewest decoders (Kafka consumers)")
    decoders_max: int = Field(8, ge=1, description="most decoders; also capped by the topic's partitions")
    face_workers_min: int = Field(1, ge=1, description="fewest face actors")
    face_workers_max: int = Field(8, ge=1, description="most face actors")
    detectors_min: int = Field(1, ge=1, description="fewest detector actors")
    detectors_max: int = Field(4, ge=1, description="most detector actors (one GPU each on a GPU cluster)")
    target_drain_s: float = Field(120.0, gt=0, description="grow when the backlog would take longer than this")
    scale_up_cooldown_s: float = Field(30.0, ge=0, description="least time between changes before growing")
    scale_down_cooldown_s: float = Field(300.0, ge=0, description="least time after any change before shrinking")
    max_step_up: int = Field(4, ge=1, description="actors added to a pool per decision at most")
    max_step_down: int = Field(1, ge=1, description="actors removed from a pool per decision at most")

    @model_validator(mode="after")
    def _ordered(self) -> AutoscaleConfig:
        for stage in ("decoders", "face_workers", "detectors"):
            lo, hi = getattr(self, f"{stage}_min"), getattr(self, f"{stage}_max")
            if lo > hi:
                msg = f"autoscale.{stage}_min ({lo}) must not exceed autoscale.{stage}_max ({hi})"
                raise ValueError(msg)
        return self


class LogConfig(Section):
    """One logging setup for the driver and every actor (clipguard/logging_setup.py)."""

    format: Literal["text", "json"] = Field("text", description="log lines as text or as JSON objects")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: Path | None = Field(None, description="also write the driver's log lines to this file")
    forward_actor_logs: bool = Field(True, description="print actors' log lines on the driver's stderr too")


class ThresholdConfig(Section):
    fake: float = Field(0.6, ge=0, le=1, description="p_fake >= this -> 'fake'")
    real: float = Field(0.4, ge=0, le=1, description="p_fake <= this -> 'real'; between -> 'uncertain'")
    file: Path | None = Field(
        None,
        description="calibrated thresholds JSON from `clipguard evaluate --calibrate`; unset: "
        "<checkpoint>.thresholds.json beside model.checkpoint if it exists. fake/real given explicitly win",
    )
    file_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 the thresholds file must have (checked when set); the stream fills it in from the "
        "file it reads, and every verdict records it",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdConfig:
        if self.real > self.fake:
            msg = f"thresholds.real ({self.real}) must not exceed thresholds.fake ({self.fake})"
            raise ValueError(msg)
        return self


class ClipguardConfig(BaseSettings):
    """Everything `clipguard run` needs; see module docstring for precedence."""

    model_config = SettingsConfigDict(
        env_prefix="CLIPGUARD_", env_nested_delimiter="__", frozen=True, extra="forbid", hide_input_in_errors=True
    )

    model_dir: Path | None = Field(
        None, description=f"folder of model files named by file name (unset: ${MODEL_DIR_ENV}, then ./models)"
    )
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    ray: RayConfig = RayConfig()
    source: SourceConfig = SourceConfig()
    sampling: SamplingConfig = SamplingConfig()
    faces: FacesConfig = FacesConfig()
    video_score: VideoScoreConfig = VideoScoreConfig()
    model: ModelConfig = ModelConfig()
    stream: StreamConfig = StreamConfig()
    gpu_node: GpuNodeConfig = GpuNodeConfig()
    autoscale: AutoscaleConfig = AutoscaleConfig()
    thresholds: ThresholdConfig = ThresholdConfig()
    log: LogConfig = LogConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init) > environment > files in ``$CLIPGUARD_SECRETS_DIR`` (nested names, ``__``); no dotenv."""
        directory = secrets_dir()
        if directory is None:
            return init_settings, env_settings
        files = NestedSecretsSettingsSource(file_secret_settings, secrets_dir=directory, secrets_dir_missing="error")
        return init_settings, env_settings, files

    def embedded_by_default(self) -> list[str]:
        """The service settings that are ``embedded`` only because nobody set them (``kafka.bootstrap``, ``redis.url``).

        Set by name (a flag, an environment variable or a file), ``embedded`` is a choice; left
        at its default it is refused where it would surprise: a stream joining a Ray cluster
        (``ray.address``) would quietly start a loopback broker and Redis on one of its nodes.
        """
        implicit = []
        if self.kafka.bootstrap == EMBEDDED and "bootstrap" not in self.kafka.model_fields_set:
            implicit.append("kafka.bootstrap")
        if self.redis.url == EMBEDDED and "url" not in self.redis.model_fields_set:
            implicit.append("redis.url")
        return implicit

    @model_validator(mode="after")
    def _gpu_stage_pool_is_fixed(self) -> ClipguardConfig:
        if self.gpu_node.actors and self.autoscale.enabled:
            msg = (
                "autoscale.enabled with gpu_node.actors > 0: the autoscaler sizes face and detector pools, "
                "which a GPU node does not have; size the GPU stage with gpu_node.actors and set "
                "autoscale.enabled=false"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _pools_within_bounds(self) -> ClipguardConfig:
        """With autoscaling on, each pool's starting size must lie within its bounds (never silently moved)."""
        if not self.autoscale.enabled:
            return self
        for stage in ("decoders", "face_workers", "detectors"):
            n = getattr(self.stream, stage)
            lo, hi = getattr(self.autoscale, f"{stage}_min"), getattr(self.autoscale, f"{stage}_max")
            if not lo <= n <= hi:
                msg = (f"stream.{stage} ({n}) lies outside autoscale.{stage}_min/_max [{lo}, {hi}]: change one, "
                       "or set autoscale.enabled=false for fixed pools")  # fmt: skip
                raise ValueError(msg)
        return self

    def with_model_files(self) -> ClipguardConfig:
        """This config with its model files found (model directory, then working directory) as absolute paths.

        The checkpoint's manifest supplies the model fields not given (:meth:`ModelConfig.with_checkpoint_identity`).

        Resolved on the driver, so actors on any node get paths, not names (the model
        directory is the same mount on every node of a cluster).

        Raises:
            ConfigError: the SCRFD model, or base weights named by file, cannot be found.
            CheckpointError: the checkpoint's manifest is missing or unreadable.
        """
        faces = self.faces.model_copy(update={"detector_path": find_model_file(
            self.faces.detector_path, what="SCRFD face detector", setting="faces.detector_path",
            configured_dir=self.model_dir)})  # fmt: skip
        return self.model_copy(update={"faces": faces, "model": self.model.with_model_files(self.model_dir)})
