"""Kafka message values <-> :class:`VideoJob`, free of Kafka.

Accepted values (UTF-8):
  * a plain video ID, e.g. ``clips/2026/abc.mp4`` (a path under the video root);
  * the same ID as a JSON string, ``"clips/2026/abc.mp4"`` (what a producer with
    ``value_serializer=json.dumps`` sends), unquoted;
  * JSON ``{"video_id": "...", "uri": "https://...", "metadata": {...}}`` where
    ``uri`` and ``metadata`` are optional; other top-level keys are copied into
    metadata so nothing a producer sends is silently dropped.

A value that has a usable ID but something else wrong becomes a job whose
verdict will be an ``error`` (``JobOrError.error`` set). A value with no usable
ID (binary garbage, invalid JSON, no ``video_id``, an ID that cannot be a key)
becomes a :class:`DeadLetter`. Neither ever stops the consumer.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from clipguard.contracts import SourceRef, VideoJob
from clipguard.errors import ClipguardError, InvalidVideoIdError, MessageError

MAX_ID_CHARS = 1024
MAX_METADATA_DEPTH = 32  # deeper JSON cannot be stored (the verdict encoder recurses per level)
_PREVIEW_BYTES = 200


@dataclass(frozen=True)
class DeadLetter:
    """A record with no usable video ID: kept (in Redis) for a human, then committed."""

    source: SourceRef | None
    kind: str
    message: str
    value_preview: str  # repr of the first bytes, safe to print
    value_size: int


@dataclass(frozen=True)
class ParsedMessage:
    """Either a job (possibly carrying an error to report) or a dead letter."""

    job: VideoJob | None = None
    error: ClipguardError | None = None
    dead_letter: DeadLetter | None = None


def validate_video_id(video_id: str) -> str:
    """Check an ID is usable as a Redis key and in log lines; returns it unchanged.

    Path safety (``../``, absolute paths) is not judged here: such IDs are
    storable, and the video source rejects them with an ``error`` verdict.
    """
    if not video_id or not video_id.strip():
        msg = "empty video_id"
        raise InvalidVideoIdError(msg)
    if len(video_id) > MAX_ID_CHARS:
        msg = f"video_id is {len(video_id)} characters; the limit is {MAX_ID_CHARS}"
        raise InvalidVideoIdError(msg)
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in video_id):
        msg = f"video_id contains control characters: {video_id[:80]!r}"
        raise InvalidVideoIdError(msg)
    return video_id


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """True if JSON ``value`` has more than ``limit`` levels of objects/arrays (iterative, no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _dead(source: SourceRef | None, value: bytes, kind: str, message: str) -> ParsedMessage:
    preview = repr(value[:_PREVIEW_BYTES])
    return ParsedMessage(dead_letter=DeadLetter(source, kind, message, preview, len(value)))


def parse_message(value: bytes | None, source: SourceRef | None = None, max_bytes: int = 64 * 1024) -> ParsedMessage:
    """Turn one Kafka value into a job or a dead letter; never raises."""
    value = value or b""
    if len(value) > max_bytes:
        return _dead(source, value, "too_large", f"message of {len(value)} bytes exceeds {max_bytes}")
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        return _dead(source, value, MessageError.kind, f"value is not UTF-8 text: {exc.reason} at byte {exc.start}")
    if not text:
        return _dead(source, value, InvalidVideoIdError.kind, "empty message")

    if text[0] in '"[':
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            doc = None  # not JSON: a plain ID that happens to start with a quote or bracket
        if isinstance(doc, str):  # a JSON-serialised ID (or job): the quotes are the producer's, not the ID's
            text = doc.strip()
            if not text:
                return _dead(source, value, InvalidVideoIdError.kind, "empty message")
        elif isinstance(doc, list):
            return _dead(source, value, MessageError.kind, "a JSON array is not a job: send an ID or an object")

    uri: str | None = None
    metadata: dict[str, Any] = {}
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            return _dead(source, value, MessageError.kind, f"invalid JSON: {exc.msg} at char {exc.pos}")
        except RecursionError:  # e.g. 5,000 nested arrays: small, yet deeper than the parser's stack
            return _dead(source, value, MessageError.kind, "invalid JSON: nested too deeply")
        if not isinstance(doc, dict) or not isinstance(doc.get("video_id"), str):
            return _dead(source, value, MessageError.kind, "JSON message needs a string 'video_id'")
        video_id = doc.pop("video_id")
        uri_value = doc.pop("uri", None)
        meta_value = doc.pop("metadata", {})
        try:
            validate_video_id(video_id)
        except InvalidVideoIdError as exc:
            return _dead(source, value, exc.kind, exc.message)
        error: ClipguardError | None = None
        if uri_value is not None and not isinstance(uri_value, str):
            error = MessageError("'uri' must be a string")
        elif isinstance(uri_value, str):
            uri = uri_value
        if not isinstance(meta_value, dict):
            error = error or MessageError("'metadata' must be a JSON object")
            meta_value = {"metadata": meta_value}
        metadata = {**doc, **meta_value}
        if _nested_deeper_than(metadata, MAX_METADATA_DEPTH):
            error = error or MessageError(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
            metadata = {}
        job = VideoJob(video_id=video_id, uri=uri, metadata=metadata, source=source)
        return ParsedMessage(job=job, error=error)

    try:
        validate_video_id(text)
    except InvalidVideoIdError as exc:
        return _dead(source, value, exc.kind, exc.message)
    return ParsedMessage(job=VideoJob(video_id=text, source=source))


def encode_job(video_id: str, uri: str | None = None, metadata: dict[str, Any] | None = None) -> bytes:
    """The value `clipguard publish` sends: plain ID when that says everything, else JSON."""
    if uri is None and not metadata:
        return video_id.encode("utf-8")
    doc: dict[str, Any] = {"video_id": video_id}
    if uri is not None:
        doc["uri"] = uri
    if metadata:
        doc["metadata"] = metadata
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")
