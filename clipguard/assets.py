"""Where the shared, never-committed test and benchmark assets live (real photos, an SCRFD model).

``$CLIPGUARD_ASSETS`` if set, else ``<repo root>/../shared/assets``. Tests, benchmarks
and ``make demo`` use it; no product default points here (model files are found through
the model directory, :mod:`clipguard.model_files`). A missing asset is an error that
names the path looked at, never a silent skip.
"""

from __future__ import annotations

import os
from pathlib import Path

from clipguard.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def assets_dir() -> Path:
    """The assets folder (not checked for existence)."""
    override = os.environ.get("CLIPGUARD_ASSETS")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "assets"


def asset_path(relative: str) -> Path:
    """Path of one asset, e.g. ``faces/newton.png``; raises if it is missing."""
    path = assets_dir() / relative
    if not path.is_file():
        msg = f"asset {relative!r} not found at {path} (set CLIPGUARD_ASSETS to the assets folder)"
        raise ConfigError(msg)
    return path
