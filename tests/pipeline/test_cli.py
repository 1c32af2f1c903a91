import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer

from clipguard.assets import REPO_ROOT
from clipguard.contracts import Verdict
from pipeline.cli import cli
from pipeline.verdict_store import VerdictStore


def _flags(kafka_config=None, redis_config=None):
    """The flags of the service(s) a client command talks to (each shows only its own)."""
    kafka = ["--kafka-bootstrap", kafka_config.bootstrap, "--kafka-topic", kafka_config.topic] if kafka_config else []
    redis = ["--redis-url", redis_config.url, "--redis-key-prefix", redis_config.key_prefix] if redis_config else []
    return kafka + redis


def test_client_commands_show_only_the_settings_they_use():
    shown = {name: CliRunner().invoke(cli, [name, "--help"]).output for name in ("publish", "verdict", "watch", "run")}
    assert "--kafka-bootstrap" in shown["publish"] and "--source-video-root" in shown["publish"]
    for flag in ("--redis-url", "--stream-", "--model-", "--faces-", "--video-score-", "--kafka-group-id"):
        assert flag not in shown["publish"], flag
    for name in ("verdict", "watch"):
        assert "--redis-url" in shown[name] and "--redis-key-prefix" in shown[name]
        for flag in ("--kafka-", "--stream-", "--model-", "--redis-stream-maxlen", "--source-"):
            assert flag not in shown[name], (name, flag)
    assert all(flag in shown["run"] for flag in ("--kafka-group-id", "--video-score-pooling", "--redis-url"))


def test_cli_publish_ids_files_and_json_jobs(kafka_config, redis_config, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "clip.mp4"
    outside.write_bytes(b"x")
    flags = _flags(kafka_config) + ["--source-video-root", str(root)]
    r = CliRunner().invoke(cli, ["publish", *flags, "a/b.mp4", str(outside)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["publish", *flags, "v9", "--uri", "https://h/v9.mp4", "--metadata", '{"t": 1}'])
    assert r.exit_code == 0, r.output
    assert (root / "uploads" / "clip.mp4").is_file()  # a file outside the root is copied in
    c = KafkaConsumer(
        kafka_config.topic,
        bootstrap_servers=kafka_config.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    values = sorted(m.value for m in c)
    c.close()
    assert values == sorted(
        [
            b"a/b.mp4",
            b"uploads/clip.mp4",
            json.dumps({"video_id": "v9", "uri": "https://h/v9.mp4", "metadata": {"t": 1}}).encode(),
        ]
    )


def test_cli_verdict_pretty_json_and_missing(kafka_config, redis_config):
    VerdictStore(redis_config).put(Verdict("x/1", "error", "m-1", error_kind="corrupt", error_message="bad moov"))
    flags = _flags(redis_config=redis_config)
    pretty = CliRunner().invoke(cli, ["verdict", *flags, "x/1"])
    assert pretty.exit_code == 0 and "corrupt: bad moov" in pretty.output
    raw = CliRunner().invoke(cli, ["verdict", *flags, "x/1", "--json"])
    assert json.loads(raw.output)["status"] == "error"
    missing = CliRunner().invoke(cli, ["verdict", *flags, "nope"])
    assert missing.exit_code == 1


def test_cli_watch_replays_the_verdict_stream(kafka_config, redis_config):
    store = VerdictStore(redis_config)
    store.put(Verdict("a", "no_face", "m-1"))
    store.put(Verdict("b", "no_face", "m-1"))
    r = CliRunner().invoke(cli, ["watch", *_flags(redis_config=redis_config), "--from-start", "--count", "2"])
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["video_id"] for line in r.output.splitlines()] == ["a", "b"]


def test_cli_config_env_and_flags_with_secrets_masked(monkeypatch):
    monkeypatch.setenv("CLIPGUARD_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("CLIPGUARD_STREAM__BATCH_SIZE", "7")
    r = CliRunner().invoke(cli, ["config", "--stream-batch-size", "9", "--video-score-face-policy", "largest"])
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.output)
    assert cfg["stream"]["batch_size"] == 9 and cfg["video_score"]["face_policy"] == "largest"
    assert "hunter2" not in r.output


def test_cli_rejects_misspelt_and_invalid_values(monkeypatch):
    r = CliRunner().invoke(cli, ["config", "--video-score-face-policy", "some"])
    assert r.exit_code != 0 and "invalid configuration" in r.output
    monkeypatch.setenv("CLIPGUARD_STREAM__BATCH_SIZ", "3")
    r = CliRunner().invoke(cli, ["config"])
    assert r.exit_code != 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_services_up_stops_its_children_on_a_signal(tmp_path, sig):
    # Started as a shell starts a background job: SIGINT ignored, which Python inherits.
    env = {**os.environ, "CLIPGUARD_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "services", "up"], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    children: list[int] = []
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[2].startswith("(Ctrl-C to stop)"), lines
        endpoints = json.loads((tmp_path / "endpoints.json").read_text())
        children = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
        assert len(children) == 2 and endpoints["kafka"] in lines[0]
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        alive = [pid for pid in children if _alive(pid)]
        assert alive == [], "services left running after services up exited"
        assert not (tmp_path / "endpoints.json").exists()
    finally:
        proc.kill()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("victim", ["kafka", "redis"])
def test_services_up_names_the_service_that_died_and_exits_non_zero(tmp_path, victim):
    env = {**os.environ, "CLIPGUARD_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "services", "up"], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    children: dict[str, int] = {}
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[2].startswith("(Ctrl-C to stop)"), lines
        children = {p.name.split("-")[0]: int(p.read_text()) for p in tmp_path.glob("*.pid")}
        os.kill(children[victim], signal.SIGKILL)
        assert proc.wait(30) == 1
        err = proc.stderr.read()
        assert f"{victim} (pid {children[victim]}" in err and "killed by signal 9" in err, err
        survivor = "redis" if victim == "kafka" else "kafka"
        assert not _alive(children[survivor]), f"{survivor} left running"
        assert not (tmp_path / "endpoints.json").exists()
    finally:
        proc.kill()
        for pid in children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
