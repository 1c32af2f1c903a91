"""Video ID / URI resolution: root confinement, scheme and host allow-lists, resolvers."""

from __future__ import annotations

import sys
import time

import pytest

from clipguard.config import SourceConfig
from clipguard.contracts import VideoJob
from clipguard.errors import (
    ConfigError,
    DisallowedSourceError,
    InvalidVideoIdError,
    NotAVideoError,
    VideoNotFoundError,
    VideoTooLargeError,
)
from tests import video_factory as vf
from workers.video_source import (
    FORMAT_WHITELIST,
    VideoSourceResolver,
    is_public_address,
    make_s3_resolver,
    redact_url,
)

PUBLIC_IP = "93.184.216.34"


def fake_lookup(table):
    """A DNS stand-in: host -> addresses; unknown hosts fail like getaddrinfo."""

    def lookup(host, port):
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    return lookup


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    (root / "clip.mp4").write_bytes(b"\x00" * 64)
    (root / "sub" / "nested.mp4").write_bytes(b"\x00" * 64)
    return root


def resolver_for(root, lookup=None, **overrides):
    config = SourceConfig(video_root=root, **overrides)
    return VideoSourceResolver(config, host_lookup=lookup or fake_lookup({"cdn.example.com": [PUBLIC_IP]}))


def test_resolve_plain_id_under_root_gives_file_location_and_file_whitelist(root):
    src = resolver_for(root).resolve(VideoJob(video_id="clip.mp4"))
    assert src.location == f"file:{root / 'clip.mp4'}"
    assert src.protocol_whitelist == "file"
    assert src.is_local and src.size_bytes == 64
    assert src.input_options(5.0) == {"protocol_whitelist": "file", "format_whitelist": FORMAT_WHITELIST}


def test_resolve_nested_id_and_uri_without_scheme(root):
    r = resolver_for(root)
    assert r.resolve(VideoJob(video_id="sub/nested.mp4")).local_path == root / "sub" / "nested.mp4"
    assert r.resolve(VideoJob(video_id="x", uri="sub/nested.mp4")).local_path == root / "sub" / "nested.mp4"


@pytest.mark.parametrize(
    "bad_id",
    [
        "../clip.mp4",
        "sub/../../clip.mp4",
        "/etc/passwd",
        "clip\x00.mp4",
        "clip.mp4\n",
        "cl\rip.mp4",
        "clip\x7f.mp4",
        "",
        "sub\\..\\clip.mp4",
        "a" * 2000,
    ],
)
def test_resolve_escaping_or_malformed_id_raises_invalid_id(root, bad_id):
    with pytest.raises(InvalidVideoIdError):
        resolver_for(root).resolve(VideoJob(video_id=bad_id))


def test_resolve_absolute_path_under_the_root_is_the_same_file(root, tmp_path):
    r = resolver_for(root)
    assert r.resolve(VideoJob(video_id=str(root / "sub" / "nested.mp4"))).local_path == root / "sub" / "nested.mp4"
    # the root given through a symlink: the producer's path and the worker's may differ only by it
    (tmp_path / "mnt").symlink_to(root)
    via_link = resolver_for(tmp_path / "mnt")
    assert via_link.resolve(VideoJob(video_id=str(tmp_path / "mnt" / "clip.mp4"))).local_path == root / "clip.mp4"
    assert via_link.resolve(VideoJob(video_id=str(root / "clip.mp4"))).local_path == root / "clip.mp4"


@pytest.mark.parametrize("where", ["outside", "sibling", "symlink-out"])
def test_resolve_absolute_path_outside_the_root_is_refused(root, tmp_path, where):
    (tmp_path / "videos-2").mkdir()
    (tmp_path / "videos-2" / "clip.mp4").write_bytes(b"\x00" * 64)  # shares the root's name as a prefix
    (root / "out.mp4").symlink_to(tmp_path / "videos-2" / "clip.mp4")
    path = {"outside": "/etc/passwd", "sibling": str(tmp_path / "videos-2" / "clip.mp4"),
            "symlink-out": str(root / "out.mp4")}[where]  # fmt: skip
    with pytest.raises(InvalidVideoIdError, match="video root"):
        resolver_for(root).resolve(VideoJob(video_id=path))


def test_resolve_symlink_out_of_root_raises_invalid_id(root, tmp_path):
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"\x00" * 64)
    (root / "link.mp4").symlink_to(outside)
    with pytest.raises(InvalidVideoIdError, match="outside the video root"):
        resolver_for(root).resolve(VideoJob(video_id="link.mp4"))


