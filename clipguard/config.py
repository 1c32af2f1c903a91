"""Typed configuration for the stream, in one place.

Precedence (last wins): defaults here < environment ``CLIPGUARD_<SECTION>__<FIELD>``
< CLI flags ``--<section>-<field>`` (generated from these models by
``pipeline/cli_options.py``). Defaults serve the embedded mode: ``kafka.bootstrap``
and ``redis.url`` set to ``embedded`` start a loopback broker and Redis.

Every model is frozen with ``extra="forbid"``, so a misspelt key is an error,
never a silently ignored setting. Validation errors never echo input values
(``hide_input_in_errors``): a misspelt ``CLIPGUARD_REDIS__PASWORD`` must not print
the password into the logs. :class:`Section` is the one base of every
configuration model in the project: the stream's sections here, the training
config (``training/train_config.py``) and the detector's (``clipguard/model/config.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clipguard.model_files import MODEL_DIR_ENV, SCRFD_DEFAULT, find_checkpoint, find_model_file, names_a_file

EMBEDDED = "embedded"


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
    policy: Literal["all", "largest"] = Field("all", description="largest = paper protocol; all = moderation")
    max_faces_per_frame: int = Field(32, ge=1)
    crop_size: int = Field(256, ge=32)
    margin_scale: float = Field(1.3, ge=1.0)
    track_iou: float = Field(0.3, gt=0, lt=1, description="min box IoU to link a face to a track")


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


class InferenceConfig(TowerConfig):
    """Where and how the detector runs."""

    device: Device = Field("auto", description="auto: CUDA if present; 'cuda' without CUDA is an error")
    precision: Precision = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU; bf16 on CPU is refused")


class ModelConfig(InferenceConfig):
    checkpoint: Path | None = Field(None, description="LN-tuned checkpoint (.safetensors + manifest)")
    aggregation: Literal["mean", "median"] = "mean"


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
    model: ModelConfig = ModelConfig()
    stream: StreamConfig = StreamConfig()
    autoscale: AutoscaleConfig = AutoscaleConfig()
    thresholds: ThresholdConfig = ThresholdConfig()
    log: LogConfig = LogConfig()

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

        Resolved on the driver, so actors on any node get paths, not names (the model
        directory is the same mount on every node of a cluster).

        Raises:
            ConfigError: the SCRFD model, or base weights named by file, cannot be found.
        """
        faces = self.faces.model_copy(update={"detector_path": find_model_file(
            self.faces.detector_path, what="SCRFD face detector", setting="faces.detector_path",
            configured_dir=self.model_dir)})  # fmt: skip
        model = self.model
        if names_a_file(model.pretrained):
            found = find_model_file(model.pretrained, what="base CLIP weights", setting="model.pretrained",
                                    configured_dir=self.model_dir)  # fmt: skip
            model = model.model_copy(update={"pretrained": str(found)})
        if model.checkpoint is not None:
            model = model.model_copy(update={"checkpoint": find_checkpoint(model.checkpoint, self.model_dir)})
        return self.model_copy(update={"faces": faces, "model": model})
