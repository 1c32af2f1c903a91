"""A real multi-node Ray cluster on this machine: a head and worker nodes, each started with `ray start`.

Every node is its own `ray start --block` process in its own process group, on
loopback, with its own ports and temp dir (under the cluster's). Nothing here runs
`ray stop` (which stops every Ray on the machine): a node is stopped, or killed
like a lost machine, through its own process tree.

Worker nodes may declare GPUs (``--num-gpus``, logical: the machine has none) so
that detector actors asking for one land only there, while their model runs on
the CPU device. A killed node takes its raylet, its agents and every worker process
on it (and their ffmpeg children) down at once, with SIGKILL: nothing on it gets
to say goodbye, as when a machine is lost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from clipguard.assets import REPO_ROOT
from pipeline.embedded_services import free_port

# Node deaths are noticed by the GCS's health checks (defaults: ~15 s); a lost node
# should be declared dead within a few seconds here.
HEAD_ENV = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",
    "RAY_health_check_failure_threshold": "4",
}


def _ray_bin() -> str:
    return shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    num_cpus: int
    num_gpus: int
    killed: bool = False

    def pids(self) -> list[int]:
        """The `ray start` process and everything below it (raylet, agents, workers, their children)."""
        try:
            root = psutil.Process(self.process.pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []


@dataclass
class LocalRayCluster:
    """Head plus named worker nodes. Use as a context manager; ``address`` is what drivers connect to."""

    head_cpus: int = 0  # 0: no actor lands on the head, only the driver talks to it
    object_store_bytes: int = 150 * 2**20
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="rayc-", dir="/tmp"))
    port: int = field(default_factory=free_port)
    nodes: dict[str, Node] = field(default_factory=dict)
    log_dir: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(extra or {})}
        # A node declaring GPUs must not inherit an empty CUDA_VISIBLE_DEVICES (Ray would see none);
        # Ray sets it per GPU actor, and torch there finds no CUDA device: the model runs on the CPU.
        env.pop("CUDA_VISIBLE_DEVICES", None)
        return env

    def _start(self, name: str, args: list[str], num_cpus: int, num_gpus: int, env: dict[str, str]) -> Node:
        ports = [
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]
        cmd = [
            _ray_bin(), "start", "--block", *args, *ports,
            f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
            f"--object-store-memory={self.object_store_bytes}",
            "--node-ip-address=127.0.0.1", "--disable-usage-stats",
        ]  # fmt: skip
        out = open(self.log_dir / f"{name}.log", "ab") if self.log_dir else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, proc, num_cpus, num_gpus)
        self.nodes[name] = node
        return node

    def start_head(self, timeout_s: float = 120) -> LocalRayCluster:
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                             f"--temp-dir={self.temp_dir}"], self.head_cpus, 0, self._env(HEAD_ENV))  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.nodes["head"].process.poll() is not None or time.monotonic() > deadline:
                msg = f"ray head did not start (exit {self.nodes['head'].process.poll()})"
                raise RuntimeError(msg)
            time.sleep(0.2)
        return self

    def add_node(self, name: str, num_cpus: int, num_gpus: int = 0) -> Node:
        """Start a worker node; it joins within seconds.

        Each node gets a temp dir of its own: nodes sharing one session dir pick their
        socket and log names by a check-then-create race, and two starting at once
        collide ("Address already in use").
        """
        temp = Path(self.temp_dir) / name
        temp.mkdir()
        return self._start(name, [f"--address={self.address}", f"--temp-dir={temp}"], num_cpus, num_gpus,
                           self._env())  # fmt: skip

    def kill_node(self, name: str) -> list[int]:
        """SIGKILL a worker node's whole process tree at once, as if its machine was lost."""
        node = self.nodes[name]
        pids = node.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(30)
        node.killed = True
        return pids

    def node_of_pid(self, pid: int) -> str | None:
        """Which node a process (an actor's worker) runs on, from the process tree."""
        for name, node in self.nodes.items():
            if pid in node.pids():
                return name
        return None

    def stop(self, grace_s: float = 5.0) -> None:
        """All worker nodes at once, then the head: SIGTERM to each node's group, SIGKILL after ``grace_s``.

        `ray start --block` here often takes 20 s or more to exit on SIGTERM; test nodes keep nothing
        worth waiting for.
        """
        workers = [n for n in self.nodes.values() if n.name != "head"]
        for group in (workers, [n for n in self.nodes.values() if n.name == "head"]):
            live = [n for n in group if n.process.poll() is None]
            pids = {n.name: n.pids() for n in live}  # before the raylet goes: its workers are re-parented after
            for node in live:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for node in live:
                try:
                    node.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(node.process.pid, signal.SIGKILL)
                    node.process.wait(10)
                for pid in pids[node.name]:  # a worker outside the group (Ray may start them in their own session)
                    with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                        if psutil.Process(pid).is_running():
                            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self.start_head()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def alive_nodes(address: str) -> list[dict]:
    """The cluster's live nodes as ``ray.nodes()`` reports them (from a connected driver)."""
    import ray

    return [n for n in ray.nodes() if n["Alive"]]