def test_resolve_symlink_within_root_is_followed(root):
    (root / "alias.mp4").symlink_to(root / "sub" / "nested.mp4")
    assert resolver_for(root).resolve(VideoJob(video_id="alias.mp4")).local_path == root / "sub" / "nested.mp4"


@pytest.mark.parametrize(
    "uri",
    [
        "concat:clip.mp4|clip.mp4",
        "subfile:clip.mp4",
        "data:video/mp4;base64,AAAA",
        "pipe:0",
        "ftp://cdn.example.com/a.mp4",
        "rtmp://cdn.example.com/live",
        "gopher://cdn.example.com/",
        "file:///etc/passwd",
        "FILE:///etc/passwd",
    ],
)
def test_resolve_disallowed_scheme_or_file_outside_root_raises_disallowed(root, uri):
    with pytest.raises(DisallowedSourceError):
        resolver_for(root).resolve(VideoJob(video_id="v1", uri=uri))


def test_resolve_file_uri_inside_root_is_local(root):
    src = resolver_for(root).resolve(VideoJob(video_id="v1", uri=f"file://{root}/clip.mp4"))
    assert src.local_path == root / "clip.mp4" and src.protocol_whitelist == "file"


def test_resolve_file_uri_with_host_raises_disallowed(root):
    with pytest.raises(DisallowedSourceError, match="without host"):
        resolver_for(root).resolve(VideoJob(video_id="v1", uri=f"file://evil.example.com{root}/clip.mp4"))


def test_resolve_scheme_not_in_allowed_schemes_raises_disallowed(root):
    r = resolver_for(root, allowed_schemes=("file",))
    with pytest.raises(DisallowedSourceError, match="'https' is not allowed"):
        r.resolve(VideoJob(video_id="v1", uri="https://cdn.example.com/a.mp4"))


def test_resolve_public_https_url_gets_url_whitelist_and_redacted_display(root):
    url = "https://user:pw@cdn.example.com/v/a.mp4?X-Amz-Signature=secret#t=1"
    src = resolver_for(root).resolve(VideoJob(video_id="v1", uri=url))
    assert src.location == url and not src.is_local
    assert src.protocol_whitelist == "http,https,tcp,tls"
    assert src.display == "https://cdn.example.com/v/a.mp4"
    assert src.input_options(2.5)["rw_timeout"] == "2500000"


@pytest.mark.parametrize(
    ("host", "addresses"),
    [
        ("localhost", ["127.0.0.1", "::1"]),
        ("intranet", ["10.1.2.3"]),
        ("router", ["192.168.1.1"]),
        ("metadata", ["169.254.169.254"]),
        ("cgnat", ["100.64.0.1"]),
        ("mapped", ["::ffff:127.0.0.1"]),
        ("ula", ["fd00::1"]),
        ("zero", ["0.0.0.0"]),
        ("mixed", [PUBLIC_IP, "10.0.0.1"]),
    ],
)
def test_resolve_url_to_private_address_raises_disallowed(root, host, addresses):
    r = resolver_for(root, lookup=fake_lookup({host: addresses}))
    with pytest.raises(DisallowedSourceError, match="non-public address"):
        r.resolve(VideoJob(video_id="v1", uri=f"http://{host}/a.mp4"))


def test_resolve_private_host_allowed_when_configured(root):
    r = resolver_for(root, lookup=fake_lookup({}), allow_private_hosts=True)
    assert r.resolve(VideoJob(video_id="v1", uri="http://127.0.0.1:8080/a.mp4")).location.startswith("http://127")


@pytest.mark.parametrize("uri", ["http://cdn.example.com:port/a.mp4", "http://[::1/a.mp4"])
def test_resolve_malformed_url_raises_invalid_id(root, uri):
    with pytest.raises(InvalidVideoIdError, match="malformed"):
        resolver_for(root).resolve(VideoJob(video_id="v1", uri=uri))


def test_resolver_urls_may_be_longer_than_ids(root):
    r = resolver_for(root, allowed_schemes=("gs",))
    r.register("gs", lambda uri: "https://cdn.example.com/a.mp4?token=" + "x" * 3000)
    assert len(r.resolve(VideoJob(video_id="v1", uri="gs://b/a.mp4")).location) > 3000


def test_resolve_unresolvable_host_raises_not_found(root):
    with pytest.raises(VideoNotFoundError, match="does not resolve"):
        resolver_for(root).resolve(VideoJob(video_id="v1", uri="https://nowhere.invalid/a.mp4"))


def test_is_public_address_examples():
    assert is_public_address(PUBLIC_IP) and is_public_address("2606:2800:220:1:248:1893:25c8:1946")
    assert not any(is_public_address(a) for a in ["127.0.0.1", "::1", "10.0.0.1", "169.254.1.1", "224.0.0.1"])


