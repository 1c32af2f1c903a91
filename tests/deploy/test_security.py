"""Security defaults of everything under deploy/: no credentials in files, the dashboard never
exposed, every pod and container non-root and locked down."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kube import DEPLOY_DIR, KUBERAY_DIR, load_documents, mutated, ray_cluster_spec, ray_groups

EXAMPLE_SECRET = KUBERAY_DIR / "secret.example.yaml"
PLACEHOLDER = re.compile(r"^\s*<REPLACE-ME[^>]*>\s*$")
SECRET_WORD = re.compile(r"pass(word|wd)?|secret|token|api[-_]?key|credential|private[-_]?key", re.IGNORECASE)
# keys that name or point at a secret rather than hold one
REFERENCE_KEY = re.compile(
    r"(secret|password)(name|ref|keyref|s?file|path|_file|s?_?dir)$|^secretref$|^secrets?$", re.IGNORECASE
)

PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
AWS_ACCESS_KEY = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
URL_WITH_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@\"']+:[^/\s@\"']+@")
ASSIGNED_SECRET = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=(\S+)")


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _is_reference(value: str) -> bool:
    """$VAR, ${VAR}, $(VAR) (Kubernetes), $(command ...) (a shell reading it from elsewhere), {{ template }}."""
    return bool(re.fullmatch(r"\$\{?\w+\}?|\$\(.*|\{\{.*\}\}", value.strip()))


def _is_placeholder(value: str) -> bool:
    """'...', "<your password>", REPLACE-ME: what documentation writes instead of a value."""
    bare = value.strip("'\"`,;)")
    return bare in {"", "..."} or bare.startswith("<") or "REPLACE-ME" in bare


def text_findings(text: str) -> list[str]:
    """Credentials in free text: private keys, cloud keys, URLs with a password, NAME=value."""
    found = []
    if PRIVATE_KEY.search(text):
        found.append("private key")
    if AWS_ACCESS_KEY.search(text):
        found.append("AWS access key id")
    found += [f"credentials in URL {m.group(0)}" for m in URL_WITH_PASSWORD.finditer(text)]
    for name, value in ASSIGNED_SECRET.findall(text):
        if (
            SECRET_WORD.search(name)
            and not REFERENCE_KEY.search(name)
            and not (_is_reference(value) or _is_placeholder(value))
        ):
            found.append(f"{name}=... assigned a literal")
    return found


def yaml_findings(node: Any, path: str = "", *, allow_placeholders: bool = False) -> list[str]:
    """Credentials in parsed YAML/JSON: a secret-named key with a literal value, an env entry
    whose secret-named variable has a literal `value` instead of `valueFrom`."""
    found = []
    if isinstance(node, dict):
        name = node.get("name")
        secret_named = isinstance(name, str) and SECRET_WORD.search(name) and not REFERENCE_KEY.search(name)
        if secret_named and "value" in node and not _is_reference(node["value"]):
            found.append(f"{path}: env {name} has a literal value (use valueFrom.secretKeyRef)")
        for key, value in node.items():
            where = f"{path}.{key}"
            if isinstance(value, str) and SECRET_WORD.search(str(key)) and not REFERENCE_KEY.search(str(key)):
                ok = _is_reference(value) or (allow_placeholders and PLACEHOLDER.match(value))
                if not ok:
                    found.append(f"{where}: literal value for a secret-like key")
            found += yaml_findings(value, where, allow_placeholders=allow_placeholders)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += yaml_findings(item, f"{path}[{i}]", allow_placeholders=allow_placeholders)
    return found


def file_findings(path: Path) -> list[str]:
    text = path.read_text()
    found = text_findings(text)
    if path.suffix in {".yaml", ".yml", ".json"}:
        docs = load_documents(path) if path.suffix != ".json" else [yaml.safe_load(text)]
        for doc in docs:
            found += yaml_findings(doc, path.name)
    return found


# --- no credentials ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p in deploy_files() if p != EXAMPLE_SECRET], ids=lambda p: str(p.name))
def test_no_credentials_in_deploy_files(path):
    assert file_findings(path) == []


def test_example_secret_holds_only_placeholders():
    docs = load_documents(EXAMPLE_SECRET)
    assert docs and all(d["kind"] == "Secret" for d in docs)
    assert "EXAMPLE ONLY" in EXAMPLE_SECRET.read_text()
    for doc in docs:
        assert "data" not in doc, "base64 hides what is in there: use stringData placeholders"
        for key, value in doc["stringData"].items():
            assert PLACEHOLDER.match(value), f"{doc['metadata']['name']}.{key} is not a <REPLACE-ME> placeholder"
    assert text_findings(EXAMPLE_SECRET.read_text()) == []


@pytest.mark.parametrize(
    "planted",
    [
        "CLIPGUARD_REDIS__URL: rediss://clipguard:hunter2@redis.internal:6380/0\n",
        "env:\n  - name: CLIPGUARD_KAFKA__SASL_PASSWORD\n    value: hunter2\n",
        "data:\n  CLIPGUARD_REDIS__PASSWORD: hunter2\n",
        "run_options: ['-e CLIPGUARD_KAFKA__SASL_PASSWORD=hunter2']\n",
        "key: |\n  -----BEGIN RSA PRIVATE KEY-----\n  abc\n",
        "aws: AKIAABCDEFGHIJKLMNOP\n",
    ],
)
def test_scanner_finds_planted_credentials(tmp_path, planted):
    path = tmp_path / "leak.yaml"
    path.write_text(planted)
    assert file_findings(path)


def test_scanner_accepts_references_and_documentation_placeholders():
    ok = "env:\n  - name: X_PASSWORD\n    valueFrom: {secretKeyRef: {name: s, key: k}}\nsecretName: clipguard-tls\n"
    assert yaml_findings(yaml.safe_load(ok)) == []
    assert text_findings("REDIS_PASSWORD=$REDIS_PASSWORD") == []
    assert text_findings("RAY_AUTH_TOKEN=$(kubectl get secret ray-auth -o jsonpath=...)") == []
    assert text_findings("--from-literal=CLIPGUARD_REDIS__PASSWORD='...' and X_TOKEN=<your token>") == []


# --- the dashboard is never exposed ------------------------------------------------------------------


def exposure_findings(doc: dict) -> list[str]:
    kind = doc.get("kind")
    found = []
    if kind in {"Ingress", "Route", "Gateway", "HTTPRoute"}:
        found.append(f"{kind} {doc['metadata']['name']}")
    if kind == "Service" and doc["spec"].get("type") in {"LoadBalancer", "NodePort"}:
        found.append(f"Service {doc['metadata']['name']} is {doc['spec']['type']}")
    if kind in {"RayCluster", "RayJob", "RayService"}:
        spec = ray_cluster_spec(doc)
        head = (spec or {}).get("headGroupSpec", {})
        if head.get("serviceType", "ClusterIP") != "ClusterIP":
            found.append(f"head serviceType {head['serviceType']}")
        if head.get("enableIngress"):
            found.append("head enableIngress")
        if head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") != "ClusterIP":
            found.append("headService type")
    return found


def all_k8s_documents() -> list[dict]:
    docs = []
    for path in deploy_files():
        if path.suffix in {".yaml", ".yml"} and path.parent.name in {"kuberay", "prometheus"}:
            docs += [d for d in load_documents(path) if isinstance(d, dict) and "kind" in d]
    return docs


def test_dashboard_not_exposed_outside_the_cluster():
    docs = all_k8s_documents()
    assert any(d["kind"] == "RayCluster" for d in docs)
    assert [f for d in docs for f in exposure_findings(d)] == []


@pytest.mark.parametrize(
    ("path", "value"),
    [("spec.headGroupSpec.serviceType", "LoadBalancer"), ("spec.headGroupSpec.enableIngress", True)],
)
def test_exposure_check_flags_a_public_dashboard(path, value):
    (cluster,) = load_documents(KUBERAY_DIR / "raycluster.yaml")
    assert exposure_findings(mutated(cluster, path, value))


def test_network_policy_lets_in_only_operator_and_prometheus():
    (policy,) = load_documents(KUBERAY_DIR / "networkpolicy.yaml")
    rules = policy["spec"]["ingress"]
    opened = sorted(p["port"] for rule in rules if "ports" in rule for p in rule["ports"])
    assert opened == [8080, 8265]
    (unrestricted,) = [r for r in rules if "ports" not in r]
    assert unrestricted["from"] == [{"podSelector": policy["spec"]["podSelector"]}], "all ports: own pods only"


# --- pods run locked down ----------------------------------------------------------------------------


def ray_pod_templates() -> list[tuple[str, dict]]:
    templates = []
    for path in (KUBERAY_DIR / "raycluster.yaml", KUBERAY_DIR / "rayjob-train.yaml"):
        for doc in load_documents(path):
            for name, group in ray_groups(ray_cluster_spec(doc)):
                templates.append((f"{path.name}:{name}", group["template"]))
    return templates


def container_lockdown_findings(security: dict) -> list[str]:
    found = []
    if security.get("allowPrivilegeEscalation") is not False:
        found.append("allowPrivilegeEscalation must be false")
    if security.get("privileged"):
        found.append("privileged")
    if "ALL" not in security.get("capabilities", {}).get("drop", []):
        found.append("capabilities must drop ALL")
    if security.get("readOnlyRootFilesystem") is not True:
        found.append("readOnlyRootFilesystem must be true")
    if security.get("runAsUser") == 0 or security.get("runAsNonRoot") is False:
        found.append("runs as root")
    return found


@pytest.mark.parametrize(("where", "template"), ray_pod_templates(), ids=lambda v: v if isinstance(v, str) else "")
def test_ray_pods_non_root_and_locked_down(where, template):
    pod = template["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] > 0, where
    assert security["seccompProfile"]["type"] == "RuntimeDefault", where
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
    assert not [v for v in pod.get("volumes", []) if "hostPath" in v], where
    for container in pod["containers"]:
        assert container_lockdown_findings(container["securityContext"]) == [], (where, container["name"])
        assert not container["image"].endswith(":latest") and ":" in container["image"], where
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/home/clipguard"} <= mounts, f"{where}: writable /tmp and HOME on a read-only root"


def test_injected_autoscaler_container_locked_down_too():
    autoscaled = 0
    for path in (KUBERAY_DIR / "raycluster.yaml", KUBERAY_DIR / "rayjob-train.yaml"):
        for doc in load_documents(path):
            spec = ray_cluster_spec(doc)
            if not spec.get("enableInTreeAutoscaling"):
                assert "autoscalerOptions" not in spec, f"{path.name}: options of an autoscaler that is off"
                continue
            autoscaled += 1
            assert container_lockdown_findings(spec["autoscalerOptions"]["securityContext"]) == [], path.name
    assert autoscaled, "the stream's cluster autoscales"


def test_namespace_enforces_restricted_pod_security():
    (namespace,) = load_documents(KUBERAY_DIR / "namespace.yaml")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- secrets never on a command line; Ray's API behind a token ----------------------------------------


SECRET_FLAG = re.compile(r"--[a-z0-9-]*(password|passwd|secret|token|api-key)[a-z0-9-]*\b", re.I)


def test_secret_flags_are_caught_by_the_scan():
    assert SECRET_FLAG.search("clipguard run --redis-password x")
    assert SECRET_FLAG.search("run --kafka-sasl-password=$PW")
    assert not SECRET_FLAG.search("clipguard run --ray-address auto --kafka-sasl-mechanism SCRAM-SHA-512")


@pytest.mark.parametrize("path", deploy_files(), ids=lambda p: str(p.relative_to(DEPLOY_DIR)))
def test_no_secret_passed_as_a_flag_in_deploy_files(path):
    """Job entrypoints, start commands and documented commands: a flag shows in `ps` and in Ray's job list."""
    found = [m.group(0) for m in SECRET_FLAG.finditer(path.read_text())]
    assert found == [], f"{path.name}: secrets on a command line: {found}"


