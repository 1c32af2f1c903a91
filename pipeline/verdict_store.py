"""Redis adapter: store verdicts (idempotently) and read them back.

A verdict is written by one Lua script, atomically: if the stored hash already
has the same ``digest`` (same content, same model version) nothing changes and
no event is added; otherwise the hash is replaced and one event is appended to
the verdict stream. So a redelivered video never shows two different verdicts
and followers see one event per distinct verdict. Dead letters are written the same
way, once per Kafka record (a marker key per topic/partition/offset).

Writes retry with capped exponential backoff while Redis is unreachable; the
caller commits the Kafka offset only after :meth:`VerdictStore.put` returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from clipguard.config import RedisConfig
from clipguard.contracts import Verdict
from clipguard.errors import VerdictStoreError
from pipeline.message_codec import DeadLetter
from pipeline.verdict_keys import (
    VERDICT_EVENT_FIELDS,
    dead_letter_seen_key,
    dead_letter_stream_key,
    decode_verdict,
    encode_verdict,
    verdict_key,
    verdict_stream_key,
)

log = logging.getLogger(__name__)

# KEYS[1] hash, KEYS[2] stream; ARGV: digest, maxlen, ttl (0 = none), n (hash field count),
# then n field/value pairs for the hash, then the event's field/value pairs.
# Returns 1 when written, 0 when the same verdict was already stored.
_PUT_SCRIPT = """
if redis.call('HGET', KEYS[1], 'digest') == ARGV[1] then return 0 end
local n = tonumber(ARGV[4])
local hash, event = {}, {}
for i = 5, 4 + 2 * n do hash[#hash + 1] = ARGV[i] end
for i = 5 + 2 * n, #ARGV do event[#event + 1] = ARGV[i] end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(hash))
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3])) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(event))
return 1
"""

# KEYS[1] the record's "seen" marker, KEYS[2] the dead-letter stream; ARGV: marker ttl, maxlen, then
# the event's field/value pairs. Returns 1 when written, 0 when this record was dead-lettered already.
_DEAD_LETTER_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return 0 end
local event = {}
for i = 3, #ARGV do event[#event + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(event))
return 1
"""


def connect(cfg: RedisConfig, url: str | None = None) -> redis.Redis:
    """A client from the URL (redis:// or rediss://), with password/CA overrides."""
    kwargs: dict[str, Any] = {"decode_responses": True, "socket_timeout": 10, "socket_connect_timeout": 5}
    if cfg.password is not None:
        kwargs["password"] = cfg.password.get_secret_value()
    if cfg.ssl_ca_certs is not None:
        kwargs["ssl_ca_certs"] = str(cfg.ssl_ca_certs)
    return redis.Redis.from_url(url or cfg.url, **kwargs)


class VerdictStore:
    """Verdict hashes + event streams under ``cfg.key_prefix``."""

    def __init__(self, cfg: RedisConfig, client: redis.Redis | None = None, url: str | None = None) -> None:
        self.cfg = cfg
        self.client = client or connect(cfg, url)
        self._put = self.client.register_script(_PUT_SCRIPT)
        self._put_dead = self.client.register_script(_DEAD_LETTER_SCRIPT)
        self.prefix = cfg.key_prefix

    # --- writes -------------------------------------------------------------------
    def put(self, verdict: Verdict, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Store a verdict, retrying while Redis is down. True if it changed what was stored.

        Raises VerdictStoreError only when ``should_stop()`` turns true while retrying
        (shutdown): the caller then must not commit the offset.
        """
        fields = encode_verdict(verdict)
        argv = [fields["digest"], str(self.cfg.stream_maxlen), str(self.cfg.verdict_ttl_s or 0), str(len(fields))]
        argv += [x for kv in fields.items() for x in kv]
        argv += [x for k in VERDICT_EVENT_FIELDS for x in (k, fields[k])]
        keys = [verdict_key(self.prefix, verdict.video_id), verdict_stream_key(self.prefix)]
        return bool(self._retry(lambda: self._put(keys=keys, args=argv), verdict.video_id, should_stop))

    def put_dead_letter(self, letter: DeadLetter, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Append a dead letter, once per Kafka record. True if it was added.

        A record redelivered after a restart (dead-lettered, offset not yet committed)
        adds no second entry within ``redis.dead_letter_dedupe_s``; a letter without a
        source is always added. Retries and raises like :meth:`put`.
        """
        src = letter.source
        event = {
            "kind": letter.kind,
            "message": letter.message,
            "value_preview": letter.value_preview,
            "value_size": str(letter.value_size),
            "source": str(src) if src else "",
        }
        key = dead_letter_stream_key(self.prefix)
        maxlen = self.cfg.stream_maxlen
        if src is None:
            self._retry(lambda: self.client.xadd(key, event, maxlen=maxlen, approximate=True), "a dead letter",
                        should_stop)  # fmt: skip
            return True
        keys = [dead_letter_seen_key(self.prefix, str(src)), key]
        argv = [str(self.cfg.dead_letter_dedupe_s), str(maxlen), *(x for kv in event.items() for x in kv)]
        return bool(self._retry(lambda: self._put_dead(keys=keys, args=argv), str(src), should_stop))

    def _retry(self, op: Callable[[], Any], what: str, should_stop: Callable[[], bool]) -> Any:
        delay = self.cfg.retry_initial_s
        while True:
            try:
                return op()
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                if should_stop():
                    msg = f"Redis unavailable while storing {what}: {exc}"
                    raise VerdictStoreError(msg) from exc
                log.warning("Redis unavailable storing %s (%s); retrying in %.1fs", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.cfg.retry_max_s)

    # --- reads --------------------------------------------------------------------
    def get(self, video_id: str) -> Verdict | None:
        fields = self.client.hgetall(verdict_key(self.prefix, video_id))
        return decode_verdict(fields) if fields else None

    def get_raw(self, video_id: str) -> dict[str, str]:
        return self.client.hgetall(verdict_key(self.prefix, video_id))

    def events(self, start: str = "0-0", count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        return self.client.xrange(verdict_stream_key(self.prefix), min=start, count=count)

    def dead_letters(self, count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        return self.client.xrange(dead_letter_stream_key(self.prefix), count=count)

    def follow(self, last_id: str = "$", block_ms: int = 1000) -> Iterator[tuple[str, dict[str, str]]]:
        """Yield verdict events as they arrive (``$`` = only new ones, ``0`` = from the start)."""
        key = verdict_stream_key(self.prefix)
        while True:
            for _stream, entries in self.client.xread({key: last_id}, block=block_ms, count=100) or []:
                for entry_id, data in entries:
                    last_id = entry_id
                    yield entry_id, data

    def ping(self) -> bool:
        return bool(self.client.ping())
