"""`clipguard` command line: run, demo, publish, verdict, watch, services, config.

Every configuration field is also a flag (``--kafka-bootstrap``, ``--stream-detectors``...)
and an environment variable (``CLIPGUARD_KAFKA__BOOTSTRAP``...); see README.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import click

from clipguard.cli_main import run_click_command
from clipguard.config import ClipguardConfig, LogConfig
from clipguard.logging_setup import configure_logging
from pipeline.cli_options import build_config, config_options, section_options


def command_config(options: dict) -> ClipguardConfig:
    """Flags/env/defaults; the driver's logging set up from its ``log`` section (``-v``: DEBUG)."""
    cfg = build_config(options)
    _setup_logging(cfg.log)
    return cfg


def stream_config(options: dict) -> ClipguardConfig:
    """The stream's configuration: flags/env/defaults, model files found, calibrated thresholds where a file applies.

    On a Ray cluster, Kafka/Redis left at their ``embedded`` default are refused first, in one line.
    """
    from clipguard.thresholds import resolve_thresholds
    from pipeline.endpoints import refuse_implicit_embedded

    cfg = command_config(options)
    refuse_implicit_embedded(cfg)
    return resolve_thresholds(cfg.with_model_files())


def _setup_logging(log: LogConfig) -> None:
    ctx = click.get_current_context(silent=True)
    verbose = bool(ctx and ctx.find_root().params.get("verbose"))
    configure_logging(log.model_copy(update={"level": "DEBUG"}) if verbose else log)
    if not verbose:  # the client's reconnect chatter says nothing a command's own error does not
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.option("-v", "--verbose", is_flag=True, help="debug logging (also from third-party libraries)")
def cli(verbose: bool) -> None:
    """clipguard: streaming deepfake-video moderation (Kafka -> Ray -> Redis)."""
    _setup_logging(LogConfig())


def main() -> None:
    sys.exit(run_click_command(cli, prog_name="clipguard"))


# --- the stream ------------------------------------------------------------------------
@cli.command()
@config_options
@click.option("--exit-when-idle", type=float, default=None, metavar="SECONDS",
              help="stop after this long with nothing in flight and no lag (batch runs)")  # fmt: skip
def run(exit_when_idle: float | None, **options) -> None:
    """Consume video IDs from Kafka and write verdicts to Redis until SIGTERM/SIGINT."""
    from pipeline.runner import run_stream

    cfg = stream_config(options)
    idle_since: list[float] = []
    last_received: list[int] = [-1]

    def idle(totals) -> bool:
        """Idle = partitions assigned and measured, no lag, nothing in flight, nothing new."""
        if exit_when_idle is None:
            return False
        busy = totals.in_flight or totals.lag or not totals.lag_measured or totals.received != last_received[0]
        last_received[0] = totals.received
        if busy:
            idle_since.clear()
            return False
        idle_since[:] = idle_since or [time.monotonic()]
        return time.monotonic() - idle_since[0] >= exit_when_idle

    def ready(live: ClipguardConfig, topology) -> None:
        click.echo(f"clipguard: model {topology.model_version}; kafka {live.kafka.bootstrap} topic "
                   f"{live.kafka.topic}; redis {_redacted(live.redis.url)}", err=True)  # fmt: skip
        t = live.thresholds
        click.echo(f"clipguard: thresholds fake>={t.fake:.6g} real<={t.real:.6g} "
                   f"({t.file or 'configured, no calibration file'})", err=True)  # fmt: skip

    totals = run_stream(cfg, stop_when=idle, on_ready=ready)
    click.echo(json.dumps({"verdicts": totals.verdicts, "by_status": totals.by_status,
                           "dead_letters": totals.dead_letters}))  # fmt: skip


