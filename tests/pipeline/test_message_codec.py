import json

import pytest

from clipguard.contracts import SourceRef
from pipeline.message_codec import encode_job, parse_message

SRC = SourceRef("t", 0, 5)


def test_parse_message_plain_id():
    parsed = parse_message(b"  clips/a.mp4\n", SRC)
    assert parsed.job.video_id == "clips/a.mp4"
    assert parsed.job.uri is None and parsed.job.source == SRC
    assert parsed.error is None and parsed.dead_letter is None


@pytest.mark.parametrize(
    ("value", "video_id", "metadata"),
    [
        # kafka-python with value_serializer=json.dumps: the ID arrives quoted
        (json.dumps("clips/a.mp4").encode(), "clips/a.mp4", {}),
        (json.dumps("vidéo ü.mp4").encode(), "vidéo ü.mp4", {}),  # \u escapes
        # ... and a job serialised twice arrives as a JSON string holding JSON
        (json.dumps(json.dumps({"video_id": "v2", "tenant": "acme"})).encode(), "v2", {"tenant": "acme"}),
        # a plain ID that merely starts with a quote or bracket stays as it is
        (b'"quoted clip.mp4', '"quoted clip.mp4', {}),
        (b"[2026] clip.mp4", "[2026] clip.mp4", {}),
        (b"42", "42", {}),
    ],
)
def test_parse_message_json_serialised_ids(value, video_id, metadata):
    parsed = parse_message(value, SRC)
    assert parsed.dead_letter is None and parsed.error is None
    assert (parsed.job.video_id, parsed.job.metadata) == (video_id, metadata)


def test_parse_message_json_copies_metadata_and_extra_keys():
    value = json.dumps({"video_id": "v1", "uri": "https://x/y.mp4", "metadata": {"user": 7}, "tenant": "acme"})
    parsed = parse_message(value.encode(), SRC)
    assert parsed.job.video_id == "v1" and parsed.job.uri == "https://x/y.mp4"
    assert parsed.job.metadata == {"user": 7, "tenant": "acme"}


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (b"\xff\xfe\x00garbage", "bad_message"),
        (b"{not json", "bad_message"),
        (b'{"uri": "https://x"}', "bad_message"),
        (b'{"video_id": 5}', "bad_message"),
        (b"", "invalid_id"),
        (b"   ", "invalid_id"),
        (b"a\x00b", "invalid_id"),
        (b"line1\nline2", "invalid_id"),
        (b"x" * 10_000, "invalid_id"),
        (b"y" * 70_000, "too_large"),
        (b'["a.mp4", "b.mp4"]', "bad_message"),
        (b'""', "invalid_id"),
        (b'"a\\u0000b"', "invalid_id"),
        (b'"{\\"uri\\": 1}"', "bad_message"),
    ],
)
def test_parse_message_unusable_values_become_dead_letters(value, kind):
    parsed = parse_message(value, SRC, max_bytes=64 * 1024)
    assert parsed.job is None
    assert parsed.dead_letter.kind == kind
    assert parsed.dead_letter.source == SRC
    assert len(parsed.dead_letter.value_preview) < 1000


def test_parse_message_bad_uri_type_is_an_error_verdict_not_a_dead_letter():
    parsed = parse_message(b'{"video_id": "v", "uri": 3}', SRC)
    assert parsed.job.video_id == "v"
    assert parsed.error.kind == "bad_message"


@pytest.mark.parametrize("vid", ["../../etc/passwd", "/abs/path.mp4", "a:b:c", "clipguard:verdict:x"])
def test_parse_message_path_like_ids_are_kept_for_the_source_to_judge(vid):
    assert parse_message(vid.encode(), SRC).job.video_id == vid


def test_encode_job_round_trips():
    assert parse_message(encode_job("v")).job.video_id == "v"
    job = parse_message(encode_job("v", "https://h/v.mp4", {"k": 1})).job
    assert (job.video_id, job.uri, job.metadata) == ("v", "https://h/v.mp4", {"k": 1})
