"""Resolve ``embedded`` Kafka/Redis settings into running loopback services.

`clipguard run` (and `demo`) start what is set to ``embedded`` and record the
addresses in ``<state dir>/endpoints.json``, so `publish`, `verdict` and `watch`
in another terminal find the same services without flags.

On a Ray cluster (``ray.address`` set) an ``embedded`` left at its default is refused
(:func:`refuse_implicit_embedded`): a stream that joins a cluster and finds no broker or
Redis configured has been misconfigured, and loopback services on one node would swallow
its verdicts. Naming ``embedded`` explicitly still starts them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from clipguard.config import EMBEDDED, ClipguardConfig
from clipguard.errors import ConfigError
from pipeline.embedded_services import start_kafka, start_redis, state_dir


def endpoints_file() -> Path:
    return state_dir() / "endpoints.json"


def refuse_implicit_embedded(cfg: ClipguardConfig) -> None:
    """With ``ray.address`` set, refuse Kafka/Redis that are ``embedded`` only by default.

    Raises:
        ConfigError: one line naming the unset settings and how to set them.
    """
    implicit = cfg.embedded_by_default() if cfg.ray.address else []
    if implicit:
        names = " and ".join(implicit)
        msg = (
            f"{names} not set while ray.address is {cfg.ray.address!r}: a stream on a Ray cluster needs its real "
            f"Kafka/Redis (CLIPGUARD_KAFKA__BOOTSTRAP, CLIPGUARD_REDIS__URL or --kafka-bootstrap/--redis-url); "
            f"set them to '{EMBEDDED}' by name to start loopback ones on this node"
        )
        raise ConfigError(msg)


@contextlib.contextmanager
def resolved_endpoints(cfg: ClipguardConfig, workdir: Path | None = None) -> Iterator[ClipguardConfig]:
    """The config with embedded services started and their addresses filled in.

    Raises:
        ConfigError: ``embedded`` by default on a Ray cluster (:func:`refuse_implicit_embedded`).
    """
    refuse_implicit_embedded(cfg)
    started = []
    try:
        kafka, redis = cfg.kafka, cfg.redis
        if kafka.bootstrap == EMBEDDED:
            broker = start_kafka(workdir=workdir)
            started.append(broker)
            kafka = kafka.model_copy(update={"bootstrap": broker.bootstrap})
        if redis.url == EMBEDDED:
            server = start_redis(workdir=workdir)
            started.append(server)
            redis = redis.model_copy(update={"url": server.url})
        if started:
            endpoints_file().write_text(json.dumps({"kafka": kafka.bootstrap, "redis": redis.url}))
        yield cfg.model_copy(update={"kafka": kafka, "redis": redis})
    finally:
        if started:
            endpoints_file().unlink(missing_ok=True)
        for service in reversed(started):
            service.stop()


def client_config(cfg: ClipguardConfig, uses: tuple[str, ...] = ("kafka", "redis")) -> ClipguardConfig:
    """For client commands: ``embedded`` means the services a running `clipguard run` started.

    Args:
        cfg: the client's configuration.
        uses: the services the client talks to (``kafka``, ``redis``); only those are resolved.
    """
    kafka_embedded = "kafka" in uses and cfg.kafka.bootstrap == EMBEDDED
    redis_embedded = "redis" in uses and cfg.redis.url == EMBEDDED
    if not (kafka_embedded or redis_embedded):
        return cfg
    path = endpoints_file()
    if not path.is_file():
        msg = (
            "Kafka/Redis are set to 'embedded' but no `clipguard run`/`demo` with embedded services is running "
            f"({path} is missing): start one, or pass --kafka-bootstrap / --redis-url"
        )
        raise ConfigError(msg)
    found = json.loads(path.read_text())
    kafka = cfg.kafka.model_copy(update={"bootstrap": found["kafka"]}) if kafka_embedded else cfg.kafka
    redis = cfg.redis.model_copy(update={"url": found["redis"]}) if redis_embedded else cfg.redis
    return cfg.model_copy(update={"kafka": kafka, "redis": redis})
