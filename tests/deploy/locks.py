"""Read the hashed dependency locks in requirements/ (written by `uv pip compile --generate-hashes`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.kube import REPO_ROOT

LOCK_DIR = REPO_ROOT / "requirements"
LAYERS = ("runtime", "gpu", "demo", "dev")
DEV_MACHINE_LAYERS = ("runtime", "demo", "dev")  # what scripts/bootstrap.sh installs
_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


@dataclass(frozen=True)
class Pin:
    name: str  # normalised (PEP 503)
    version: str
    hashes: tuple[str, ...]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(text: str) -> dict[str, Pin]:
    """name -> Pin for every requirement of a hashed requirements text; comments dropped.

    Raises:
        ValueError: a requirement that is not ``name==version`` (a range, a URL, an option).
    """
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    pins: dict[str, Pin] = {}
    for entry in logical:
        requirement, *options = entry.split()
        match = _ENTRY.match(requirement)
        if not match:
            msg = f"not an exact pin: {entry[:80]!r}"
            raise ValueError(msg)
        hashes = tuple(o.removeprefix("--hash=") for o in options if o.startswith("--hash="))
        if len(hashes) != len(options):
            msg = f"unexpected option in {entry[:80]!r}"
            raise ValueError(msg)
        pins[normalise(match.group(1))] = Pin(normalise(match.group(1)), match.group(2), hashes)
    return pins


def lock(layer: str) -> dict[str, Pin]:
    return parse_requirements((LOCK_DIR / f"{layer}.lock").read_text())


def locked(*layers: str) -> dict[str, Pin]:
    out: dict[str, Pin] = {}
    for layer in layers:
        out.update(lock(layer))
    return out


def lock_path(layer: str) -> Path:
    return LOCK_DIR / f"{layer}.lock"
