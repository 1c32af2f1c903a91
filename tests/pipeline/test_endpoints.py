import pytest
import redis

from clipguard.config import ClipguardConfig
from clipguard.errors import ConfigError
from pipeline.endpoints import client_config, endpoints_file, resolved_endpoints


def test_embedded_endpoints_start_answer_are_shared_with_clients_and_stop(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPGUARD_STATE_DIR", str(tmp_path))
    cfg = ClipguardConfig()
    with pytest.raises(ConfigError):
        client_config(cfg)  # nothing running yet: a clear error, not a hang
    with resolved_endpoints(cfg, workdir=tmp_path) as live:
        assert live.kafka.bootstrap.startswith("127.0.0.1:") and live.redis.url.startswith("redis://127.0.0.1:")
        assert redis.Redis.from_url(live.redis.url).ping()
        seen = client_config(cfg)
        assert (seen.kafka.bootstrap, seen.redis.url) == (live.kafka.bootstrap, live.redis.url)
    assert not endpoints_file().exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(live.redis.url, socket_connect_timeout=1).ping()


def test_reap_stale_kills_only_our_leftover_services(tmp_path, monkeypatch):
    import os
    import subprocess

    from pipeline.embedded_services import reap_stale, start_redis, state_dir

    monkeypatch.setenv("CLIPGUARD_STATE_DIR", str(tmp_path))
    server = start_redis(workdir=tmp_path)
    bystander = subprocess.Popen(["sleep", "30"])
    (state_dir() / "other-1.pid").write_text(str(bystander.pid))
    try:
        assert reap_stale() == [server.process.pid]
        assert server.process.wait(10) is not None
        assert bystander.poll() is None  # not ours: left alone
    finally:
        bystander.kill()
        server.stop()
    assert not list(state_dir().glob("*.pid"))
    assert os.path.isdir(tmp_path)
