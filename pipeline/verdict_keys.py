"""The Redis key layout and the verdict <-> hash encoding, free of Redis.

Layout (``<p>`` = ``redis.key_prefix``, default ``clipguard``):

========================================  =========  ==========================================
key                                       type       content
========================================  =========  ==========================================
``<p>:verdict:<video_id>``                hash       the latest verdict of that video (fields below)
``<p>:verdicts``                          stream     one event per stored verdict (``video_id``,
                                                     ``status``, ``label``, ``p_fake``, ``model_version``,
                                                     ``thresholds_sha256``, ``digest``)
``<p>:dead-letter``                       stream     Kafka records with no usable video ID
``<p>:dead-letter:seen:<source>``          string     marks ``<topic>[<partition>]@<offset>`` as
                                                     dead-lettered (expires after
                                                     ``redis.dead_letter_dedupe_s``)
========================================  =========  ==========================================

The video ID is the key's suffix verbatim: the prefix is fixed, so IDs holding
``:`` or spaces cannot collide with another key of the layout.

Hash fields are strings; structured ones (``tracks``, ``crops``, ``timings_s``,
``metadata``) hold JSON. A ``done`` verdict says what made its label: ``video_score``
(the definition, :class:`clipguard.config.VideoScoreConfig`), ``thresholds_fake`` /
``thresholds_real`` and ``thresholds_sha256`` (the calibrated thresholds file; empty
when the thresholds were configured without one). ``digest`` hashes the verdict's
content (not its timestamps, timings or Kafka offset) so a redelivered video that
yields the same verdict under the same model version and thresholds is recognised
and not announced twice. A redelivered bad message is recognised by its Kafka
source (topic, partition, offset) the same way.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from clipguard.contracts import CropScore, SourceRef, TrackScore, Verdict

VERDICT_EVENT_FIELDS = ("video_id", "status", "label", "p_fake", "model_version", "thresholds_sha256", "digest")
_JSON_FIELDS = ("tracks", "crop_scores", "timings_s", "metadata")
_INT_FIELDS = ("top_track", "frames_sampled", "frames_with_faces", "faces_found")
# A video's crops are batched with other videos' crops, and a different batch shape
# changes fp32 results by ~1e-7: compare scores at a precision far above that noise.
_DIGEST_DECIMALS = 3


def verdict_key(prefix: str, video_id: str) -> str:
    return f"{prefix}:verdict:{video_id}"


def verdict_stream_key(prefix: str) -> str:
    return f"{prefix}:verdicts"


def dead_letter_stream_key(prefix: str) -> str:
    return f"{prefix}:dead-letter"


def dead_letter_seen_key(prefix: str, source: str) -> str:
    """Marks a Kafka record as dead-lettered, so a redelivery of it adds no second entry."""
    return f"{prefix}:dead-letter:seen:{source}"


def verdict_digest(verdict: Verdict) -> str:
    """Hash of what the verdict says (status, scores, counts, model, error)."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, _DIGEST_DECIMALS)

    content = {
        "video_id": verdict.video_id,
        "status": verdict.status,
        "model_version": verdict.model_version,
        "p_fake": r(verdict.p_fake),
        "label": verdict.label,
        # A recalibration (or another video-score definition) is a new verdict even when the label holds.
        "label_basis": [verdict.video_score, verdict.thresholds_fake, verdict.thresholds_real],
        "thresholds_file": verdict.thresholds_sha256,
        "tracks": [(t.track_id, r(t.p_fake), t.n_crops) for t in verdict.tracks],
        "top_track": verdict.top_track,
        "counts": (verdict.frames_sampled, verdict.frames_with_faces, verdict.faces_found),
        "error": (verdict.error_kind, verdict.error_message),
        "metadata": verdict.metadata,
    }
    blob = json.dumps(content, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def encode_verdict(verdict: Verdict) -> dict[str, str]:
    """Verdict -> flat string mapping for HSET (empty string = absent)."""
    d = verdict.to_dict()
    source = d.pop("source")
    out = {k: _s(v) for k, v in d.items() if k not in _JSON_FIELDS}
    for k in _JSON_FIELDS:
        out[k] = json.dumps(d[k], default=str)
    if verdict.p_fake is not None:
        out["p_fake"] = f"{verdict.p_fake:.6f}"
    out["source_topic"] = _s(source and source["topic"])
    out["source_partition"] = _s(source and source["partition"])
    out["source_offset"] = _s(source and source["offset"])
    out["digest"] = verdict_digest(verdict)
    return out


def decode_verdict(fields: dict[str, str]) -> Verdict:
    """Inverse of :func:`encode_verdict` (timestamps stay ISO strings)."""
    f = dict(fields)
    opt = {k: (f.get(k) or None) for k in ("label", "error_kind", "error_message", "received_at", "completed_at",
                                           "thresholds_sha256")}  # fmt: skip
    floats = {k: (float(f[k]) if f.get(k) else None) for k in ("thresholds_fake", "thresholds_real")}
    ints = {k: (int(f[k]) if f.get(k) else (None if k == "top_track" else 0)) for k in _INT_FIELDS}
    source = None
    if f.get("source_topic"):
        source = SourceRef(f["source_topic"], int(f["source_partition"]), int(f["source_offset"]))
    return Verdict(
        video_id=f["video_id"],
        status=f["status"],  # type: ignore[arg-type]
        model_version=f["model_version"],
        p_fake=float(f["p_fake"]) if f.get("p_fake") else None,
        video_score=f.get("video_score", ""),
        **floats,
        tracks=tuple(TrackScore(**t) for t in json.loads(f.get("tracks") or "[]")),
        crop_scores=tuple(CropScore(**{**c, "box": tuple(c["box"])}) for c in json.loads(f.get("crop_scores") or "[]")),
        timings_s=json.loads(f.get("timings_s") or "{}"),
        metadata=json.loads(f.get("metadata") or "{}"),
        source=source,
        **opt,  # type: ignore[arg-type]
        **ints,
    )