def test_stream_entrypoint_uses_no_flag_of_a_secret_field():
    import shlex

    from pipeline.cli import cli
    from pipeline.cli_options import config_fields

    (job,) = [d for d in load_documents(KUBERAY_DIR / "rayjob-stream.yaml") if d["kind"] == "RayJob"]
    program, command, *args = shlex.split(job["spec"]["entrypoint"])
    flags = {f"--{s}-{n}".replace("_", "-") if s else f"--{n}".replace("_", "-") for s, n, _, _ in config_fields()}
    assert all(a in flags for a in args if a.startswith("--")), args
    with cli.commands[command].make_context(command, args) as ctx:  # parses: no unknown (secret) option
        assert not [k for k, v in ctx.params.items() if v is not None and "password" in k]


def test_credentials_secret_is_mounted_as_files_never_as_environment():
    for path in (KUBERAY_DIR / "raycluster.yaml", KUBERAY_DIR / "rayjob-train.yaml"):
        for doc in load_documents(path):
            for name, group in ray_groups(ray_cluster_spec(doc)):
                for container in group["template"]["spec"]["containers"]:
                    refs = [s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s]
                    keyed = [e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
                    assert not refs and not keyed, f"{path.name}:{name}: secrets in the environment"


def test_ray_dashboard_and_job_api_need_a_token_everywhere():
    for path in (KUBERAY_DIR / "raycluster.yaml", KUBERAY_DIR / "rayjob-train.yaml"):
        for doc in load_documents(path):
            assert ray_cluster_spec(doc).get("authOptions", {}).get("mode") == "token", path.name
    launcher = (DEPLOY_DIR / "cluster-launcher" / "aws-gpu.yaml").read_text()
    assert "RAY_AUTH_MODE=token" in launcher, "ray up: token auth on every node too"