def test_redact_url_drops_credentials_and_query():
    assert redact_url("https://u:p@h.example.com:8443/a/b.mp4?sig=1") == "https://h.example.com:8443/a/b.mp4"


def test_resolve_missing_file_raises_not_found(root):
    with pytest.raises(VideoNotFoundError, match="no file"):
        resolver_for(root).resolve(VideoJob(video_id="absent.mp4"))


def test_resolve_directory_raises_not_a_video(root):
    with pytest.raises(NotAVideoError, match="not a regular file"):
        resolver_for(root).resolve(VideoJob(video_id="sub"))


def test_resolve_fifo_is_refused_without_blocking(root):
    vf.make_fifo(root / "pipe.mp4")
    start = time.monotonic()
    with pytest.raises(NotAVideoError, match="not a regular file"):
        resolver_for(root).resolve(VideoJob(video_id="pipe.mp4"))
    assert time.monotonic() - start < 1.0


def test_resolve_empty_file_raises_not_a_video(root):
    vf.make_zero_byte(root / "empty.mp4")
    with pytest.raises(NotAVideoError, match="empty"):
        resolver_for(root).resolve(VideoJob(video_id="empty.mp4"))


def test_resolve_file_over_size_limit_raises_too_large(root):
    with pytest.raises(VideoTooLargeError, match="max_file_bytes"):
        resolver_for(root, max_file_bytes=10).resolve(VideoJob(video_id="clip.mp4"))


def test_errors_carry_the_video_id(root):
    with pytest.raises(VideoNotFoundError) as err:
        resolver_for(root).resolve(VideoJob(video_id="cam7/absent.mp4"))
    assert "cam7/absent.mp4" in str(err.value) and err.value.kind == "not_found"


class FakeS3Client:
    def __init__(self):
        self.calls = []

    def generate_presigned_url(self, op, Params, ExpiresIn):  # boto3's keyword names
        self.calls.append((op, Params, ExpiresIn))
        return f"https://bucket.s3.example.com/{Params['Key']}?X-Amz-Signature=abc"


def test_s3_resolver_presigns_and_result_is_host_checked(root):
    client = FakeS3Client()
    r = VideoSourceResolver(
        SourceConfig(video_root=root),
        {"s3": make_s3_resolver(expires_s=60, client_factory=lambda: client)},
        host_lookup=fake_lookup({"bucket.s3.example.com": [PUBLIC_IP]}),
    )
    src = r.resolve(VideoJob(video_id="v1", uri="s3://bucket/path/to/a.mp4"))
    assert client.calls == [("get_object", {"Bucket": "bucket", "Key": "path/to/a.mp4"}, 60)]
    assert src.location.endswith("?X-Amz-Signature=abc") and "Signature" not in src.display

    private = VideoSourceResolver(
        SourceConfig(video_root=root),
        {"s3": make_s3_resolver(client_factory=lambda: client)},
        host_lookup=fake_lookup({"bucket.s3.example.com": ["10.0.0.5"]}),
    )
    with pytest.raises(DisallowedSourceError):
        private.resolve(VideoJob(video_id="v1", uri="s3://bucket/a.mp4"))


def test_s3_resolver_without_boto3_raises_config_error(root, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` fail
    with pytest.raises(ConfigError, match="boto3"):
        resolver_for(root).resolve(VideoJob(video_id="v1", uri="s3://bucket/a.mp4"))


def test_s3_uri_without_key_raises_invalid_id(root):
    with pytest.raises(InvalidVideoIdError, match="bucket/key"):
        resolver_for(root).resolve(VideoJob(video_id="v1", uri="s3://bucket"))


def test_custom_resolver_registered_for_allowed_scheme(root):
    r = resolver_for(root, allowed_schemes=("gs",))
    r.register("gs", lambda uri: "https://cdn.example.com/" + uri.removeprefix("gs://"))
    assert r.resolve(VideoJob(video_id="v1", uri="gs://b/a.mp4")).location == "https://cdn.example.com/b/a.mp4"


def test_custom_resolver_cannot_return_a_local_file(root):
    r = resolver_for(root, allowed_schemes=("gs",))
    r.register("gs", lambda uri: "file:///etc/passwd")
    with pytest.raises(DisallowedSourceError, match="not an http"):
        r.resolve(VideoJob(video_id="v1", uri="gs://b/a.mp4"))


def test_allowed_scheme_without_resolver_raises_disallowed(root):
    with pytest.raises(DisallowedSourceError, match="no resolver"):
        resolver_for(root, allowed_schemes=("ftp",)).resolve(VideoJob(video_id="v1", uri="ftp://h/a.mp4"))
