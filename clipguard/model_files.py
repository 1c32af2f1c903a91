"""Where model files are found: the model directory.

Files the stream and training load (the SCRFD face detector; base CLIP weights and
checkpoints given by file name) may be named by a plain file name, found in the
model directory, or by a path. The model directory is, first to last:

1. ``model_dir`` in the configuration (flag ``--model-dir``), when set;
2. the environment variable ``CLIPGUARD_MODEL_DIR``;
3. ``./models`` (relative to the working directory).

Nothing defaults to a test asset: tests and the demo point ``CLIPGUARD_MODEL_DIR``
at the shared assets' ``models/`` folder explicitly. A missing file is a
:class:`~clipguard.errors.ConfigError` naming the file, the setting that named it
and every place looked in.
"""

from __future__ import annotations

import os
from pathlib import Path

from clipguard.errors import ConfigError

MODEL_DIR_ENV = "CLIPGUARD_MODEL_DIR"
DEFAULT_MODEL_DIR = Path("models")
SCRFD_DEFAULT = "scrfd_2.5g_kps.onnx"  # the SCRFD file name looked for when faces.detector_path is not set


def model_dir(configured: Path | None = None) -> Path:
    """The model directory: ``configured``, else ``$CLIPGUARD_MODEL_DIR``, else ``./models``."""
    if configured is not None:
        return configured
    from_env = os.environ.get(MODEL_DIR_ENV)
    return Path(from_env) if from_env else DEFAULT_MODEL_DIR


def candidates(name: str | Path, configured_dir: Path | None = None) -> list[Path]:
    """Where a model file named ``name`` is looked for, in order."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return [path]
    return [model_dir(configured_dir) / path, Path.cwd() / path]


def find_model_file(name: str | Path, *, what: str, setting: str, configured_dir: Path | None = None) -> Path:
    """The absolute path of an existing model file.

    Args:
        name: an absolute path, or a path relative to the model directory (or, failing
            that, to the working directory).
        what: what the file is, for the error ("SCRFD face detector").
        setting: the configuration key that named it, for the error ("faces.detector_path").
        configured_dir: the configured ``model_dir`` (None: environment, then ``./models``).

    Raises:
        ConfigError: no such file in any place looked in; the message lists them.
    """
    looked = candidates(name, configured_dir)
    for path in looked:
        if path.is_file():
            return path.absolute()
    where = ", ".join(str(p) for p in looked)
    directory = model_dir(configured_dir)
    msg = (
        f"{what} model file {str(name)!r} ({setting}) not found; looked in: {where}. Put it in the model "
        f"directory ({directory}: --model-dir / ${MODEL_DIR_ENV} / ./models) or set {setting} to its path"
    )
    raise ConfigError(msg)


WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt")


def names_a_file(pretrained: str) -> bool:
    """True when ``model.pretrained`` names a weights file (not a tag such as 'openai', nor 'none')."""
    return pretrained.endswith(WEIGHT_SUFFIXES) or "/" in pretrained


def find_checkpoint(checkpoint: Path, configured_dir: Path | None = None) -> Path:
    """A relative checkpoint (``<name>``, ``<name>.safetensors`` or its manifest) in the model directory or here.

    Returns the first place whose weights or manifest exists, made absolute; when none
    does, the working-directory path (the loader then names the missing file).
    """
    if checkpoint.is_absolute():
        return checkpoint
    for path in candidates(checkpoint, configured_dir):
        if any(Path(f"{path}{suffix}").is_file() for suffix in ("", ".safetensors", ".manifest.json")):
            return path.absolute()
    return checkpoint.absolute()