@cli.command()
@config_options
@click.option("--videos", "video_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="folder for the generated demo videos (default: a cache folder)")  # fmt: skip
def demo(video_dir: Path | None, **options) -> None:
    """Embedded Kafka + Redis + local Ray, a few generated videos, their verdicts printed."""
    from pipeline.demo import run_demo

    defaults = {"model__arch": "ViT-Tiny-test", "model__pretrained": "none"}
    for k, v in defaults.items():
        if options.get(k) is None:
            options[k] = v
    run_demo(stream_config(options), video_dir)


# --- clients: only the settings they use (the rest still comes from the environment) ---------------------
_KAFKA_CLIENT = tuple(
    f"kafka.{name}"
    for name in ("bootstrap", "topic", "partitions", "security_protocol", "sasl_mechanism", "sasl_username",
                 "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
)  # fmt: skip
_REDIS_CLIENT = tuple(f"redis.{name}" for name in ("url", "password", "ssl_ca_certs", "key_prefix"))


@cli.command()
@section_options(fields=(*_KAFKA_CLIENT, "source.video_root"))
@click.argument("items", nargs=-1, required=True)
@click.option("--uri", default=None, help="video URI for a single ID (http(s)://, s3://)")
@click.option("--metadata", default=None, help="JSON object copied into the verdict")
@click.option("--create-topic/--no-create-topic", default=True, help="create the topic if missing")
def publish(items: tuple[str, ...], uri: str | None, metadata: str | None, create_topic: bool, **options) -> None:
    """Publish video IDs (or local files, copied under the video root) to the jobs topic."""
    from pipeline.endpoints import client_config
    from pipeline.kafka_publisher import JobPublisher, ensure_topic

    cfg = client_config(command_config(options), uses=("kafka",))
    meta = json.loads(metadata) if metadata else None
    if meta is not None and not isinstance(meta, dict):
        msg = "must be a JSON object"
        raise click.BadParameter(msg, param_hint="--metadata")
    if uri and len(items) != 1:
        msg = "--uri needs exactly one video ID"
        raise click.BadParameter(msg, param_hint="--uri")
    if create_topic:
        ensure_topic(cfg.kafka)
    pub = JobPublisher(cfg.kafka)
    for item in items:
        video_id = _file_to_id(Path(item), cfg.source.video_root) if Path(item).is_file() and not uri else item
        pub.publish(video_id, uri, meta)
        click.echo(video_id)
    pub.flush()
    pub.close()


def _file_to_id(path: Path, root: Path) -> str:
    """A file under the root publishes as its relative path; others are copied in first."""
    path, root = path.resolve(), root.resolve()
    if path.is_relative_to(root):
        return str(path.relative_to(root))
    dest = root / "uploads" / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest)
    return str(dest.relative_to(root))


@cli.command()
@section_options(fields=_REDIS_CLIENT)
@click.argument("video_id")
@click.option("--json", "as_json", is_flag=True, help="the stored hash as JSON")
def verdict(video_id: str, as_json: bool, **options) -> None:
    """Show the verdict of one video."""
    from pipeline.endpoints import client_config
    from pipeline.verdict_format import format_verdict
    from pipeline.verdict_store import VerdictStore

    cfg = client_config(command_config(options), uses=("redis",))
    store = VerdictStore(cfg.redis)
    found = store.get(video_id)
    if found is None:
        click.echo(f"no verdict for {video_id!r} (yet)", err=True)
        sys.exit(1)
    click.echo(json.dumps(found.to_dict(), indent=2, default=str) if as_json else format_verdict(found))


@cli.command()
@section_options(fields=_REDIS_CLIENT)
@click.option("--from-start", is_flag=True, help="replay the whole verdict stream first")
@click.option("--count", type=int, default=None, help="exit after this many events")
def watch(from_start: bool, count: int | None, **options) -> None:
    """Follow verdicts as they are stored (the Redis verdict stream)."""
    from pipeline.endpoints import client_config
    from pipeline.verdict_store import VerdictStore

    cfg = client_config(command_config(options), uses=("redis",))
    seen = 0
    try:
        for entry_id, event in VerdictStore(cfg.redis).follow("0" if from_start else "$"):
            click.echo(json.dumps({"id": entry_id, **event}))
            seen += 1
            if count is not None and seen >= count:
                return
    except KeyboardInterrupt:
        return


@cli.group()
def services() -> None:
    """Embedded Kafka-protocol broker and Redis for local use."""


@services.command("up")
def services_up() -> None:
    """Start both on loopback, print their addresses, keep them until Ctrl-C.

    If either dies meanwhile, the other is stopped and the command exits with status 1,
    naming the one that died and how.
    """
    import json as _json

    from pipeline.embedded_services import embedded_services
    from pipeline.endpoints import endpoints_file

    stop = threading.Event()
    # SIGTERM/SIGHUP (kill, timeout, a closed terminal) stop them as cleanly as Ctrl-C; SIGINT is
    # set explicitly because a shell starts background jobs with it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    with embedded_services() as (kafka, redis):
        endpoints_file().write_text(_json.dumps({"kafka": kafka.bootstrap, "redis": redis.url}))
        click.echo(f"kafka bootstrap: {kafka.bootstrap}\nredis url: {redis.url}\n(Ctrl-C to stop)")
        try:
            while kafka.running and redis.running and not stop.wait(1):
                pass
        finally:
            endpoints_file().unlink(missing_ok=True)
        deaths = [d for d in (kafka.death(), redis.death()) if d]
        if deaths:  # the other one is stopped on the way out of the with block
            msg = "; ".join(deaths) + "; stopping the other service"
            raise click.ClickException(msg)


@services.command("reap")
def services_reap() -> None:
    """Kill embedded services left behind by a crashed run."""
    from pipeline.embedded_services import reap_stale

    click.echo(f"killed: {reap_stale()}")


@cli.command("config")
@config_options
def show_config(**options) -> None:
    """Print the effective configuration (secrets masked)."""
    doc = json.loads(stream_config(options).model_dump_json())
    doc["redis"]["url"] = _redacted(doc["redis"]["url"])  # a password may sit in the URL
    click.echo(json.dumps(doc, indent=2))


def _register_training_commands() -> None:
    """`prepare`, `train`, `evaluate` and `convert` live with the training code (Ray Train, converters)."""
    from training.cli import convert_command, evaluate_command, prepare_command, train_command

    cli.add_command(prepare_command)
    cli.add_command(train_command)
    cli.add_command(evaluate_command)
    cli.add_command(convert_command)


_register_training_commands()


def _redacted(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


if __name__ == "__main__":
    main()
