"""Run ffmpeg/ffprobe with a wall-clock limit and a clean kill.

Both tools are started in their own session (process group) so that on
expiry the whole group is killed: a stuck network read, a child of a wrapper
script or a blocked pipe cannot outlive the limit. stdout and stderr are
captured in full (bounded by the limit) and the last stderr lines go into
error messages.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass

from clipguard.errors import ConfigError, DecodeTimeoutError, ProcessKilledError

# showinfo logs one line per selected frame; those say nothing about a failure.
_NOISE_MARKERS = ("Parsed_showinfo",)
# ffmpeg prefixes lines with the logging context's address ("[mov,mp4,... @ 0x55d4...]"): it differs on
# every run, and a message that differs makes a redelivered video's error verdict look new.
_CONTEXT_ADDRESS = re.compile(r" @ 0x[0-9a-fA-F]+(?=\])")


@dataclass(frozen=True)
class ProcessResult:
    """What a finished ffmpeg/ffprobe call left behind."""

    returncode: int
    stdout: bytes
    stderr: str
    elapsed_s: float


def run_with_timeout(args: list[str], *, timeout_s: float, video_id: str, what: str) -> ProcessResult:
    """Run ``args``, killing its process group if it runs past ``timeout_s``.

    A nonzero exit status is returned, not raised: the caller knows how to
    classify the failure (not found, not a video, corrupt...). Death by a signal
    is raised: it says nothing about the video.

    Args:
        args: The full command line, program first.
        timeout_s: Wall-clock limit in seconds.
        video_id: For error messages.
        what: Short label of the call (``"ffprobe"``, ``"decode"``) for messages.

    Returns:
        The exit status, stdout bytes, decoded stderr text and elapsed time.

    Raises:
        DecodeTimeoutError: If the limit expired; the process group is killed first.
        ProcessKilledError: If a signal from elsewhere ended the process.
        ConfigError: If the program is not installed.
    """
    if timeout_s <= 0:
        msg = f"{what} of video {video_id!r}: no time left of the decode limit"
        raise DecodeTimeoutError(msg)
    start = time.monotonic()
    try:
        # An argument list, never a shell: nothing in a video ID is interpreted.
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        msg = f"{args[0]!r} is not installed or not on PATH (needed for {what})"
        raise ConfigError(msg) from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        # Reap it and collect what it wrote; SIGKILL makes this return promptly.
        _, stderr = proc.communicate()
        tail = stderr_tail(stderr.decode("utf-8", "replace"))
        msg = f"{what} of video {video_id!r} exceeded {timeout_s:.1f}s and was killed; stderr: {tail}"
        raise DecodeTimeoutError(msg) from None
    if proc.returncode < 0:
        msg = f"{what} of video {video_id!r} was killed by signal {-proc.returncode}, not by the time limit"
        raise ProcessKilledError(msg)
    return ProcessResult(
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr.decode("utf-8", "replace"),
        elapsed_s=time.monotonic() - start,
    )


def stderr_tail(stderr: str, lines: int = 6) -> str:
    """The last meaningful stderr lines joined by `` | `` (per-frame log lines dropped)."""
    kept = [_CONTEXT_ADDRESS.sub("", line.strip()) for line in stderr.splitlines() if line.strip()]
    kept = [line for line in kept if not any(marker in line for marker in _NOISE_MARKERS)]
    return " | ".join(kept[-lines:]) if kept else "(no stderr)"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        # The group already exited between the timeout and the kill.
        return
