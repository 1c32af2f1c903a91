"""Turn a job's video ID or URI into something ffmpeg may safely open.

Rules, in order:

* A job without ``uri`` names a file by a path relative to
  ``SourceConfig.video_root``; so does a ``uri`` without a scheme. The ID must
  be non-empty, at most 1024 characters, free of control characters (NUL,
  newline...) and backslashes, relative, without ``..`` components, and after
  resolving symlinks it must still lie inside the root; otherwise
  :class:`InvalidVideoIdError`.
* A ``uri`` with a scheme must use one of ``SourceConfig.allowed_schemes`` that
  has a resolver; otherwise :class:`DisallowedSourceError` (``concat:``,
  ``subfile:``, ``data:``... never reach ffmpeg). ``file://`` URIs must point
  inside the root, else :class:`DisallowedSourceError`.
* Every other scheme goes through a resolver (``scheme -> callable(uri) ->
  http(s) URL``; ``http``/``https`` map to themselves, ``s3`` presigns with
  boto3). The resulting URL is checked the same way whatever produced it: its
  host must not resolve to a loopback, private, link-local or otherwise
  non-global address unless ``SourceConfig.allow_private_hosts``.
* A local file must be a regular file (a FIFO or device would block ffmpeg),
  non-empty and within ``max_file_bytes``.

ffmpeg is then given ``file:<absolute path>`` (so no part of a file name is ever
read as a protocol) with ``-protocol_whitelist file``, or the URL with
``-protocol_whitelist http,https,tcp,tls`` and ``-max_redirects 0``: ffmpeg
would follow a redirect without our host check, so a URL that redirects fails
(``disallowed_source``, see ``workers/video_probe.py``); publish its final location.

Known gap: ffmpeg resolves the host again when it connects, so a host whose
DNS answer changes between our check and that connection (DNS rebinding) is not
caught here; deployments that need that guarantee must egress through a proxy.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from clipguard.config import SourceConfig
from clipguard.contracts import VideoJob
from clipguard.errors import (
    ConfigError,
    DecodeError,
    DisallowedSourceError,
    InvalidVideoIdError,
    NotAVideoError,
    VideoNotFoundError,
    VideoTooLargeError,
)

logger = logging.getLogger(__name__)

LOCAL_PROTOCOLS = "file"
URL_PROTOCOLS = "http,https,tcp,tls"
# Demuxers ffmpeg may use. Leaves out playlist/indirection formats (hls, concat,
# image2 sequences...) that open further files or URLs, and still images.
FORMAT_WHITELIST = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,ogg,asf"
MAX_ID_CHARS = 1024
MAX_URL_CHARS = 8192  # a resolver's URL (presigned URLs with session tokens run past 1 kB)
_URL_SCHEMES = ("http", "https")

Resolver = Callable[[str], str]
"""Maps a URI of one scheme to the http(s) URL ffmpeg should read."""

HostLookup = Callable[[str, int], list[str]]
"""Maps (host, port) to the IP addresses it resolves to."""


@dataclass(frozen=True)
class ResolvedSource:
    """A video location that passed every check, ready for ffprobe/ffmpeg.

    Attributes:
        video_id: The job's video ID, for messages.
        location: What ffmpeg opens: ``file:/abs/path`` or an http(s) URL.
        protocol_whitelist: Value of ffmpeg's ``-protocol_whitelist``.
        display: Safe to log: the path, or the URL without credentials or query
            (a presigned URL's query is a credential).
        local_path: The resolved file for local sources, else None.
        size_bytes: File size for local sources, else None (the probe reports it).
    """

    video_id: str
    location: str
    protocol_whitelist: str
    display: str
    local_path: Path | None = None
    size_bytes: int | None = None

    @property
    def is_local(self) -> bool:
        """True for files under the video root."""
        return self.local_path is not None

    def input_options(self, timeout_s: float) -> dict[str, str]:
        """ffmpeg/ffprobe input options that confine what opening this source may touch.

        Args:
            timeout_s: For URLs, also the socket read/write inactivity limit.

        Returns:
            Option name (without the dash) -> value.
        """
        options = {"protocol_whitelist": self.protocol_whitelist, "format_whitelist": FORMAT_WHITELIST}
        if not self.is_local:
            options["rw_timeout"] = str(int(timeout_s * 1_000_000))
            # A redirect's target never went through the host check: refuse to follow it.
            options["max_redirects"] = "0"
        return options


class VideoSourceResolver:
    """Resolves :class:`VideoJob` IDs/URIs to :class:`ResolvedSource` under a :class:`SourceConfig`.

    Args:
        config: The source section of the configuration.
        resolvers: Extra or replacement ``scheme -> resolver`` entries, merged
            over the defaults (``http``, ``https``, ``s3``). A scheme is usable
            only if it is also in ``config.allowed_schemes``.
        host_lookup: DNS lookup used for the private-address check (tests
            inject a fake one); defaults to ``socket.getaddrinfo``.
    """

    def __init__(
        self,
        config: SourceConfig,
        resolvers: Mapping[str, Resolver] | None = None,
        *,
        host_lookup: HostLookup | None = None,
    ) -> None:
        self._config = config
        self._resolvers: dict[str, Resolver] = default_resolvers()
        for scheme, resolver in (resolvers or {}).items():
            self.register(scheme, resolver)
        self._host_lookup = host_lookup or lookup_host

    def register(self, scheme: str, resolver: Resolver) -> None:
        """Add or replace the resolver of ``scheme`` (lower-cased)."""
        self._resolvers[scheme.lower()] = resolver

    def resolve(self, job: VideoJob) -> ResolvedSource:
        """Check and resolve one job's video location.

        Args:
            job: The job; ``job.uri`` wins over ``job.video_id`` when set.

        Returns:
            A :class:`ResolvedSource` that ffprobe/ffmpeg can open.

        Raises:
            InvalidVideoIdError: Malformed ID/URI or one escaping the root.
            DisallowedSourceError: Scheme or host not allowed.
            VideoNotFoundError: Missing file or unresolvable host.
            NotAVideoError: Not a regular file, or empty.
            VideoTooLargeError: File larger than ``max_file_bytes``.
            ConfigError: A resolver's dependency is missing (e.g. boto3 for s3).
        """
        vid = job.video_id
        text = job.uri if job.uri is not None else job.video_id
        _check_text(text, vid)
        scheme = _scheme_of(text, vid)
        if scheme is None:
            return self._local(self._path_under_root(text, vid), vid)
        if scheme not in self._config.allowed_schemes:
            allowed = ", ".join(self._config.allowed_schemes)
            msg = f"video {vid!r}: scheme {scheme!r} is not allowed (allowed: {allowed})"
            raise DisallowedSourceError(msg)
        if scheme == "file":
            return self._local(self._file_uri_path(text, vid), vid)
        resolver = self._resolvers.get(scheme)
        if resolver is None:
            msg = f"video {vid!r}: scheme {scheme!r} is allowed but no resolver is registered for it"
            raise DisallowedSourceError(msg)
        url = resolver(text)
        return self._url(url, vid)

    # --- local files -----------------------------------------------------------
    def _root(self) -> Path:
        return Path(os.path.realpath(self._config.video_root))

    def _path_under_root(self, rel: str, vid: str) -> Path:
        if ".." in Path(rel).parts:
            msg = f"video {vid!r}: '..' components are not allowed"
            raise InvalidVideoIdError(msg)
        root = self._root()
        if rel.startswith("/"):
            # The full path of a file the producer sees on the same mount: accepted under the
            # root only (as configured or with its symlinks resolved), refused like any escape.
            given = Path(os.path.abspath(rel))
            if not (given.is_relative_to(root) or given.is_relative_to(self._config.video_root.absolute())):
                msg = f"video {vid!r}: absolute paths must lie under the video root"
                raise InvalidVideoIdError(msg)
            path = Path(os.path.realpath(given))
        else:
            path = Path(os.path.realpath(root / rel))
        if not path.is_relative_to(root):
            msg = f"video {vid!r}: resolves outside the video root (symlink?)"
            raise InvalidVideoIdError(msg)
        return path

    def _file_uri_path(self, uri: str, vid: str) -> Path:
        parts = _split(uri, vid)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            msg = f"video {vid!r}: file URIs must be file:///absolute/path without host, query or fragment"
            raise DisallowedSourceError(msg)
        raw = unquote(parts.path)
        _check_text(raw, vid)
        root = self._root()
        path = Path(os.path.realpath(raw))
        if not raw.startswith("/") or not path.is_relative_to(root):
            msg = f"video {vid!r}: file URI points outside the video root"
            raise DisallowedSourceError(msg)
        return path

    def _local(self, path: Path, vid: str) -> ResolvedSource:
        try:
            st = path.stat()
        except FileNotFoundError:
            msg = f"video {vid!r}: no file at {path}"
            raise VideoNotFoundError(msg) from None
        except NotADirectoryError:
            msg = f"video {vid!r}: no file at {path}"
            raise VideoNotFoundError(msg) from None
        except PermissionError as exc:
            msg = f"video {vid!r}: {path} is not readable ({exc.strerror})"
            raise DecodeError(msg) from exc
        if not stat.S_ISREG(st.st_mode):
            # FIFOs, devices and directories would block or mislead ffmpeg.
            msg = f"video {vid!r}: {path} is not a regular file"
            raise NotAVideoError(msg)
        if st.st_size == 0:
            msg = f"video {vid!r}: {path} is empty"
            raise NotAVideoError(msg)
        if st.st_size > self._config.max_file_bytes:
            msg = f"video {vid!r}: {st.st_size} bytes exceeds max_file_bytes={self._config.max_file_bytes}"
            raise VideoTooLargeError(msg)
        return ResolvedSource(
            video_id=vid,
            location=f"file:{path}",
            protocol_whitelist=LOCAL_PROTOCOLS,
            display=str(path),
            local_path=path,
            size_bytes=st.st_size,
        )

    # --- URLs ------------------------------------------------------------------
    def _url(self, url: str, vid: str) -> ResolvedSource:
        _check_text(url, vid, max_chars=MAX_URL_CHARS)
        parts = _split(url, vid)
        scheme = parts.scheme.lower()
        try:
            host, port = parts.hostname, parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:  # a port that is not a number
            msg = f"video {vid!r}: malformed URL ({exc})"
            raise InvalidVideoIdError(msg) from exc
        if scheme not in _URL_SCHEMES or not host:
            msg = f"video {vid!r}: resolved location {redact_url(url)!r} is not an http(s) URL with a host"
            raise DisallowedSourceError(msg)
        if not self._config.allow_private_hosts:
            self._check_public_host(host, port, vid)
        return ResolvedSource(video_id=vid, location=url, protocol_whitelist=URL_PROTOCOLS, display=redact_url(url))

    def _check_public_host(self, host: str, port: int, vid: str) -> None:
        try:
            addresses = self._host_lookup(host, port)
        except OSError as exc:
            msg = f"video {vid!r}: host {host!r} does not resolve ({exc})"
            raise VideoNotFoundError(msg) from exc
        if not addresses:
            msg = f"video {vid!r}: host {host!r} resolves to no address"
            raise VideoNotFoundError(msg)
        for address in addresses:
            if not is_public_address(address):
                msg = (
                    f"video {vid!r}: host {host!r} resolves to non-public address {address} "
                    "(allow_private_hosts is off)"
                )
                raise DisallowedSourceError(msg)


def default_resolvers() -> dict[str, Resolver]:
    """The built-in resolvers: http/https as themselves, s3 by boto3 presigning."""
    return {"http": _identity, "https": _identity, "s3": make_s3_resolver()}


def make_s3_resolver(expires_s: int = 900, client_factory: Callable[[], object] | None = None) -> Resolver:
    """A resolver turning ``s3://bucket/key`` into a presigned https GET URL.

    Args:
        expires_s: Lifetime of the presigned URL.
        client_factory: Returns an object with boto3's ``generate_presigned_url``;
            default ``boto3.client("s3")`` (credentials from the usual boto3 chain).

    Returns:
        The resolver callable. It raises :class:`ConfigError` when boto3 is not
        installed and no factory was given, and :class:`InvalidVideoIdError`
        for an s3 URI without bucket or key.
    """

    clients: list[object] = []  # created on first use, then reused

    def resolve_s3(uri: str) -> str:
        parts = urlsplit(uri)
        bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
        if not bucket or not key:
            msg = f"s3 URI {uri!r} needs s3://bucket/key"
            raise InvalidVideoIdError(msg)
        if not clients:
            clients.append(client_factory() if client_factory is not None else _boto3_s3_client())
        return clients[0].generate_presigned_url(  # type: ignore[attr-defined]
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s
        )

    return resolve_s3


def _boto3_s3_client() -> object:
    try:
        import boto3
    except ImportError as exc:
        msg = "s3:// sources need boto3 (pip install boto3), or register another 's3' resolver"
        raise ConfigError(msg) from exc
    return boto3.client("s3")


def lookup_host(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def is_public_address(address: str) -> bool:
    """True when ``address`` is globally routable unicast (not loopback/private/link-local/reserved)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` without credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _identity(url: str) -> str:
    return url


def _scheme_of(text: str, vid: str) -> str | None:
    """The lower-cased URI scheme, or None for a plain relative path.

    Anything before the first ``:`` that looks like a scheme counts (``concat:``,
    ``subfile:`` included), so such IDs are refused rather than read as paths.
    """
    scheme = _split(text, vid).scheme
    return scheme.lower() if scheme else None


def _split(text: str, vid: str) -> SplitResult:
    try:
        return urlsplit(text)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        msg = f"video {vid!r}: malformed URI ({exc})"
        raise InvalidVideoIdError(msg) from exc


def _check_text(text: str, vid: str, max_chars: int = MAX_ID_CHARS) -> None:
    if not text:
        msg = "empty video ID"
        raise InvalidVideoIdError(msg)
    if len(text) > max_chars:
        msg = f"video ID/URI of {len(text)} characters exceeds {max_chars}"
        raise InvalidVideoIdError(msg)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        msg = f"video {vid!r}: control characters (NUL, newline...) are not allowed"
        raise InvalidVideoIdError(msg)
    if "\\" in text:
        msg = f"video {vid!r}: backslashes are not allowed"
        raise InvalidVideoIdError(msg)
