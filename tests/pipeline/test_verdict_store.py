import threading
import time

import pytest

from clipguard.config import RedisConfig
from clipguard.contracts import CropScore, SourceRef, TrackScore, Verdict
from clipguard.errors import VerdictStoreError
from pipeline.embedded_services import start_redis
from pipeline.message_codec import DeadLetter
from pipeline.verdict_keys import verdict_key
from pipeline.verdict_store import VerdictStore


def _verdict(video_id="v1", p=0.8, offset=3, **kw):
    return Verdict(
        video_id=video_id,
        status="done",
        model_version="m-1",
        p_fake=p,
        label="fake",
        video_score="all faces (max 32), most suspicious track (mean, >=2 crops), 32 frames",
        thresholds_fake=0.61,
        thresholds_real=0.4,
        tracks=(TrackScore(0, p, 2, 0, 31),),
        top_track=0,
        frames_sampled=32,
        frames_with_faces=2,
        faces_found=2,
        crop_scores=(CropScore(video_id, 0, 0, (1.0, 2.0, 3.0, 4.0), 0.9, p),),
        timings_s={"decode": 0.1},
        source=SourceRef("t", 1, offset),
        metadata={"tenant": "acme"},
        received_at="2026-01-01T00:00:00+00:00",
        **{"thresholds_sha256": "c" * 64, **kw},
    )


def test_verdict_store_round_trip_and_key_layout(redis_config):
    store = VerdictStore(redis_config)
    v = _verdict(video_id="odd:id with spaces/../x")
    assert store.put(v) is True
    raw = store.client.hgetall(verdict_key(redis_config.key_prefix, v.video_id))
    assert raw["status"] == "done" and raw["p_fake"] == "0.800000" and raw["source_offset"] == "3"
    back = store.get(v.video_id)
    assert back == v  # the label's basis too: video score, thresholds and their file's hash
    assert raw["thresholds_sha256"] == "c" * 64 and raw["thresholds_fake"] == "0.61"
    events = store.events()
    assert len(events) == 1 and events[0][1]["video_id"] == v.video_id
    assert events[0][1]["thresholds_sha256"] == "c" * 64


def test_verdict_store_redelivery_with_same_content_is_idempotent(redis_config):
    store = VerdictStore(redis_config)
    assert store.put(_verdict(offset=3)) is True
    # same verdict content from a redelivery (other offset, timestamps): no second event
    assert store.put(_verdict(offset=9, completed_at="later")) is False
    assert len(store.events()) == 1
    # a different result (e.g. new model version) replaces it and is announced
    assert store.put(_verdict(p=0.1)) is True
    assert len(store.events()) == 2
    # so does the same label from recalibrated thresholds (another thresholds file)
    assert store.put(_verdict(p=0.1, thresholds_sha256="d" * 64)) is True
    assert len(store.events()) == 3
    assert store.get("v1").p_fake == pytest.approx(0.1)


def test_verdict_store_error_and_no_face_verdicts(redis_config):
    store = VerdictStore(redis_config)
    store.put(Verdict("bad", "error", "m-1", error_kind="not_a_video", error_message="boom"))
    store.put(Verdict("nf", "no_face", "m-1", frames_sampled=32))
    assert store.get("bad").error_kind == "not_a_video"
    assert store.get("nf").p_fake is None and store.get("nf").frames_sampled == 32
    assert store.get("missing") is None


def test_verdict_store_dead_letters(redis_config):
    store = VerdictStore(redis_config)
    store.put_dead_letter(DeadLetter(SourceRef("t", 0, 1), "bad_message", "invalid JSON", "b'{x'", 2))
    (entry,) = store.dead_letters()
    assert entry[1]["kind"] == "bad_message" and entry[1]["source"] == "t[0]@1"


def test_a_redelivered_bad_message_is_dead_lettered_once(redis_config):
    """A consumer killed after the dead letter but before the commit gets the record again on restart."""
    store = VerdictStore(redis_config)
    letter = DeadLetter(SourceRef("t", 0, 1), "bad_message", "invalid JSON", "b'{x'", 2)
    assert store.put_dead_letter(letter) is True
    assert store.put_dead_letter(letter) is False  # the redelivery
    assert store.put_dead_letter(DeadLetter(SourceRef("t", 1, 1), "bad_message", "invalid JSON", "b'{x'", 2))
    assert [e["source"] for _, e in store.dead_letters()] == ["t[0]@1", "t[1]@1"]
    marker = f"{store.prefix}:dead-letter:seen:t[0]@1"
    assert 0 < store.client.ttl(marker) <= redis_config.dead_letter_dedupe_s  # the markers expire
    # A letter with no Kafka source cannot be recognised again: it is always added.
    sourceless = DeadLetter(None, "bad_message", "invalid JSON", "b'{x'", 2)
    assert store.put_dead_letter(sourceless) and store.put_dead_letter(sourceless)
    assert len(store.dead_letters()) == 4


def test_verdict_store_retries_while_redis_is_down_then_succeeds(tmp_path):
    server = start_redis(workdir=tmp_path)
    cfg = RedisConfig(url=server.url, retry_initial_s=0.05, retry_max_s=0.2)
    store = VerdictStore(cfg)
    port = server.port
    server.stop()
    done = threading.Event()

    def put():
        store.put(_verdict())
        done.set()

    t = threading.Thread(target=put, daemon=True)
    t.start()
    time.sleep(1.0)
    assert not done.is_set()  # blocked, retrying, not dropped
    server2 = start_redis(port=port, workdir=tmp_path)
    try:
        assert done.wait(10)
        assert store.get("v1").p_fake == pytest.approx(0.8)
    finally:
        server2.stop()


def test_verdict_store_gives_up_only_on_shutdown(tmp_path):
    server = start_redis(workdir=tmp_path)
    store = VerdictStore(RedisConfig(url=server.url, retry_initial_s=0.05, retry_max_s=0.1))
    server.stop()
    with pytest.raises(VerdictStoreError):
        store.put(_verdict(), should_stop=lambda: True)


def test_verdict_store_password_from_config(tmp_path):
    server = start_redis(workdir=tmp_path, password="s3cret")
    try:
        cfg = RedisConfig(url=server.url, password="s3cret")
        assert VerdictStore(cfg).ping()
        assert "s3cret" not in repr(cfg)
    finally:
        server.stop()
