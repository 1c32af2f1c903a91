"""Hostile HTTP servers on 127.0.0.1 for the source tests: a redirect, a trickle, a counting file server.

Each runs in daemon threads of the test process, binds port 0 on loopback only,
and is stopped when its ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Served:
    """A running server: its base URL and the request paths it has seen."""

    url: str
    requests: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _serve(
    handler_cls: type[http.server.BaseHTTPRequestHandler], served: Served, stop: threading.Event
) -> Iterator[Served]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    server.daemon_threads = True
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # the base class's signature
        """Keep test output clean."""


@contextlib.contextmanager
def file_server(path: Path) -> Iterator[Served]:
    """Serves the bytes of ``path`` at any URL path, and records every request."""
    served, stop = Served(""), threading.Event()
    body = path.read_bytes()

    class Handler(_Quiet):
        def do_GET(self):
            served.requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with _serve(Handler, served, stop) as s:
        yield s


@contextlib.contextmanager
def redirect_server(location: str) -> Iterator[Served]:
    """Answers every GET with ``302 Location: <location>``."""
    served, stop = Served(""), threading.Event()

    class Handler(_Quiet):
        def do_GET(self):
            served.requests.append(self.path)
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with _serve(Handler, served, stop) as s:
        yield s


@contextlib.contextmanager
def trickle_server(interval_s: float = 0.05) -> Iterator[Served]:
    """A never-ending 200 response: one byte every ``interval_s`` until the client leaves.

    Bytes keep coming, so ffmpeg's inactivity timeout (``rw_timeout``) never fires:
    only the wall-clock limit can end the call.
    """
    served, stop = Served(""), threading.Event()

    class Handler(_Quiet):
        def do_GET(self):
            served.requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.end_headers()  # no Content-Length: the body lasts until the connection closes
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    self.wfile.write(b"\x00")
                    self.wfile.flush()
                    time.sleep(interval_s)

    with _serve(Handler, served, stop) as s:
        yield s
