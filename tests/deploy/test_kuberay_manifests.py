"""KubeRay manifests: valid against KubeRay's own CRDs, consistent with each other and the app."""

from __future__ import annotations

import copy
import random
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.kube import (
    KUBERAY_DIR,
    REPO_ROOT,
    crd_schema,
    kuberay_schema_dir,
    load_documents,
    mutated,
    quantity,
    ray_cluster_spec,
    ray_groups,
    schema_errors,
    shared_dir,
    unknown_field_errors,
    validate,
)
from tests.deploy.locks import lock
from tests.deploy.render import container_env, created_name, job_cluster_name, kustomized, shell_argv

KUBERAY_KINDS = {"RayCluster", "RayJob", "RayService"}
MANIFEST_FILES = sorted(KUBERAY_DIR.glob("*.yaml"))


def all_documents() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in MANIFEST_FILES for doc in load_documents(path)]


def kuberay_documents() -> list[tuple[str, dict]]:
    return [(name, doc) for name, doc in all_documents() if doc.get("kind") in KUBERAY_KINDS]


def doc_id(item: tuple[str, dict]) -> str:
    name, doc = item
    return f"{name}:{doc['kind']}"


def the(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in all_documents() if d["kind"] == kind and (name is None or d["metadata"].get("name") == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


STREAM_CLUSTER = "clipguard"


def stream_cluster() -> dict:
    return the("RayCluster", STREAM_CLUSTER)


def train_job() -> dict:
    (job,) = [d for _, d in kuberay_documents() if d["kind"] == "RayJob" and d["spec"].get("rayClusterSpec")]
    return job


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay's Ray container is index 0


def ray_lock_version() -> str:
    return lock("runtime")["ray"].version


# --- schema helper ------------------------------------------------------------------------------


def test_shared_dir_honours_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPGUARD_SHARED", str(tmp_path))
    assert shared_dir() == tmp_path
    assert kuberay_schema_dir() == tmp_path / "schemas" / "kuberay"


def test_crd_schema_v1_describes_the_fields_we_use():
    spec = crd_schema("RayCluster")["properties"]["spec"]["properties"]
    assert {"headGroupSpec", "workerGroupSpecs", "autoscalerOptions", "rayVersion"} <= set(spec)
    worker = spec["workerGroupSpecs"]["items"]["properties"]
    assert worker["rayStartParams"]["additionalProperties"] == {"type": "string"}


def test_every_kuberay_manifest_in_deploy_is_checked():
    kinds = sorted(doc["kind"] for _, doc in kuberay_documents())
    assert kinds == ["RayCluster", "RayJob", "RayJob"]


# --- validity against the CRDs -------------------------------------------------------------------


@pytest.mark.parametrize("item", kuberay_documents(), ids=doc_id)
def test_manifest_valid_against_kuberay_crd(item):
    _, doc = item
    assert doc["apiVersion"] == "ray.io/v1"
    assert validate(doc) == []


@pytest.mark.parametrize(
    ("path", "change", "expected"),
    [
        # a misspelt field: JSON schema alone lets it through, the unknown-field walk does not
        ("spec.workerGroupSpecs.0.maxReplicas", {"rename": "maxReplica"}, "maxReplica: unknown field"),
        ("spec.enableInTreeAutoscaling", {"rename": "enableInTreeAutoScaling"}, "enableInTreeAutoScaling: unknown"),
        ("spec.autoscalerOptions.idleTimeoutSeconds", {"rename": "idleTimeoutSecond"}, "idleTimeoutSecond: unknown"),
        (
            "spec.headGroupSpec.template.spec.containers.0.imagePullPolicy",
            {"rename": "imagePullPolcy"},
            "containers[0].imagePullPolcy: unknown",
        ),
        ("spec.headGroupSpec.template.spec.securityContext.runAsNonRoot", {"rename": "runAsNonroot"}, "runAsNonroot"),
        ("metadata.name", {"rename": "nmae"}, "metadata.nmae: not an ObjectMeta field"),
        # wrong types, enums, patterns and missing required fields: JSON schema
        ("spec.workerGroupSpecs.0.rayStartParams.num-cpus", {"value": 8}, "8 is not of type 'string'"),
        ("spec.workerGroupSpecs.0.minReplicas", {"value": "1"}, "'1' is not of type 'integer'"),
        ("spec.autoscalerOptions.upscalingMode", {"value": "Fast"}, "'Fast' is not one of"),
        ("spec.workerGroupSpecs.1.template.spec.containers.0.resources.limits.memory", {"value": "24 Gi"}, "match"),
        ("spec.workerGroupSpecs.0.groupName", {"rename": "name"}, "'groupName' is a required property"),
        # duplicate keys of a list-type=map list: rejected by the API server
        (
            "spec.headGroupSpec.template.spec.containers.0.volumeMounts.1.mountPath",
            {"value": "/models"},
            "duplicate entry for {'mountPath': '/models'}",
        ),
        ("spec.workerGroupSpecs.0.template.spec.volumes.1.name", {"value": "models"}, "{'name': 'models'}"),
    ],
)
def test_broken_manifest_fails_validation(path, change, expected):
    broken = mutated(stream_cluster(), path, change.get("value"), rename=change.get("rename"))
    errors = validate(broken)
    assert any(expected in e for e in errors), errors


def test_unknown_field_walk_alone_catches_what_json_schema_misses():
    broken = mutated(stream_cluster(), "spec.workerGroupSpecs.1.rayStartParams", rename="rayStartParam")
    assert schema_errors(broken) == []  # the CRD does not forbid extra properties...
    assert unknown_field_errors(broken) == [
        "spec.workerGroupSpecs[1].rayStartParam: unknown field (not in the CRD schema; the API server would prune it)"
    ]


# --- KubeRay's own semantic rules (ray-operator/controllers/ray/utils/validation.go) --------------


@pytest.mark.parametrize("item", kuberay_documents(), ids=doc_id)
def test_manifest_obeys_kuberay_semantic_rules(item):
    _, doc = item
    meta = doc["metadata"]
    name = meta.get("name") or meta["generateName"].rstrip("-")
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 47, name  # DNS-1035, KubeRay's limit
    spec = ray_cluster_spec(doc)
    if doc["kind"] == "RayJob":
        job = doc["spec"]
        assert job.get("submissionMode", "K8sJobMode") in {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
        assert (spec is None) != (not job.get("clusterSelector")), "exactly one of rayClusterSpec / clusterSelector"
        if job.get("clusterSelector"):
            assert job["clusterSelector"].get("ray.io/cluster"), "clusterSelector needs ray.io/cluster"
            assert job.get("submissionMode") != "SidecarMode"
            # a retry (JobDeploymentStatusRetrying) deletes the RayCluster named in the
            # status, which in clusterSelector mode is the shared cluster
            assert not job.get("backoffLimit"), "backoffLimit with clusterSelector deletes the selected cluster"
        if job.get("submissionMode", "K8sJobMode") == "K8sJobMode":
            # the submitter runs `ray job submit ... -- <entrypoint>` in bash: `&&`, `;` or `|`
            # would split the entrypoint and run the rest in the submitter pod
            assert not re.search(r"&&|;|\|", job["entrypoint"]), job["entrypoint"]
        if "runtimeEnvYAML" in job:
            assert isinstance(yaml.safe_load(job["runtimeEnvYAML"]), dict)
    if spec is None:
        return
    assert spec["rayVersion"] == ray_lock_version()
    v2 = spec.get("autoscalerOptions", {}).get("version") == "v2"
    for group_name, group in ray_groups(spec):
        params = group.get("rayStartParams", {})
        assert "labels" not in params, f"{group_name}: use the top-level labels field"
        has_start_resources = any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources"))
        assert not (has_start_resources and group.get("resources")), f"{group_name}: resources set twice"
        if v2:
            assert group["template"]["spec"].get("restartPolicy", "Never") == "Never", group_name
        if group_name != "head":
            assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], group_name


@pytest.mark.parametrize("item", kuberay_documents(), ids=doc_id)
def test_ray_start_resources_match_container_limits(item):
    spec = ray_cluster_spec(item[1])
    if spec is None:
        return
    for group_name, group in ray_groups(spec):
        params = group.get("rayStartParams", {})
        container = ray_container(group)
        limits = container["resources"]["limits"]
        assert container["resources"]["requests"] == limits, f"{group_name}: requests == limits (Guaranteed QoS)"
        cpus = float(params["num-cpus"])
        assert cpus <= quantity(limits["cpu"]), f"{group_name}: Ray may not promise more CPUs than the pod has"
        gpus = quantity(limits.get("nvidia.com/gpu", 0))
        assert float(params.get("num-gpus", 0)) == gpus, f"{group_name}: num-gpus must equal nvidia.com/gpu"
        if gpus:
            tolerations = group["template"]["spec"].get("tolerations", [])
            assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations), f"{group_name}: GPU taint toleration"
        if group_name == "head":
            assert params["num-cpus"] == "0", "nothing may be scheduled on the head"
        assert params.get("metrics-export-port") == "8080", f"{group_name}: the port Prometheus scrapes"


def test_stream_cluster_autoscales_a_cpu_and_a_gpu_group():
    spec = stream_cluster()["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    options = spec["autoscalerOptions"]
    assert options["upscalingMode"] in {"Default", "Aggressive", "Conservative"}
    assert options["idleTimeoutSeconds"] > 0
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    assert "num-gpus" not in groups["cpu-workers"]["rayStartParams"]
    assert groups["gpu-workers"]["rayStartParams"]["num-gpus"] == "1"
    assert groups["gpu-workers"]["maxReplicas"] > groups["gpu-workers"]["minReplicas"]
    assert groups["cpu-workers"]["maxReplicas"] > groups["cpu-workers"]["minReplicas"]


def test_stream_job_runs_the_cli_on_the_stream_cluster():
    job = the("RayJob", "clipguard-stream")["spec"]
    assert job["clusterSelector"]["ray.io/cluster"] == STREAM_CLUSTER
    assert job["entrypoint"].split()[:2] == ["clipguard", "run"]
    assert "--ray-address auto" in job["entrypoint"]
    assert not job.get("shutdownAfterJobFinishes"), "the stream cluster is not the job's to delete"


def test_stream_entrypoint_parses_with_the_cli():
    import shlex

    from pipeline.cli import cli

    program, command, *args = shlex.split(the("RayJob", "clipguard-stream")["spec"]["entrypoint"])
    assert program == "clipguard"
    with cli.commands[command].make_context(command, args) as ctx:  # parses the flags, runs nothing
        assert "auto" in ctx.params.values()


def test_train_job_runs_a_preset_and_cleans_up():
    job = train_job()["spec"]
    match = re.search(r"python training/train\.py --config (training/configs/\S+\.yaml)", job["entrypoint"])
    assert match, job["entrypoint"]
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["submissionMode"] == "HTTPMode"  # the entrypoint uses `cd /app &&`
    assert (REPO_ROOT / match.group(1)).is_file()


def test_train_job_mounts_shared_run_storage_on_every_node():
    spec = train_job()["spec"]["rayClusterSpec"]
    for group_name, group in ray_groups(spec):
        mounts = {m["mountPath"]: m for m in ray_container(group)["volumeMounts"]}
        assert "/app/runs" in mounts and not mounts["/app/runs"].get("readOnly"), group_name
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        assert volumes[mounts["/app/runs"]["name"]]["persistentVolumeClaim"]["claimName"] == "clipguard-runs"


# --- references between the files --------------------------------------------------------------


def declared(kind: str) -> set[str]:
    return {d["metadata"]["name"] for _, d in all_documents() if d["kind"] == kind}


@pytest.mark.parametrize("item", kuberay_documents(), ids=doc_id)
def test_referenced_configmaps_secrets_pvcs_and_volumes_exist(item):
    spec = ray_cluster_spec(item[1])
    if spec is None:
        return
    configmaps, secrets, pvcs = declared("ConfigMap"), declared("Secret"), declared("PersistentVolumeClaim")
    head_volumes = {v["name"] for v in spec["headGroupSpec"]["template"]["spec"].get("volumes", [])}
    for mount in spec.get("autoscalerOptions", {}).get("volumeMounts", []):
        assert mount["name"] in head_volumes, f"autoscaler mounts unknown volume {mount['name']}"
    for group_name, group in ray_groups(spec):
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{group_name}: no volume {mount['name']}"
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in pvcs
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets


SECRETS_MOUNT = "/etc/clipguard/secrets"


def _mounted_secret(group: dict, mount_path: str) -> str | None:
    """The Secret mounted at ``mount_path`` in the group's Ray container (None: nothing there)."""
    mounts = {m["mountPath"]: m for m in ray_container(group).get("volumeMounts", [])}
    if mount_path not in mounts:
        return None
    volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
    return volumes[mounts[mount_path]["name"]].get("secret", {}).get("secretName")


def test_stream_pods_get_settings_and_only_the_head_gets_credentials_as_files():
    for group_name, group in ray_groups(stream_cluster()["spec"]):
        container = ray_container(group)
        refs = [next(iter(s.values()))["name"] for s in container["envFrom"]]
        assert refs == ["clipguard-config"], f"{group_name}: no credentials in the environment"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/etc/clipguard/tls"]["readOnly"] is True, group_name
        assert mounts["/models"]["readOnly"] is True, group_name
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if group_name == "head":  # the driver runs here and reads the files
            assert _mounted_secret(group, SECRETS_MOUNT) == "clipguard-credentials"
            assert mounts[SECRETS_MOUNT]["readOnly"] is True
            assert env["CLIPGUARD_SECRETS_DIR"] == SECRETS_MOUNT
        else:  # actors get their clients' settings from the driver
            assert _mounted_secret(group, SECRETS_MOUNT) is None and "CLIPGUARD_SECRETS_DIR" not in env, group_name
            volumes = group["template"]["spec"]["volumes"]
            assert not [v for v in volumes if v.get("secret", {}).get("secretName") == "clipguard-credentials"]


def test_kustomization_lists_existing_files_and_no_example_secret():
    kustomization = yaml.safe_load((KUBERAY_DIR / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (KUBERAY_DIR / resource).is_file(), resource
    assert "secret.example.yaml" not in kustomization["resources"]
    assert "rayjob-train.yaml" not in kustomization["resources"]  # generateName: `kubectl create` only


# --- the app's configuration ---------------------------------------------------------------------


def clipguard_env() -> dict[str, str]:
    """What a stream pod sees: the ConfigMap plus the example Secret's keys."""
    env = dict(the("ConfigMap", "clipguard-config")["data"])
    env.update(the("Secret", "clipguard-credentials")["stringData"])
    return env


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("CLIPGUARD_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_configmap_and_secret_names_are_settings_the_app_accepts(clean_env, tmp_path):
    from clipguard.config import ClipguardConfig
    from pipeline.endpoints import refuse_implicit_embedded

    env = clipguard_env()
    assert all(key.startswith("CLIPGUARD_") for key in env)
    for key, value in the("ConfigMap", "clipguard-config")["data"].items():
        clean_env.setenv(key, value)
    for key, value in the("Secret", "clipguard-credentials")["stringData"].items():
        (tmp_path / key).write_text(value)  # the Secret as the head mounts it: one file per key
    clean_env.setenv("CLIPGUARD_SECRETS_DIR", str(tmp_path))
    config = ClipguardConfig()  # extra="forbid": a misspelt name raises here
    refuse_implicit_embedded(config)  # the cluster's stream names its real Kafka and Redis
    assert config.kafka.security_protocol == "SASL_SSL"
    assert config.kafka.sasl_mechanism is not None
    assert config.kafka.sasl_password is not None and config.kafka.ssl_cafile is not None
    assert config.redis.url.startswith("rediss://")
    assert config.redis.password is not None and config.redis.ssl_ca_certs is not None
    assert config.ray.address == "auto"
    assert config.model_dir == Path("/models") and config.model.checkpoint is not None


def test_misspelt_setting_in_configmap_would_stop_the_stream(clean_env):
    from pydantic import ValidationError

    from clipguard.config import ClipguardConfig

    clean_env.setenv("CLIPGUARD_STREAM__DETECTOR", "2")
    with pytest.raises(ValidationError, match="extra"):
        ClipguardConfig()


def test_credentials_only_in_the_secret_and_paths_on_mounts():
    data = the("ConfigMap", "clipguard-config")["data"]
    assert not [k for k in data if re.search(r"PASSWORD|USERNAME|TOKEN|SECRET", k)]
    assert set(the("Secret", "clipguard-credentials")["stringData"]) == {
        "CLIPGUARD_KAFKA__SASL_USERNAME",
        "CLIPGUARD_KAFKA__SASL_PASSWORD",
        "CLIPGUARD_REDIS__PASSWORD",
    }
    tls_files = set(the("Secret", "clipguard-tls")["stringData"])
    for key in ("CLIPGUARD_KAFKA__SSL_CAFILE", "CLIPGUARD_REDIS__SSL_CA_CERTS"):
        path = Path(data[key])
        assert path.parent == Path("/etc/clipguard/tls") and path.name in tls_files, key
    assert set(the("Secret", "clipguard-ray-auth")["stringData"]) == {"auth_token"}  # the key KubeRay reads


def test_stream_model_files_are_named_in_the_mounted_model_directory():
    """CLIPGUARD_MODEL_DIR is the models mount of every stream pod, and every model file is found there."""
    from clipguard.model_files import candidates, names_a_file

    data = the("ConfigMap", "clipguard-config")["data"]
    model_dir = data["CLIPGUARD_MODEL_DIR"]
    for group_name, group in ray_groups(stream_cluster()["spec"]):
        mounts = {m["mountPath"]: m for m in ray_container(group)["volumeMounts"]}
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        claim = volumes[mounts[model_dir]["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim == "clipguard-models" and mounts[model_dir]["readOnly"] is True, group_name
    assert names_a_file(data["CLIPGUARD_MODEL__PRETRAINED"]), "a weights file, not a tag that downloads"
    for key in ("CLIPGUARD_MODEL__PRETRAINED", "CLIPGUARD_MODEL__CHECKPOINT", "CLIPGUARD_FACES__DETECTOR_PATH"):
        first = candidates(data[key], Path(model_dir))[0]  # where the driver looks first
        assert first.is_relative_to(model_dir) and first != Path(model_dir), key


def _shipped_config(env):
    """The stream's configuration exactly as the ConfigMap (and Secret) set it, on a clean environment."""
    from clipguard.config import ClipguardConfig

    for key, value in clipguard_env().items():
        env.setenv(key, value)
    return ClipguardConfig()


def test_shipped_deploy_autoscales_every_pool_between_bounds_the_worker_groups_hold(clean_env):
    """Autoscaling is on as shipped, with explicit bounds per pool that fit the pods KubeRay may create."""
    cfg = _shipped_config(clean_env)  # also validates: starting sizes lie within the bounds
    auto, stream = cfg.autoscale, cfg.stream
    data = the("ConfigMap", "clipguard-config")["data"]
    for stage in ("decoders", "face_workers", "detectors"):
        for end in ("MIN", "MAX"):
            assert f"CLIPGUARD_AUTOSCALE__{stage.upper()}_{end}" in data, f"{stage} {end.lower()} is not explicit"
    assert auto.enabled and data["CLIPGUARD_AUTOSCALE__ENABLED"] == "true"
    for stage in ("decoders", "face_workers", "detectors"):
        assert getattr(auto, f"{stage}_min") < getattr(auto, f"{stage}_max"), f"{stage} cannot move"
    groups = {g["groupName"]: g for g in stream_cluster()["spec"]["workerGroupSpecs"]}
    gpu, cpu = groups["gpu-workers"], groups["cpu-workers"]
    gpus_per_pod = float(gpu["rayStartParams"]["num-gpus"])
    assert stream.detector_num_gpus > 0, "detectors run on the GPU group"
    # The detector pool's bounds are the GPU group's: its minimum never waits for a pod, its maximum fills it.
    assert auto.detectors_min * stream.detector_num_gpus <= gpu["minReplicas"] * gpus_per_pod
    assert auto.detectors_max * stream.detector_num_gpus == gpu["maxReplicas"] * gpus_per_pod
    assert stream.detector_num_cpus <= float(gpu["rayStartParams"]["num-cpus"])
    per_pod = float(cpu["rayStartParams"]["num-cpus"])
    most = auto.decoders_max * stream.decoder_num_cpus + auto.face_workers_max * stream.face_num_cpus
    assert most <= cpu["maxReplicas"] * per_pod, "the CPU pools at their maxima must fit the cpu-workers group"
    assert max(stream.decoder_num_cpus, stream.face_num_cpus) <= per_pod, "an actor must fit one CPU pod"


def test_shipped_autoscaling_reaches_the_policy(clean_env):
    """The ConfigMap's bounds are what the policy enforces (no default quietly in between)."""
    from pipeline.autoscaler import policy_from_config

    cfg = _shipped_config(clean_env)
    policy = policy_from_config(cfg.autoscale, cfg.stream)
    data = the("ConfigMap", "clipguard-config")["data"]
    assert policy.detectors.max_size == int(data["CLIPGUARD_AUTOSCALE__DETECTORS_MAX"])
    assert policy.face_workers.min_size == int(data["CLIPGUARD_AUTOSCALE__FACE_WORKERS_MIN"])
    assert policy.decoders.max_size == int(data["CLIPGUARD_AUTOSCALE__DECODERS_MAX"])
    assert policy.target_drain_s == float(data["CLIPGUARD_AUTOSCALE__TARGET_DRAIN_S"])


# --- rendered as the cluster runs them: token auth, the training job's paths, name and workers ---------


def test_kustomized_manifests_valid_against_kuberay_crds():
    rendered = kustomized()
    ray_docs = [d for d in rendered if d["kind"] in KUBERAY_KINDS]
    assert [d["kind"] for d in ray_docs] == ["RayCluster", "RayJob"]
    for doc in ray_docs:
        assert doc["metadata"]["namespace"] == "clipguard"
        assert validate(doc) == []
        for _, group in ray_groups(ray_cluster_spec(doc) or {"headGroupSpec": {"template": {"spec": {}}}}):
            for container in group["template"]["spec"].get("containers", []):
                assert container["image"] == "registry.example.com/clipguard:0.1.0", container["image"]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


@pytest.mark.parametrize("item", [i for i in kuberay_documents() if ray_cluster_spec(i[1])], ids=doc_id)
def test_ray_token_auth_on_with_a_declared_token_secret(item):
    """authOptions token mode (KubeRay >= 1.6): dashboard, job API and control plane need the token."""
    spec = ray_cluster_spec(item[1])
    auth = spec.get("authOptions", {})
    assert auth.get("mode") == "token", "Ray token authentication must be on"
    assert not auth.get("enableK8sTokenAuth"), "K8s token auth is not supported for RayJob clusters"
    assert _version(spec["rayVersion"]) >= (2, 52, 0), "KubeRay refuses token auth below Ray 2.52"
    secret = the("Secret", auth["secretName"])
    assert "auth_token" in secret["stringData"], "KubeRay reads the token from the key auth_token"
    for group_name, group in ray_groups(spec):
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert "RAY_AUTH_MODE" not in env and "RAY_AUTH_TOKEN" not in env, f"{group_name}: KubeRay sets these"


def _configmaps() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["data"] for _, d in all_documents() if d["kind"] == "ConfigMap"}


def _mounts(group: dict) -> dict[str, tuple[str, bool]]:
    """mountPath -> (PVC claim name or '', read-only) for the group's Ray container."""
    volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
    out = {}
    for mount in ray_container(group)["volumeMounts"]:
        volume = volumes[mount["name"]]
        claim = volume.get("persistentVolumeClaim", {}).get("claimName", "")
        read_only = bool(mount.get("readOnly") or volume.get("persistentVolumeClaim", {}).get("readOnly"))
        out[mount["mountPath"]] = (claim, read_only)
    return out


def _on_mount(path: Path, mounts: dict[str, tuple[str, bool]]) -> tuple[str, bool] | None:
    for mount_path, info in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if path.is_relative_to(mount_path) and path != Path(mount_path):
            return info
    return None


def render_train_job(job: dict, rng: random.Random):
    """(cluster name, TrainConfig, cd directories) of one submission of the training RayJob."""
    from training.cli import train_command
    from training.train_config import load_train_config

    cluster_name = job_cluster_name(created_name(job["metadata"], rng), rng)
    head = ray_container(job["spec"]["rayClusterSpec"]["headGroupSpec"])
    cds, argv = shell_argv(job["spec"]["entrypoint"], container_env(head, _configmaps(), cluster_name))
    script, *args = argv
    assert script == "training/train.py", argv
    with train_command.make_context("train", list(args)) as ctx:  # the real flags, nothing run
        config, overrides = ctx.params["config"], ctx.params["overrides"]
    assert cds == ["/app"], "the image's source tree: training/configs/... and training/train.py resolve there"
    return cluster_name, load_train_config(REPO_ROOT / config, overrides), cds


def train_job_problems(job: dict) -> list[str]:
    """What would make the training RayJob fail or misuse its cluster, as rendered for two submissions."""
    from clipguard.model_files import names_a_file

    rng = random.Random(0)
    try:
        (name_a, cfg, _), (name_b, cfg_b, _) = render_train_job(job, rng), render_train_job(job, rng)
    except subprocess.CalledProcessError as exc:
        return [f"entrypoint fails in the shell: {exc.stderr.strip()}"]
    spec = job["spec"]["rayClusterSpec"]
    problems = []
    groups = dict(ray_groups(spec))
    for group_name, group in groups.items():
        mounts = _mounts(group)
        crops = _on_mount(cfg.data.crops, mounts)
        if not cfg.data.crops.is_absolute() or crops is None or crops[0] != "clipguard-data":
            problems.append(f"{group_name}: data.crops {cfg.data.crops} is not on the clipguard-data volume")
        weights = Path(cfg.model.pretrained)
        on = _on_mount(weights, mounts) if names_a_file(cfg.model.pretrained) and weights.is_absolute() else None
        if on is None or on[0] != "clipguard-models":
            where = f"{group_name}: model.pretrained {cfg.model.pretrained!r}"
            problems.append(f"{where} is not a file on the models volume")
        runs = _on_mount(cfg.run.storage_path / "x", mounts)
        if not cfg.run.storage_path.is_absolute() or runs is None or runs != ("clipguard-runs", False):
            problems.append(f"{group_name}: run.storage_path {cfg.run.storage_path} is not the writable runs volume")
    if cfg.run.name == cfg_b.run.name:
        problems.append(f"run.name {cfg.run.name!r} is the same for every job: the second run collides")
    if (cfg.run.name, cfg_b.run.name) != (name_a, name_b):
        problems.append(f"run.name {cfg.run.name!r} is not the job's cluster name {name_a!r}")
    gpu_groups = [g for n, g in groups.items() if n != "head" and float(g["rayStartParams"].get("num-gpus", 0))]
    gpus = sum(g["maxReplicas"] * float(g["rayStartParams"]["num-gpus"]) for g in gpu_groups)
    if not cfg.run.use_gpu or cfg.run.num_workers != gpus:
        problems.append(f"run.num_workers {cfg.run.num_workers} (use_gpu {cfg.run.use_gpu}) for {gpus:g} GPUs")
    for g in gpu_groups:
        if not g["minReplicas"] == g.get("replicas") == g["maxReplicas"]:
            problems.append(f"{g['groupName']}: the trainer needs every GPU pod from the start (min=replicas=max)")
        if cfg.run.cpus_per_worker > float(g["rayStartParams"]["num-cpus"]):
            problems.append(f"run.cpus_per_worker {cfg.run.cpus_per_worker} does not fit a {g['groupName']} pod")
    if cfg.data.batch_size % cfg.run.num_workers:
        problems.append(f"data.batch_size {cfg.data.batch_size} does not split over {cfg.run.num_workers} workers")
    return problems


def test_train_job_as_rendered_reads_mounts_names_each_run_and_uses_every_gpu():
    job = train_job()
    assert train_job_problems(job) == []
    rng = random.Random(1)
    name, cfg, _ = render_train_job(job, rng)
    assert re.fullmatch(r"clipguard-train-[a-z0-9]{5}-[a-z0-9]{5}", cfg.run.name) and cfg.run.name == name
    assert cfg.model.pretrained == "/models/openai/ViT-L-14.pt" and cfg.run.num_workers == 4
    assert cfg.loss.preset == "paper"  # the preset's recipe is untouched; only where things are changed


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("--set data.crops=/data/ffpp-c23/crops.csv", "", "data.crops data/ffpp-c23/crops.csv is not on"),
        ("=${CLIPGUARD_MODEL_DIR:?}/openai/ViT-L-14.pt", "=openai", "model.pretrained 'openai' is not a file"),
        ("--set run.storage_path=/app/runs", "--set run.storage_path=/tmp/runs", "not the writable runs volume"),
        ("${RAY_CLUSTER_NAME:?set by KubeRay}", "paper-run", "is the same for every job"),
        ("--set run.num_workers=4", "--set run.num_workers=1", "run.num_workers 1 (use_gpu True) for 4 GPUs"),
        ("${RAY_CLUSTER_NAME:?set by KubeRay}", "${RAY_JOB_NAME:?set by KubeRay}", "entrypoint fails in the shell"),
    ],
)
def test_train_job_check_catches_what_the_shipped_job_got_wrong(old, new, problem):
    job = copy.deepcopy(train_job())
    assert old in job["spec"]["entrypoint"]
    job["spec"]["entrypoint"] = job["spec"]["entrypoint"].replace(old, new)
    problems = train_job_problems(job)
    assert any(problem in p for p in problems), problems


def test_train_job_check_catches_a_gpu_group_larger_than_the_workers():
    job = copy.deepcopy(train_job())
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["replicas"] = group["maxReplicas"] = 8
    assert any("run.num_workers 4 (use_gpu True) for 8 GPUs" in p for p in train_job_problems(job))
