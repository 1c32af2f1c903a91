"""Render deploy/kuberay as the cluster would: kustomize's namespace and image settings, the API
server's generateName, what KubeRay adds to every Ray container, and a RayJob entrypoint expanded
by a real shell (``sh -c``, as Ray's job supervisor runs it) with the pod's environment."""

from __future__ import annotations

import copy
import random
import string
import subprocess
from typing import Any

import yaml

from tests.deploy.kube import KUBERAY_DIR, load_documents, ray_cluster_spec, ray_groups


def kustomized() -> list[dict[str, Any]]:
    """The documents of ``kubectl apply -k deploy/kuberay``: namespace and images as kustomization.yaml sets them."""
    kustomization = yaml.safe_load((KUBERAY_DIR / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in kustomization.get("images", [])}
    docs = []
    for resource in kustomization["resources"]:
        for doc in load_documents(KUBERAY_DIR / resource):
            doc = copy.deepcopy(doc)
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = kustomization["namespace"]
            spec = ray_cluster_spec(doc) if doc["kind"] in {"RayCluster", "RayJob", "RayService"} else None
            for _, group in ray_groups(spec) if spec else []:
                for container in group["template"]["spec"]["containers"]:
                    name = container["image"].rsplit(":", 1)[0]
                    container["image"] = images.get(name, container["image"])
            docs.append(doc)
    return docs


def _suffix(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(5))


def created_name(metadata: dict[str, Any], rng: random.Random) -> str:
    """``metadata.name``, or what the API server makes of ``generateName`` (5 random characters)."""
    return metadata.get("name") or metadata["generateName"] + _suffix(rng)


def job_cluster_name(job_name: str, rng: random.Random) -> str:
    """The RayCluster KubeRay creates for a RayJob: ``<job name>-<5 random>`` (utils.GenerateRayClusterName)."""
    return f"{job_name}-{_suffix(rng)}"


def container_env(
    container: dict[str, Any], configmaps: dict[str, dict[str, str]], cluster_name: str
) -> dict[str, str]:
    """The environment of a Ray container: envFrom ConfigMaps, literal env, and what KubeRay injects."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
    env["RAY_CLUSTER_NAME"] = cluster_name  # common/pod.go: metadata.labels['ray.io/cluster']
    return env


def shell_argv(entrypoint: str, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """(directories `cd`-ed to, argv of `python`) when ``sh -c entrypoint`` runs with exactly ``env``.

    `cd` and `python` are shell functions that record their arguments, so the real shell does all
    the expansion, quoting and ``${VAR:?}`` checks, and nothing else runs.

    Raises:
        subprocess.CalledProcessError: the shell failed (e.g. a ``${VAR:?}`` with VAR unset).
    """
    script = (
        'cd() { printf "cd\\t%s\\n" "$1"; }\n'
        'python() { printf "python"; for a in "$@"; do printf "\\t%s" "$a"; done; printf "\\n"; }\n' + entrypoint
    )
    out = subprocess.run(["sh", "-c", script], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    cds, argv = [], []
    for line in out.splitlines():
        kind, *args = line.split("\t")
        if kind == "cd":
            cds.extend(args)
        else:
            argv = args
    return cds, argv
