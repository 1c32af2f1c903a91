"""The flags the training commands share, built from the config models (defaults never repeated).

Frame sampling, face detection and the video score (``--video-score-*``, the very flags and
defaults of the stream's ``video_score`` section) for ``prepare`` and for the sets ``evaluate``
prepares; the video score's pooling for ``evaluate``; the log format for all of them.
"""

from __future__ import annotations

import typing
from pathlib import Path

import click

from clipguard.config import (
    FacesConfig,
    LogConfig,
    SamplingConfig,
    SourceConfig,
    VideoScoreConfig,
    field_default,
)
from clipguard.logging_setup import configure_logging
from clipguard.model_files import MODEL_DIR_ENV


def literal_choices(model, name: str) -> click.Choice:
    return click.Choice(typing.get_args(model.model_fields[name].annotation))


def _video_score_option(name: str, **kwargs):
    """``--video-score-<name>``: the stream's own flag for a VideoScoreConfig field, its default and help."""
    field = VideoScoreConfig.model_fields[name]
    return click.option(f"--video-score-{name.replace('_', '-')}", f"video_score__{name}",
                        default=field_default(VideoScoreConfig, name), show_default=True, help=field.description,
                        **kwargs)  # fmt: skip


# Which crops a video gives: the video score's face policy (the stream's `video_score` flags).
_SELECTION_OPTIONS = (
    _video_score_option("face_policy", type=literal_choices(VideoScoreConfig, "face_policy")),
    _video_score_option("max_faces", type=click.IntRange(1)),
)
# How they are pooled into the video's score: `evaluate` and its calibration, as the stream does.
_POOLING_OPTIONS = (
    _video_score_option("pooling", type=literal_choices(VideoScoreConfig, "pooling")),
    _video_score_option("aggregation", type=literal_choices(VideoScoreConfig, "aggregation")),
    _video_score_option("min_track_crops", type=click.IntRange(1)),
)

# Frame sampling and face cropping of labelled videos: the same flags for `prepare` and for
# the video manifests `evaluate` prepares first.
_CROP_OPTIONS = (
    click.option(
        "--num-frames",
        default=field_default(SamplingConfig, "num_frames"),
        show_default=True,
        help="frames sampled per video (paper: 32)",
    ),  # fmt: skip
    *_SELECTION_OPTIONS,
    click.option(
        "--detector-path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=field_default(FacesConfig, "detector_path"),
        show_default=True,
        help="SCRFD ONNX model: a file name in the model directory, or a path",
    ),
    click.option(
        "--model-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        envvar=MODEL_DIR_ENV,
        help=f"folder of model files named by file name [default: ${MODEL_DIR_ENV}, then ./models]",
    ),
    click.option("--det-thresh", default=field_default(FacesConfig, "det_thresh"), show_default=True),
    click.option(
        "--max-side",
        default=field_default(SamplingConfig, "max_side"),
        show_default=True,
        help="decoded frames are downscaled to this side",
    ),  # fmt: skip
    click.option(
        "--decode-timeout",
        default=field_default(SourceConfig, "timeout_s"),
        show_default=True,
        help="seconds per video",
    ),  # fmt: skip
)


# The driver's and every actor's log format (the stream's `log` section, same variables).
_LOG_OPTIONS = (
    click.option("--log-format", type=literal_choices(LogConfig, "format"), default=field_default(LogConfig, "format"),
                 envvar="CLIPGUARD_LOG__FORMAT", show_default=True, help="log lines as text or JSON objects"),
    click.option("--log-level", type=literal_choices(LogConfig, "level"), default=field_default(LogConfig, "level"),
                 envvar="CLIPGUARD_LOG__LEVEL", show_default=True),
)  # fmt: skip


def log_options(command):
    """Add --log-format and --log-level to a click command."""
    for option in reversed(_LOG_OPTIONS):
        command = option(command)
    return command


def command_logging(opts: dict) -> LogConfig:
    """The log section from the flags :func:`log_options` adds, applied to this process (the driver)."""
    log = LogConfig(format=opts.pop("log_format"), level=opts.pop("log_level"))
    configure_logging(log)
    return log


def crop_options(command):
    """Add the frame-sampling and face-cropping flags to a click command."""
    for option in reversed(_CROP_OPTIONS):
        command = option(command)
    return command


def crop_configs(
    opts: dict, video_root: Path | None = None
) -> tuple[SourceConfig, SamplingConfig, FacesConfig, VideoScoreConfig]:
    """Source, sampling, face and video-score settings from the flags of :func:`crop_options`.

    The video score's pooling comes from :func:`pooling_options` where the command has them (``evaluate``),
    else from its defaults (``prepare`` records only which crops it made).
    """
    source = SourceConfig(timeout_s=opts["decode_timeout"])
    if video_root is not None:
        source = source.model_copy(update={"video_root": video_root})
    sampling = SamplingConfig(num_frames=opts["num_frames"], max_side=opts["max_side"])
    faces = FacesConfig(detector_path=opts["detector_path"], det_thresh=opts["det_thresh"])
    prefix = "video_score__"
    video_score = VideoScoreConfig(**{k.removeprefix(prefix): v for k, v in opts.items() if k.startswith(prefix)})
    return source, sampling, faces, video_score


def pooling_options(command):
    """Add the video score's pooling flags (the stream's ``--video-score-*``) to a click command."""
    for option in reversed(_POOLING_OPTIONS):
        command = option(command)
    return command
