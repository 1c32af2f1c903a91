"""deploy/cluster-launcher/aws-gpu.yaml, checked by Ray's own cluster-config validation.

Ray has no public "validate only" call. `ray up` runs
``commands._bootstrap_config``: ``prepare_config`` (merge the provider's defaults.yaml,
setup commands, docker checks, per-type min/max workers), then the provider's resource
autodetection (AWS API calls), then ``validate_config`` (``ray-schema.json`` with
``additionalProperties: false`` plus cross-field rules). We call the same two functions
from ``ray.autoscaler._private.util`` and skip only the AWS calls, so a config that passes
here gets past everything `ray up` checks before it talks to AWS. The least private
alternative, ``ray.autoscaler.sdk.fillout_defaults``, only merges defaults and validates nothing.
"""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest
import yaml

from tests.deploy.kube import DEPLOY_DIR, KUBERAY_DIR, load_documents

LAUNCHER = DEPLOY_DIR / "cluster-launcher" / "aws-gpu.yaml"


def raw_config() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def ray_validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_config_passes_ray_validation():
    prepared = ray_validate(raw_config())
    assert prepared["provider"]["type"] == "aws"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda c: c.update(idle_timeout_minute=3), jsonschema.ValidationError),  # misspelt top-level key
        (lambda c: c["available_node_types"]["gpu_worker"].update(min_worker=1), jsonschema.ValidationError),
        (lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU="1"), jsonschema.ValidationError),
        (lambda c: c["docker"].update(imag="x"), jsonschema.ValidationError),
        (lambda c: c.update(head_node_type="ray.head.default"), ValueError),
        (lambda c: c.update(max_workers=1), ValueError),  # below the sum of min_workers
    ],
)
def test_broken_config_fails_ray_validation(change, error):
    config = raw_config()
    change(config)
    with pytest.raises(error):
        ray_validate(config)


def test_node_types_cpu_head_cpu_workers_gpu_workers():
    config = raw_config()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "no actor on the head"
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for name, t in types.items() if name != config["head_node_type"] and not t["resources"].get("GPU")]
    assert len(gpu) == 1 and len(cpu) == 1
    for node_type in (*gpu, *cpu):
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"]
    assert sum(t.get("max_workers", 0) for t in types.values()) <= config["max_workers"]
    assert config["idle_timeout_minutes"] > 0
    assert gpu[0]["node_config"]["InstanceType"].startswith(("g", "p"))


def test_only_gpu_nodes_get_gpus_in_the_container():
    config = raw_config()
    assert config["docker"]["disable_automatic_runtime_detection"] is True
    assert not any("--gpus" in o for o in config["docker"]["run_options"])
    for node_type in config["available_node_types"].values():
        options = " ".join(node_type.get("docker", {}).get("worker_run_options", []))
        assert ("--gpus all" in options) == bool(node_type["resources"].get("GPU")), node_type["node_config"]


def test_same_image_as_kuberay_and_dashboard_on_loopback():
    config = raw_config()
    (cluster,) = load_documents(KUBERAY_DIR / "raycluster.yaml")
    k8s_image = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert config["docker"]["image"].split(":")[0] == k8s_image.split(":")[0]
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start, "reach the dashboard through `ray dashboard` (SSH)"
    assert "--num-cpus=0" in head_start
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert "--metrics-export-port=8080" in " ".join(commands)
    assert config["provider"]["cache_stopped_nodes"] is False


def launcher_env() -> dict[str, str]:
    env = {}
    for option in raw_config()["docker"]["run_options"]:
        match = re.fullmatch(r"-e (CLIPGUARD_\w+)=(\S+)", option)
        if match:
            env[match.group(1)] = match.group(2)
    return env


def test_container_env_is_settings_the_app_accepts_and_holds_no_credentials(monkeypatch):
    import os

    from clipguard.config import ClipguardConfig

    env = launcher_env()
    assert env, "run_options pass the stream settings with -e"
    assert not [k for k in env if re.search(r"PASSWORD|USERNAME|TOKEN|SECRET", k)], "credentials go in --env-file"
    assert any(o.startswith("--env-file ") for o in raw_config()["docker"]["run_options"])
    for key in list(os.environ):
        if key.startswith("CLIPGUARD_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # what the SSM env file adds
    monkeypatch.setenv("CLIPGUARD_KAFKA__SASL_USERNAME", "u")
    monkeypatch.setenv("CLIPGUARD_KAFKA__SASL_PASSWORD", "p")
    monkeypatch.setenv("CLIPGUARD_REDIS__PASSWORD", "p")
    config = ClipguardConfig()
    assert config.kafka.security_protocol == "SASL_SSL" and config.redis.url.startswith("rediss://")
    assert config.stream.detector_num_gpus >= 1
    gpu = [t for t in raw_config()["available_node_types"].values() if t["resources"].get("GPU")][0]
    assert config.stream.detectors * config.stream.detector_num_gpus <= gpu["max_workers"] * gpu["resources"]["GPU"]
