"""Human-readable rendering of verdicts for the CLI (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from clipguard.contracts import Verdict


def format_verdict(v: Verdict) -> str:
    """A few aligned lines: status, score, label, tracks, errors, timings."""
    lines = [f"video      {v.video_id}", f"status     {v.status}"]
    if v.p_fake is not None:
        lines.append(f"p_fake     {v.p_fake:.4f}  ->  {v.label}")
    if v.thresholds_fake is not None:
        source = f"file sha256 {v.thresholds_sha256[:12]}" if v.thresholds_sha256 else "configured, no file"
        lines.append(f"labelled   fake >= {v.thresholds_fake:.4g}, real <= {v.thresholds_real:.4g} ({source})")
    if v.video_score:
        lines.append(f"score      {v.video_score}")
    lines.append(f"faces      {v.faces_found} in {v.frames_with_faces}/{v.frames_sampled} sampled frames")
    for t in v.tracks:
        mark = "  <- most suspicious" if t.track_id == v.top_track else ""
        lines.append(
            f"  track {t.track_id:<3} p_fake {t.p_fake:.4f} over {t.n_crops} crops "
            f"(frames {t.first_frame}-{t.last_frame}){mark}"
        )
    if v.error_kind:
        lines.append(f"error      {v.error_kind}: {v.error_message}")
    lines.append(f"model      {v.model_version}")
    if v.timings_s:
        lines.append("timings    " + ", ".join(f"{k} {s:.2f}s" for k, s in v.timings_s.items()))
    if v.source:
        lines.append(f"source     {v.source}")
    if v.metadata:
        lines.append(f"metadata   {v.metadata}")
    return "\n".join(lines)


def format_table(verdicts: Sequence[Verdict]) -> str:
    """One row per verdict."""
    header = f"{'video':<34} {'status':<8} {'label':<10} {'p_fake':>7} {'faces':>5} {'tracks':>6}  detail"
    rows = [header, "-" * len(header)]
    for v in verdicts:
        p = f"{v.p_fake:.3f}" if v.p_fake is not None else "-"
        detail = f"{v.error_kind}: {v.error_message}" if v.error_kind else ""
        rows.append(
            f"{v.video_id[:34]:<34} {v.status:<8} {v.label or '-':<10} {p:>7} {v.faces_found:>5} "
            f"{len(v.tracks):>6}  {detail[:70]}"
        )
    return "\n".join(rows)
