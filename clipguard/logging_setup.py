"""One logging setup for the driver and every Ray actor (the ``log`` config section).

* Actors and Ray Train workers: the driver's ``ray.init`` gets :func:`ray_logging_args`
  (Ray's ``LoggingConfig`` in the job config), so Ray installs one formatter, TEXT or
  JSON, on the root logger of every task and actor of the job; each actor calls
  :func:`quiet_third_party` once in ``__init__``.
* The driver (CLI commands, ``training/train.py``): :func:`configure_logging`
  installs the same layout (the same keys in JSON) on stderr and, optionally, a file;
  Ray's own driver-side lines go through those handlers too.

Structured fields go in ``extra=``: ``log.info("...", extra={"video_id": ..., "stage":
..., "timings_s": {...}})``. In JSON they are keys of the record; in text they follow
the message as ``key=value``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import ray

from clipguard.config import LogConfig

# Chatty at INFO, useless to an operator there: kept at WARNING (DEBUG lets them through).
THIRD_PARTY = ("kafka", "urllib3", "filelock", "fsspec", "PIL", "matplotlib", "onnxruntime", "insightface",
               "open_clip", "timm", "huggingface_hub", "httpx")  # fmt: skip
_MARK = "_clipguard_handler"
# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` (the extra fields)."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={_compact(v)}" for k, v in extra_fields(record).items())
        return f"{line} {fields}" if fields else line


class JSONFormatter(logging.Formatter):
    """One JSON object per line, with the keys Ray's JSON encoding uses, plus the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
            "filename": record.filename,
            "lineno": record.lineno,
            "process": record.process,
        }
        if record.exc_info:
            doc["exc_text"] = self.formatException(record.exc_info)
        doc.update(extra_fields(record))
        return json.dumps(doc, default=str)


def _compact(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def _formatter(log: LogConfig) -> logging.Formatter:
    return JSONFormatter() if log.format == "json" else TextFormatter()


def quiet_third_party(level: str = "INFO") -> None:
    """Third-party loggers at WARNING unless ``level`` is DEBUG (driver and actors alike)."""
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(quiet)


def configure_logging(log: LogConfig, *, console_level: str | None = None) -> Path | None:
    """Set up this process's root logger: stderr at ``console_level`` (default ``log.level``), ``log.file`` if set.

    Safe to call again: the handlers of an earlier call are replaced.

    Returns:
        The log file, when one is written.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level or log.level)
    handlers: list[logging.Handler] = [console]
    if log.file is not None:
        log.file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log.file, encoding="utf-8"))
    for handler in handlers:
        setattr(handler, _MARK, True)
        handler.setFormatter(_formatter(log))
        root.addHandler(handler)
    root.setLevel(log.level)
    quiet_third_party(log.level)
    ray_logger = logging.getLogger("ray")  # Ray's own driver-side lines: through these handlers, once
    for handler in list(ray_logger.handlers):
        ray_logger.removeHandler(handler)
    ray_logger.propagate = True
    return log.file


def ray_logging_args(log: LogConfig) -> dict[str, Any]:
    """``ray.init`` arguments that give every worker of the job this format and level, and leave the driver's alone.

    Ray's ``LoggingConfig`` travels in the job config (so ``ray.init`` does not add a
    second handler to the driver's root logger); ``configure_logging=False`` keeps Ray
    from giving its own ``ray`` logger a handler, so Ray's driver-side lines go through
    :func:`configure_logging`'s handlers like every other line.
    """
    job_config = ray.job_config.JobConfig()
    job_config.set_py_logging_config(
        ray.LoggingConfig(encoding=log.format.upper(), log_level=log.level, additional_log_standard_attrs=["name"])
    )
    return {"job_config": job_config, "configure_logging": False, "log_to_driver": log.forward_actor_logs}
