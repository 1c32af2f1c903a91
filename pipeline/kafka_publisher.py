"""Topic creation and publishing of video jobs (what `clipguard publish` uses)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from clipguard.config import KafkaConfig
from pipeline.kafka_source import security_kwargs
from pipeline.message_codec import encode_job

log = logging.getLogger(__name__)


def ensure_topic(cfg: KafkaConfig, bootstrap: str | None = None, partitions: int | None = None) -> bool:
    """Create the jobs topic if missing. True if it was created now."""
    admin = KafkaAdminClient(bootstrap_servers=(bootstrap or cfg.bootstrap).split(","), **security_kwargs(cfg))
    try:
        admin.create_topics([NewTopic(cfg.topic, partitions or cfg.partitions, 1)])
        log.info("created topic %s with %d partitions", cfg.topic, partitions or cfg.partitions)
        return True
    except TopicAlreadyExistsError:
        return False
    finally:
        admin.close()


class JobPublisher:
    """Sends video jobs (plain IDs or JSON) to the jobs topic, waiting for acks."""

    def __init__(self, cfg: KafkaConfig, bootstrap: str | None = None) -> None:
        self.cfg = cfg
        self.producer = KafkaProducer(
            bootstrap_servers=(bootstrap or cfg.bootstrap).split(","), acks="all", **security_kwargs(cfg)
        )

    def publish(self, video_id: str, uri: str | None = None, metadata: dict | None = None) -> None:
        self.publish_raw(encode_job(video_id, uri, metadata), key=video_id.encode("utf-8", "replace"))

    def publish_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Any bytes, as a hostile or careless producer might send them."""
        self.producer.send(self.cfg.topic, value=value, key=key)

    def publish_many(self, video_ids: Iterable[str]) -> int:
        n = 0
        for vid in video_ids:
            self.publish(vid)
            n += 1
        self.flush()
        return n

    def flush(self, timeout_s: float = 30.0) -> None:
        self.producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self.producer.close()
