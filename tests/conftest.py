"""Session-wide test settings: offline hubs, CPU only, assets found through one helper."""

from __future__ import annotations

import os
from pathlib import Path

# Set before any test module imports torch/open_clip/huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Ray 2.60 heads turn token auth on; every client (this process, CLI subprocesses,
# `ray job submit`) must say so before `import ray` reads it.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402

from clipguard.assets import assets_dir  # noqa: E402

# Model files named by file name (the SCRFD detector) come from the shared assets' models/ folder:
# set explicitly here, as a deployment sets its model directory; nothing defaults to a test asset.
os.environ.setdefault("CLIPGUARD_MODEL_DIR", str(assets_dir() / "models"))


@pytest.fixture(autouse=True)
def _no_ray_connection_left_behind():
    """A test that leaves this process connected to Ray breaks every later `ray.init`.

    Disconnect it and fail the test that leaked, so the leak is fixed where it starts.
    """
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("the test left this process connected to Ray (ray.init without ray.shutdown)")


@pytest.fixture(scope="session")
def assets():
    """The shared assets folder (faces/, models/); a missing folder fails loudly."""
    path = assets_dir()
    if not (path / "models" / "scrfd_2.5g_kps.onnx").is_file():
        pytest.fail(f"shared test assets not found at {path}; set CLIPGUARD_ASSETS")
    return path


# --- real services on loopback, started once per session ----------------------------
@pytest.fixture(scope="session")
def services_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def kafka_broker(services_dir):
    from pipeline.embedded_services import start_kafka

    broker = start_kafka(workdir=services_dir)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def redis_server(services_dir):
    from pipeline.embedded_services import start_redis

    server = start_redis(workdir=services_dir)
    yield server
    server.stop()


@pytest.fixture
def kafka_config(kafka_broker):
    """A KafkaConfig on the embedded broker with a fresh topic and group per test."""
    import uuid

    from clipguard.config import KafkaConfig

    tag = uuid.uuid4().hex[:8]
    return KafkaConfig(bootstrap=kafka_broker.bootstrap, topic=f"t-{tag}", group_id=f"g-{tag}", partitions=2)


@pytest.fixture
def redis_config(redis_server):
    """A RedisConfig on the embedded Redis with a fresh key prefix per test."""
    import uuid

    from clipguard.config import RedisConfig

    return RedisConfig(url=redis_server.url, key_prefix=f"test-{uuid.uuid4().hex[:8]}", retry_initial_s=0.05)


@pytest.fixture(scope="session")
def ray_address():
    """A local Ray head started once (`ray start --head --block`), as on a real cluster.

    Drivers (the test process, `clipguard run` subprocesses) connect to it; killing a
    driver kills only that driver's actors. The head runs in its own process group and
    is stopped by killing that group, never with `ray stop` (which would stop every
    Ray on the machine, including a user's).
    """
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    from clipguard.assets import REPO_ROOT
    from pipeline.embedded_services import free_port

    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray puts unix sockets under it
    cmd = [
        ray_bin,
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--num-cpus=6",
        "--include-dashboard=false",
        "--node-ip-address=127.0.0.1",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    head = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if head.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"ray head did not start (exit {head.poll()})")
        time.sleep(0.2)
    time.sleep(2)  # the raylet registers shortly after the GCS answers
    yield f"127.0.0.1:{port}"
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(5)  # `ray start --block` often needs 20 s or more to exit on SIGTERM; a test head keeps nothing
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(10)
    shutil.rmtree(temp_dir, ignore_errors=True)
