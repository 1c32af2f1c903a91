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

from pipeline.assets import assets_dir  # noqa: E402


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

    from pipeline.config import KafkaConfig

    tag = uuid.uuid4().hex[:8]
    return KafkaConfig(bootstrap=kafka_broker.bootstrap, topic=f"t-{tag}", group_id=f"g-{tag}", partitions=2)


@pytest.fixture
def redis_config(redis_server):
    """A RedisConfig on the embedded Redis with a fresh key prefix per test."""
    import uuid

    from pipeline.config import RedisConfig

    return RedisConfig(url=redis_server.url, key_prefix=f"test-{uuid.uuid4().hex[:8]}", retry_initial_s=0.05)


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """A local Ray head started once (`ray start --head`), as on a real cluster.

    Drivers (the test process, `clipguard run` subprocesses, `ray job submit`)
    connect to it; killing a driver kills only that driver's actors.
    """
    import shutil
    import subprocess
    import sys

    from pipeline.assets import REPO_ROOT
    from pipeline.embedded_services import free_port

    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    import tempfile

    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray puts unix sockets under it
    cmd = [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=6", "--include-dashboard=false",
           "--node-ip-address=127.0.0.1",
           "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=120)
    address = f"127.0.0.1:{port}"
    yield address
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
