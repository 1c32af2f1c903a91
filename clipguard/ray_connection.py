"""One Ray connection per command: connect unless already connected, disconnect only what we connected."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray


@contextlib.contextmanager
def ray_connection(**init_kwargs: Any) -> Iterator[bool]:
    """``ray.init(**init_kwargs)`` unless this process is already connected; yields whether it connected.

    On exit, ``ray.shutdown()`` only a connection made here: for a cluster that disconnects
    this driver (its actors go), for a local instance it stops it. A caller that was already
    connected (a test, a notebook, an outer command) keeps its connection.
    """
    owns = not ray.is_initialized()
    if owns:
        ray.init(**init_kwargs)
    try:
        yield owns
    finally:
        if owns:
            ray.shutdown()
