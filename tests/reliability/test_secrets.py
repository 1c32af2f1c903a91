"""Secrets come from the environment and never reach output or logs.

Redis and Kafka SASL passwords are read from ``CLIPGUARD_REDIS__PASSWORD`` and
``CLIPGUARD_KAFKA__SASL_PASSWORD`` (Kubernetes Secrets end up there). They are
checked in what `clipguard config` prints, in configuration errors (a misspelt
secret variable used to echo its value), and in a real `clipguard -v run` against a
password-protected Redis: its stdout/stderr and every Ray log file written meanwhile.
They have no command-line flag, and they are read from files in ``CLIPGUARD_SECRETS_DIR``
too (a mounted Kubernetes Secret). A stream on a Ray cluster refuses the ``embedded``
Kafka/Redis defaults in one line unless ``embedded`` is named.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import ray
from click.testing import CliRunner

from clipguard.assets import REPO_ROOT
from clipguard.config import ClipguardConfig, KafkaConfig, RedisConfig
from pipeline.cli import cli
from pipeline.embedded_services import start_redis
from pipeline.kafka_source import security_kwargs
from pipeline.verdict_store import VerdictStore
from tests.reliability.stream_harness import publish

pytestmark = pytest.mark.timeout(300)


def _secrets() -> dict[str, str]:
    tag = uuid.uuid4().hex[:12]
    return {"redis": f"redis-pw-{tag}", "sasl": f"sasl-pw-{tag}", "url": f"url-pw-{tag}"}


def _cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """`clipguard <args>` as a subprocess, as an operator runs it."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=full_env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _config_cli(env: dict[str, str], monkeypatch) -> tuple[int, str]:
    """`clipguard config` in-process (click's runner): exit code and everything it printed."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, ["config"])
    return result.exit_code, result.output


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


def test_config_command_masks_passwords_from_env_and_url(monkeypatch):
    s = _secrets()
    env = {
        "CLIPGUARD_REDIS__URL": f"rediss://clipguard:{s['url']}@redis.internal:6380/0",
        "CLIPGUARD_REDIS__PASSWORD": s["redis"],
        "CLIPGUARD_REDIS__SSL_CA_CERTS": "/etc/clipguard/ca.pem",
        "CLIPGUARD_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "CLIPGUARD_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "CLIPGUARD_KAFKA__SASL_USERNAME": "clipguard",
        "CLIPGUARD_KAFKA__SASL_PASSWORD": s["sasl"],
    }
    code, output = _config_cli(env, monkeypatch)
    assert code == 0, output
    assert not _leaks(output, s)
    assert output.count('"**********"') == 2 and "rediss://***@redis.internal:6380/0" in output


def test_secrets_are_used_from_env_but_absent_from_repr_and_dumps(monkeypatch):
    s = _secrets()
    monkeypatch.setenv("CLIPGUARD_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("CLIPGUARD_KAFKA__SASL_PASSWORD", s["sasl"])
    monkeypatch.setenv("CLIPGUARD_REDIS__PASSWORD", s["redis"])
    cfg = ClipguardConfig()
    assert security_kwargs(cfg.kafka)["sasl_plain_password"] == s["sasl"]  # handed to the Kafka client
    assert cfg.redis.password.get_secret_value() == s["redis"]
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), repr(cfg.kafka), repr(cfg.redis)):
        assert not _leaks(text, s)


@pytest.mark.parametrize(
    "env",
    [
        {"CLIPGUARD_REDIS__PASWORD": "{redis}"},  # misspelt secret variable
        {"CLIPGUARD_KAFKA__SASL_PASWORD": "{sasl}"},
        {"CLIPGUARD_KAFKA": '{{"sasl_password": "{sasl}", "sasl_mechanism": "BOGUS"}}'},  # a whole section as JSON
        {"CLIPGUARD_REDIS": '{{"password": "{redis}", "retry_max_s": -1}}'},
    ],
)
def test_invalid_configuration_errors_never_echo_secret_values(env, monkeypatch):
    s = _secrets()
    code, output = _config_cli({k: v.format(**s) for k, v in env.items()}, monkeypatch)
    assert code != 0 and "invalid configuration" in output
    assert not _leaks(output, s), output


def _ray_logs_dir(ray_address: str) -> Path:
    ray.init(address=ray_address, namespace="clipguard")
    try:
        return Path(ray._private.worker._global_node.get_logs_dir_path())
    finally:
        ray.shutdown()  # the session head keeps running; only this driver disconnects


def test_run_against_password_protected_redis_never_logs_the_secrets(kafka_config, ray_address, video_root, tmp_path):
    s = _secrets()
    server = start_redis(workdir=tmp_path, password=s["redis"])
    prefix = f"sec-{uuid.uuid4().hex[:6]}"
    ids = ["good/face_3.mp4", "good/empty_1.mp4", "bad/text.mp4"]
    publish(kafka_config, [*ids, b"\xff not utf-8"])
    logs_dir = _ray_logs_dir(ray_address)
    started = time.time()
    env = {
        "CLIPGUARD_KAFKA__BOOTSTRAP": kafka_config.bootstrap,
        "CLIPGUARD_KAFKA__TOPIC": kafka_config.topic,
        "CLIPGUARD_KAFKA__GROUP_ID": kafka_config.group_id,
        "CLIPGUARD_KAFKA__SASL_USERNAME": "clipguard",
        "CLIPGUARD_KAFKA__SASL_PASSWORD": s["sasl"],  # carried to every decoder; PLAINTEXT here, so unused
        "CLIPGUARD_REDIS__URL": server.url,
        "CLIPGUARD_REDIS__PASSWORD": s["redis"],
        "CLIPGUARD_REDIS__KEY_PREFIX": prefix,
        "CLIPGUARD_RAY__ADDRESS": ray_address,
    }
    args = ["-v", "run", "--exit-when-idle", "2", "--source-video-root", str(video_root),
            "--sampling-num-frames", "2", "--model-arch", "ViT-Tiny-test", "--model-pretrained", "none"]  # fmt: skip
    try:
        r = _cli(args, env, timeout=240)
        output = r.stdout + r.stderr
        assert r.returncode == 0, output[-3000:]
        store = VerdictStore(RedisConfig(url=server.url, password=s["redis"], key_prefix=prefix))
        assert all(store.get_raw(v) for v in ids)  # the password was used
        assert "redis://127.0.0.1" in output  # the run did log where it writes
    finally:
        server.stop()
    assert not _leaks(output, s)
    leaked = []
    scanned = 0
    for path in logs_dir.rglob("*"):
        if path.is_file() and path.stat().st_mtime >= started - 1:
            scanned += 1
            if _leaks(path.read_text(errors="replace"), s):
                leaked.append(path.name)
    assert scanned and not leaked, f"secrets in Ray logs: {leaked}"
    print(f"\nsecrets: `clipguard -v run` output ({len(output)} chars) and {scanned} Ray log files: no secret")


def test_kafka_config_with_sasl_keeps_the_password_out_of_its_repr():
    cfg = KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p4ss-xyz")
    assert "p4ss-xyz" not in repr(cfg) and "p4ss-xyz" not in cfg.model_dump_json()


# --- secrets never as flags; from the environment or from files ---------------------------------------


def _secret_fields() -> set[str]:
    from pydantic import BaseModel

    from pipeline.cli_options import is_secret

    found = set()
    for section, field in ClipguardConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found |= {f"{section}.{n}" for n, f in field.annotation.model_fields.items() if is_secret(f.annotation)}
    return found


def test_no_secret_has_a_flag_and_run_help_lists_none():
    from pipeline.cli_options import config_fields

    secrets = _secret_fields()
    assert secrets == {"kafka.sasl_password", "redis.password"}
    flagged = {f"{section}.{name}" for section, name, _, _ in config_fields()}
    assert not secrets & flagged
    help_text = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200).output
    assert "--redis-url" in help_text and "--kafka-sasl-username" in help_text  # the other flags are there
    for flag in ("--kafka-sasl-password", "--redis-password"):
        assert flag not in help_text
        result = CliRunner().invoke(cli, ["run", flag, "hunter2"])
        assert result.exit_code == 2 and f"No such option '{flag}'" in result.output, result.output


def test_redis_url_flag_with_a_password_is_refused_without_echoing_it():
    s = _secrets()
    result = CliRunner().invoke(cli, ["config", "--redis-url", f"rediss://clipguard:{s['url']}@redis.internal:6380/0"])
    assert result.exit_code == 2 and "--redis-url: the URL carries a password" in result.output
    assert not _leaks(result.output, s)


def test_secrets_are_read_from_files_in_the_secrets_dir(tmp_path, monkeypatch):
    """A Kubernetes Secret mounted as files: one file per variable name, the value as its content."""
    s = _secrets()
    (tmp_path / "CLIPGUARD_KAFKA__SASL_PASSWORD").write_text(s["sasl"])
    (tmp_path / "CLIPGUARD_REDIS__PASSWORD").write_text(s["redis"])
    (tmp_path / "CLIPGUARD_KAFKA__SASL_USERNAME").write_text("clipguard")
    monkeypatch.setenv("CLIPGUARD_SECRETS_DIR", str(tmp_path))
    cfg = ClipguardConfig()
    assert cfg.kafka.sasl_password.get_secret_value() == s["sasl"]
    assert cfg.redis.password.get_secret_value() == s["redis"]
    assert cfg.kafka.sasl_username == "clipguard"
    monkeypatch.setenv("CLIPGUARD_REDIS__PASSWORD", "from-env")  # the environment wins over a file
    assert ClipguardConfig().redis.password.get_secret_value() == "from-env"
    code, output = _config_cli({}, monkeypatch)
    assert code == 0 and not _leaks(output, s)
    (tmp_path / "CLIPGUARD_REDIS__PASWORD").write_text(s["redis"])  # a misspelt file name is an error too
    code, output = _config_cli({}, monkeypatch)
    assert code != 0 and "invalid configuration" in output and not _leaks(output, s)


def test_a_secrets_dir_that_is_not_mounted_stops_the_command(tmp_path, capsys, monkeypatch):
    from clipguard.cli_main import run_click_command

    monkeypatch.setenv("CLIPGUARD_SECRETS_DIR", str(tmp_path / "not-mounted"))
    assert run_click_command(cli, ["config"]) == 2
    err = capsys.readouterr().err.strip()
    missing = tmp_path / "not-mounted"
    assert err == f"error: config: CLIPGUARD_SECRETS_DIR={missing} is not a directory (is the secret volume mounted?)"


# --- no loopback services by accident on a cluster ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "refused"),
    [
        (["--ray-address", "auto"], {}, "kafka.bootstrap and redis.url not set"),
        (["--ray-address", "auto", "--kafka-bootstrap", "broker:9093"], {}, "redis.url not set"),
        (["--redis-url", "redis://r:6379/0"], {"CLIPGUARD_RAY__ADDRESS": "ray://h:10001"}, "kafka.bootstrap not set"),
    ],
)
def test_run_on_a_ray_cluster_refuses_default_embedded_services_in_one_line(args, env, refused, capsys, monkeypatch):
    from clipguard.cli_main import run_click_command

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert run_click_command(cli, ["run", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: config: ") and refused in err, err
    assert "'embedded' by name" in err


def test_embedded_asked_for_by_name_is_allowed_on_a_cluster(monkeypatch):
    from pipeline.cli_options import build_config
    from pipeline.endpoints import refuse_implicit_embedded

    named = build_config({"ray__address": "auto", "kafka__bootstrap": "embedded", "redis__url": "embedded"})
    assert named.embedded_by_default() == []
    refuse_implicit_embedded(named)  # no error
    monkeypatch.setenv("CLIPGUARD_KAFKA__BOOTSTRAP", "embedded")  # by name through the environment
    monkeypatch.setenv("CLIPGUARD_REDIS__URL", "embedded")
    refuse_implicit_embedded(build_config({"ray__address": "auto"}))
    monkeypatch.delenv("CLIPGUARD_KAFKA__BOOTSTRAP")
    monkeypatch.delenv("CLIPGUARD_REDIS__URL")
    local = build_config({})  # no Ray address: the embedded defaults serve `clipguard run` on a laptop
    assert local.embedded_by_default() == ["kafka.bootstrap", "redis.url"]
    refuse_implicit_embedded(local)
