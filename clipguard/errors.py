"""One root exception and the typed errors that become `error` verdicts.

Every failure a video can meet has a stable, machine-readable ``kind`` (what a
trust-and-safety dashboard groups by) and a human message. Workers raise these;
the stream turns them into verdicts with ``status="error"`` instead of crashing.
"""

from __future__ import annotations


class ClipguardError(Exception):
    """Root of every error this project raises on purpose."""

    kind: str = "internal"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind

    def __reduce__(self):  # keep kind/message across Ray's pickling
        return (_rebuild_error, (type(self), self.message, self.kind))

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def _rebuild_error(cls: type[ClipguardError], message: str, kind: str) -> ClipguardError:
    return cls(message, kind=kind)


class ConfigError(ClipguardError):
    """The configuration cannot work (bad path, impossible combination)."""

    kind = "config"


# --- message / identity errors -------------------------------------------------
class MessageError(ClipguardError):
    """A Kafka value that cannot be turned into a video job."""

    kind = "bad_message"


class InvalidVideoIdError(ClipguardError):
    """The video ID is empty, too long, or would escape the video root."""

    kind = "invalid_id"


class DisallowedSourceError(ClipguardError):
    """The URI uses a scheme or host the configuration does not allow."""

    kind = "disallowed_source"


# --- decode errors ---------------------------------------------------------------
class DecodeError(ClipguardError):
    """Base of everything that can go wrong reading a video."""

    kind = "decode"


class VideoNotFoundError(DecodeError):
    kind = "not_found"


class NotAVideoError(DecodeError):
    kind = "not_a_video"


class NoVideoStreamError(DecodeError):
    kind = "no_video_stream"


class CorruptVideoError(DecodeError):
    kind = "corrupt"


class VideoTooLongError(DecodeError):
    kind = "too_long"


class VideoTooLargeError(DecodeError):
    kind = "too_large"


class DecodeTimeoutError(DecodeError):
    kind = "timeout"


# --- model / storage errors --------------------------------------------------------
class ModelError(ClipguardError):
    """The detector could not be built or could not score a batch."""

    kind = "model"


class CheckpointError(ModelError):
    """A checkpoint is missing, tampered, or does not match its base tower."""

    kind = "checkpoint"


class VerdictStoreError(ClipguardError):
    """Redis did not accept a verdict; the offset must not be committed."""

    kind = "verdict_store"


class InvalidOffsetError(ClipguardError):
    """An offset went backwards or was finished without being started."""

    kind = "invalid_offset"


class NonFiniteLossError(ModelError):
    """A loss term is NaN or infinite; the step must be skipped, not optimised."""

    kind = "non_finite_loss"


# --- stream errors that become verdicts ------------------------------------------------
class InternalError(ClipguardError):
    """A bug in a stage: the one error policy turns it into an `internal` verdict, logged with its trace."""

    kind = "internal"


class WorkerLostError(ClipguardError):
    """A stage actor died and its restarts and retries were used up."""

    kind = "worker_lost"


class ProcessKilledError(RuntimeError):
    """ffmpeg/ffprobe died from a signal we did not send: its worker going down, the OOM killer.

    Not something the video said, so never a verdict of its own (hence not a
    ClipguardError): the consumer retries it like a lost worker
    (``Stages.worker_errors``), and a consumer that is itself going down stores
    nothing; the message is redelivered.
    """
