"""`clipguard demo` (the README's main-job command): the whole stream on one machine.

Embedded broker + Redis + local Ray, a handful of videos generated from
``skimage.data.astronaut()``, published to the topic, judged, printed.
It says plainly which model ran: without the OpenAI weights (no internet
here) the default demo model is a tiny random-init ViT with an untrained head,
whose scores mean nothing; pass ``--model-arch ViT-L-14 --model-pretrained
<weights> --model-checkpoint <ckpt>`` for real verdicts.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from clipguard.config import ClipguardConfig
from clipguard.logging_setup import configure_logging
from pipeline.kafka_publisher import JobPublisher, ensure_topic
from pipeline.runner import RunTotals, run_stream
from pipeline.sample_videos import make_demo_videos
from pipeline.verdict_format import format_table
from pipeline.verdict_store import VerdictStore

RAY_SESSION_LOGS = "/tmp/ray/session_latest/logs"  # noqa: S108 - where a local Ray keeps its session


def run_demo(cfg: ClipguardConfig, video_dir: Path | None = None) -> None:
    root = (video_dir or Path.home() / ".cache" / "clipguard" / "demo-videos").resolve()
    # The console carries the demo's own progress and the verdicts; every log line goes to a file.
    log = cfg.log.model_copy(update={"file": cfg.log.file or root.parent / "demo.log", "forward_actor_logs": False})
    configure_logging(log, console_level="ERROR")
    click.echo(f"[demo] full logs: {log.file} (this process); actors: Ray's session logs, {RAY_SESSION_LOGS}")
    click.echo(f"[demo] making sample videos under {root}")
    ids = make_demo_videos(root)
    ids.append("demo/../../etc/passwd")  # an ID that tries to leave the video root
    cfg = cfg.model_copy(update={"source": cfg.source.model_copy(update={"video_root": root}), "log": log})
    published: list[str] = []
    live_cfg: list[ClipguardConfig] = []
    started = time.monotonic()

    def on_ready(live: ClipguardConfig, topology) -> None:
        untrained = "untrained" in topology.model_version
        click.echo(f"[demo] kafka {live.kafka.bootstrap}  redis {live.redis.url}")
        click.echo(f"[demo] model: {topology.model_version} (arch {live.model.arch}, weights {live.model.pretrained})")
        if untrained:
            click.secho("[demo] WARNING: this detector has an UNTRAINED head"
                        + (" on a RANDOM-INIT tower" if live.model.pretrained == "none" else "")
                        + ": its p_fake values are NOT meaningful. Use --model-checkpoint for real verdicts.",
                        fg="yellow")  # fmt: skip
        ensure_topic(live.kafka)
        pub = JobPublisher(live.kafka)
        for vid in ids:
            pub.publish(vid, metadata={"demo": True})
            published.append(vid)
        pub.publish_raw(b"\xff\xfe not even text")  # a malformed message -> dead letter
        pub.flush()
        pub.close()
        click.echo(f"[demo] published {len(ids)} video IDs + 1 malformed message to {live.kafka.topic}")
        live_cfg.append(live)

    def progress(t: RunTotals, _topology) -> None:
        click.echo(f"[demo] {time.monotonic() - started:5.1f}s  verdicts {t.verdicts}/{len(ids)}  "
                   f"dead letters {t.dead_letters}  in flight {t.in_flight}  {t.by_status}")  # fmt: skip

    def finished(t: RunTotals) -> bool:
        if not (published and t.verdicts >= len(published) and t.dead_letters >= 1):
            return False
        print_verdicts(live_cfg[0], published)  # while Redis is still up
        return True

    totals = run_stream(cfg, stop_when=finished, on_progress=progress, on_ready=on_ready)
    click.echo(f"[demo] {totals.verdicts} verdicts, {totals.dead_letters} dead letter(s) in "
               f"{time.monotonic() - started:.1f}s")  # fmt: skip


def print_verdicts(cfg: ClipguardConfig, ids: list[str]) -> None:
    store = VerdictStore(cfg.redis)
    click.echo("\n" + format_table([v for v in (store.get(i) for i in ids) if v is not None]))
    click.echo(f"\n[demo] dead letters: {[e['kind'] + ': ' + e['message'] for _, e in store.dead_letters()]}")
