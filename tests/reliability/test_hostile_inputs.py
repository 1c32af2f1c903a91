"""Hostile and broken inputs through the real stream, and the cheaper unit-level checks beside it.

One stream run takes every malformed Kafka value, every broken file, every
disallowed scheme and every hostile HTTP server, with good videos before, between
and after them. Each must end as an ``error`` verdict with the exact kind (or a
dead letter with the exact kind), the stream must keep going, and the offsets must
reach the end. ffmpeg hangs (a never-ending HTTP body, a server that never
answers) are part of it: they hit ``source.timeout_s`` and the next video runs.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from clipguard.config import SamplingConfig, SourceConfig
from clipguard.contracts import VideoJob
from clipguard.errors import DecodeError, DecodeTimeoutError, DisallowedSourceError, NotAVideoError
from pipeline.message_codec import MAX_METADATA_DEPTH, parse_message
from pipeline.verdict_keys import encode_verdict
from pipeline.verdict_store import VerdictStore
from pipeline.video_flow import error_verdict
from tests import video_factory as vf
from tests.reliability.loopback_http import file_server, redirect_server, trickle_server
from tests.reliability.stream_harness import assert_stream_invariants, publish, run_until, stream_config
from workers.frame_decoder import FrameDecoder

pytestmark = pytest.mark.timeout(300)

HANG_LIMIT_S = 3.0  # source.timeout_s of the stream run: every ffmpeg call is killed after this

DEEP_JSON = ('{"video_id": "deep.mp4", "m": ' + "[" * 5000 + "]" * 5000 + "}").encode()
# Kafka value -> (dead-letter kind, words of its message)
DEAD_LETTERS: dict[bytes, tuple[str, str]] = {
    b"\xff\xfe\x00\x80 binary garbage": ("bad_message", "not UTF-8"),
    b'{"video_id": ': ("bad_message", "invalid JSON"),
    b'{"video_id": 42}': ("bad_message", "needs a string 'video_id'"),
    DEEP_JSON: ("bad_message", "nested too deeply"),
    b"h" * (64 * 1024 + 1): ("too_large", "exceeds 65536"),
    b"": ("invalid_id", "empty message"),
    b" \n\t ": ("invalid_id", "empty message"),
    b'{"video_id": ""}': ("invalid_id", "empty video_id"),
    b"a" * 10_000: ("invalid_id", "10000 characters"),
    b"bad\x00nul.mp4": ("invalid_id", "control characters"),
    b"line1\nline2.mp4": ("invalid_id", "control characters"),
    b'{"video_id": "\\ud800.mp4"}': ("invalid_id", "control characters"),  # a lone surrogate
}


def _deep(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _error_cases(prefix: str, urls: dict[str, str]) -> dict[str, tuple[dict | str, str, str]]:
    """video_id -> (what to publish, error kind, words of its message)."""
    plain = {
        "../outside.mp4": ("invalid_id", "'..' components"),
        "good/../../etc/passwd": ("invalid_id", "'..' components"),
        "/etc/passwd": ("invalid_id", "absolute paths must lie under the video root"),
        "bad/escape.mp4": ("invalid_id", "outside the video root"),
        "clipguard:verdict:x": ("disallowed_source", "scheme 'clipguard'"),
        f"{prefix}:verdict:good/face_0.mp4": ("disallowed_source", f"scheme '{prefix.lower()}'"),
        "concat:good/face_0.mp4|good/face_1.mp4": ("disallowed_source", "scheme 'concat'"),
        "subfile:,,start,0,end,0,,:good/face_0.mp4": ("disallowed_source", "scheme 'subfile'"),
        "data:video/mp4;base64,AAAAGGZ0eXBpc29t": ("disallowed_source", "scheme 'data'"),
        "bad/text.mp4": ("not_a_video", "text.mp4"),
        "bad/zero.mp4": ("not_a_video", "is empty"),
        "bad/image.mp4": ("not_a_video", "not a supported video container"),
        "bad/fifo.mp4": ("not_a_video", "not a regular file"),
        "bad/truncated.mp4": ("corrupt", "moov atom not found"),
        "bad/huge.mov": ("too_large", "16000x16000 exceeds max_pixels"),
        "bad/long.mp4": ("too_long", "exceeds max_duration_s"),
        "bad/audio.mp4": ("no_video_stream", "streams: audio"),
        "bad/missing.mp4": ("not_found", "no file at"),
    }
    cases: dict[str, tuple[dict | str, str, str]] = {vid: (vid, kind, words) for vid, (kind, words) in plain.items()}
    jobs = {
        "uri/file-outside": ({"uri": "file:///etc/passwd"}, "disallowed_source", "outside the video root"),
        "uri/ftp": ({"uri": "ftp://127.0.0.1/x.mp4"}, "disallowed_source", "scheme 'ftp'"),
        "uri/gopher": ({"uri": "gopher://127.0.0.1:70/1"}, "disallowed_source", "scheme 'gopher'"),
        "uri/malformed": ({"uri": "http://[::1/x.mp4"}, "invalid_id", "malformed"),
        "uri/not-a-string": ({"uri": 5}, "bad_message", "'uri' must be a string"),
        "uri/redirect": ({"uri": urls["redirect"]}, "disallowed_source", "redirect"),
        "uri/trickle": ({"uri": urls["trickle"]}, "timeout", f"exceeded {HANG_LIMIT_S:.1f}s"),
        "uri/silent": ({"uri": urls["silent"]}, "timeout", ""),
        "meta/list": ({"metadata": [1, 2]}, "bad_message", "'metadata' must be a JSON object"),
        "meta/deep": ({"metadata": {"m": _deep(MAX_METADATA_DEPTH + 5)}}, "bad_message", "nested deeper"),
    }
    for vid, (job, kind, words) in jobs.items():
        cases[vid] = ({"video_id": vid, **job}, kind, words)
    return cases


def test_hostile_inputs_through_the_stream_each_get_their_exact_error_and_the_stream_keeps_going(
    kafka_config, redis_config, ray_address, video_root
):
    cfg = stream_config(
        kafka_config.model_copy(update={"partitions": 2}), redis_config, ray_address, video_root,
        source={"timeout_s": HANG_LIMIT_S, "allow_private_hosts": True},  # loopback servers reach ffmpeg
        stream={"max_in_flight": 6},
    )  # fmt: skip
    store = VerdictStore(cfg.redis)
    with (
        file_server(video_root / "good/face_2.mp4") as target,
        redirect_server(f"{target.url}/target.mp4") as redirect,
        trickle_server() as trickle,
        vf.hanging_server() as silent,
    ):
        urls = {"redirect": f"{redirect.url}/a.mp4", "trickle": f"{trickle.url}/live.mp4", "silent": silent}
        errors = _error_cases(cfg.redis.key_prefix, urls)
        good = {"good/face_0.mp4": "done", "good/empty_0.mp4": "no_face", "good/face_1.mp4": "done",
                "bad/corrupt_middle.mp4": "done"}  # fmt: skip
        # good first, hostile in the middle (each error case followed by a dead letter), good last
        items: list = ["good/face_0.mp4", "good/empty_0.mp4"]
        dead = list(DEAD_LETTERS)
        for i, (what, _kind, _words) in enumerate(errors.values()):
            items.append(what)
            if i < len(dead):
                items.append(dead[i])
        items += dead[len(errors) :] + ["bad/corrupt_middle.mp4", "good/face_1.mp4"]
        n_published = publish(cfg.kafka, items)
        all_ids = [*good, *errors]

        def done() -> bool:
            return all(store.get_raw(v) for v in all_ids) and len(store.dead_letters()) >= len(DEAD_LETTERS)

        start = time.monotonic()
        totals = run_until(cfg, done, timeout_s=180)
        elapsed = time.monotonic() - start

    assert n_published == len(good) + len(errors) + len(DEAD_LETTERS)
    for vid, status in good.items():
        v = store.get(vid)
        assert v.status == status, (vid, v.status, v.error_kind, v.error_message)
    # partly corrupt: ffmpeg conceals the broken macroblocks and the video is judged on what decodes
    assert 1 <= store.get("bad/corrupt_middle.mp4").frames_sampled <= 4
    wrong = {}
    for vid, (_what, kind, words) in errors.items():
        v = store.get(vid)
        if not (v.status == "error" and v.error_kind == kind and words in (v.error_message or "")):
            wrong[vid] = (v.status, v.error_kind, v.error_message)
    assert not wrong, json.dumps(wrong, indent=1)
    # the redirect's target was never fetched: ffmpeg refused to follow the 302
    assert redirect.requests and not target.requests, (redirect.requests, target.requests)
    assert store.get("good/face_0.mp4").status == "done"  # an ID naming its key did not overwrite it
    letters = {e["value_preview"]: e for _, e in store.dead_letters()}
    for value, (kind, words) in DEAD_LETTERS.items():
        letter = letters[repr(value[:200])]
        assert letter["kind"] == kind and words in letter["message"], (value[:40], letter)
    assert totals.dead_letters == len(DEAD_LETTERS)
    assert_stream_invariants(cfg, store, all_ids)
    print(f"\nhostile stream: {n_published} messages ({len(errors)} error verdicts, {len(DEAD_LETTERS)} dead "
          f"letters, {len(good)} good) in {elapsed:.1f}s")  # fmt: skip


# --- unit level: cheaper than a stream, same code paths ----------------------------------------
def test_parse_message_deep_json_is_a_dead_letter_and_deep_metadata_an_error_not_a_crash():
    parsed = parse_message(DEEP_JSON)
    assert parsed.dead_letter is not None and parsed.dead_letter.kind == "bad_message"
    value = json.dumps({"video_id": "v.mp4", "metadata": {"m": _deep(500)}}).encode()  # 1 kB
    parsed = parse_message(value)
    assert parsed.job is not None and parsed.error is not None and parsed.job.metadata == {}
    encode_verdict(error_verdict(parsed.job, "m-1", parsed.error))  # storable (this recursed before)


SAMPLING = SamplingConfig(num_frames=4, max_side=320)


def _decoder(root, **source) -> FrameDecoder:
    return FrameDecoder(SourceConfig(video_root=root, **source), SAMPLING)


def test_redirect_to_loopback_is_refused_at_the_first_hop_without_private_hosts(video_root):
    with file_server(video_root / "good/face_0.mp4") as target, redirect_server(f"{target.url}/v.mp4") as redirect:
        with pytest.raises(DisallowedSourceError, match="non-public address 127.0.0.1"):
            _decoder(video_root).decode(VideoJob("r", uri=f"{redirect.url}/a.mp4"))
        assert redirect.requests == [] and target.requests == []


def test_redirect_from_a_public_host_is_not_followed_to_loopback(video_root):
    """The gap a host check alone leaves: the first hop is public, the 302 points at loopback."""
    from workers.video_source import VideoSourceResolver

    with file_server(video_root / "good/face_0.mp4") as target, redirect_server(f"{target.url}/v.mp4") as redirect:
        port = redirect.url.rsplit(":", 1)[1]
        config = SourceConfig(video_root=video_root, timeout_s=10)
        # "cdn.test" resolves to a public address for the check, and ffmpeg reaches it as 127.0.0.1
        resolver = VideoSourceResolver(config, host_lookup=lambda host, p: ["93.184.216.34"])
        job = VideoJob("r", uri=f"http://127.0.0.1:{port}/a.mp4")
        decoder = FrameDecoder(config, SAMPLING, resolver=resolver)
        with pytest.raises(DisallowedSourceError, match="redirect"):
            decoder.decode(job)
        assert redirect.requests and target.requests == [], "ffmpeg followed the redirect"
        # control: the same file served directly decodes
        direct = FrameDecoder(config, SAMPLING, resolver=resolver).decode(VideoJob("d", uri=f"{target.url}/v"))
        assert len(direct.frames) == 4


def test_never_ending_http_body_hits_the_time_limit(video_root):
    with trickle_server() as trickle:
        start = time.monotonic()
        with pytest.raises(DecodeTimeoutError, match="exceeded 2.0s and was killed"):
            _decoder(video_root, timeout_s=2.0, allow_private_hosts=True).decode(VideoJob("t", uri=f"{trickle.url}/x"))
        assert time.monotonic() - start < 8
        assert trickle.requests


def test_fifo_under_the_root_is_refused_before_ffmpeg_opens_it(video_root):
    start = time.monotonic()
    with pytest.raises(NotAVideoError, match="not a regular file"):
        _decoder(video_root, timeout_s=2.0).decode(VideoJob("bad/fifo.mp4"))
    assert time.monotonic() - start < 1.0  # refused by stat(), never opened (opening a FIFO blocks)


@pytest.mark.parametrize("vid", [f"p-{uuid.uuid4().hex[:4]}:verdict:x", "clipguard:verdicts", "a:b"])
def test_ids_with_key_separators_stay_inside_their_own_key(redis_config, vid):
    from clipguard.contracts import Verdict
    from pipeline.verdict_keys import verdict_key

    store = VerdictStore(redis_config)
    store.put(Verdict("x", "no_face", "m-1"))
    store.put(Verdict(vid, "error", "m-1", error_kind="disallowed_source", error_message="scheme"))
    assert store.get("x").status == "no_face"
    keys = set(store.client.scan_iter(f"{redis_config.key_prefix}:*"))
    assert keys == {verdict_key(redis_config.key_prefix, "x"), verdict_key(redis_config.key_prefix, vid),
                    f"{redis_config.key_prefix}:verdicts"}  # fmt: skip


@pytest.mark.parametrize("vid", ["bad/truncated.mp4", "bad/text.mp4", "bad/image.mp4"])
def test_error_message_of_a_bad_file_is_the_same_on_every_try(video_root, vid):
    """A redelivered bad video must not look new: ffmpeg's '[mov @ 0x55d4...]' line prefixes differ per run."""
    messages = set()
    for _ in range(3):
        with pytest.raises(DecodeError) as info:
            _decoder(video_root).decode(VideoJob(vid))
        messages.add(info.value.message)
    assert len(messages) == 1, messages
    assert " @ 0x" not in messages.pop()
