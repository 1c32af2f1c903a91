"""Offline validation of the deploy/ manifests against KubeRay's own CRD schemas.

The CRDs (``shared/schemas/kuberay/ray.io_*.yaml``) carry an OpenAPI v3 schema per
version. Two checks use it:

* :func:`schema_errors`: JSON-schema validation (types, enums, required fields, quantity
  patterns), after turning the OpenAPI dialect into JSON schema (``nullable``,
  ``x-kubernetes-int-or-string``; the other ``x-kubernetes-*`` keys are annotations).
* :func:`unknown_field_errors`: CRD schemas do not set ``additionalProperties: false``,
  so a misspelt field passes JSON-schema validation, and the API server silently prunes
  it. This walk fails on every key the schema does not declare, and on duplicate keys in
  ``x-kubernetes-list-type: map|set`` lists, which the API server rejects.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
KUBERAY_DIR = DEPLOY_DIR / "kuberay"

CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
# What the API server accepts in an object's own metadata (ObjectMeta, writable part).
OBJECT_META_KEYS = {"name", "generateName", "namespace", "labels", "annotations", "finalizers", "ownerReferences"}

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def shared_dir() -> Path:
    """The shared folder: ``$CLIPGUARD_SHARED`` if set, else ``<repo>/../shared``."""
    override = os.environ.get("CLIPGUARD_SHARED")
    return Path(override) if override else REPO_ROOT.parent / "shared"


def kuberay_schema_dir() -> Path:
    return shared_dir() / "schemas" / "kuberay"


def load_documents(path: Path) -> list[dict[str, Any]]:
    """All YAML documents of a file, empty ones dropped."""
    with path.open() as f:
        return [doc for doc in yaml.load_all(f, Loader=_Loader) if doc is not None]


@functools.cache
def crd_schema(kind: str, version: str = "v1") -> dict[str, Any]:
    """The openAPIV3Schema of ``kind`` at ``version``, as KubeRay's CRD file defines it."""
    path = kuberay_schema_dir() / CRD_FILES[kind]
    if not path.is_file():
        msg = f"KubeRay CRD for {kind} not found at {path} (set CLIPGUARD_SHARED to the shared folder)"
        raise FileNotFoundError(msg)
    (crd,) = load_documents(path)
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return entry["schema"]["openAPIV3Schema"]
    msg = f"{path} has no version {version}"
    raise KeyError(msg)


def to_json_schema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes structural schema) -> JSON schema, recursively."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_json_schema(value) for key, value in node.items() if not key.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    schema = to_json_schema(crd_schema(kind))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """JSON-schema violations of a KubeRay manifest, as 'path: message' strings."""
    errors = _validator(manifest["kind"]).iter_errors(manifest)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def unknown_field_errors(manifest: dict[str, Any]) -> list[str]:
    """Keys the CRD does not declare (the API server would drop them) and duplicate list keys."""
    schema = crd_schema(manifest["kind"])
    errors = [
        f"metadata.{key}: not an ObjectMeta field"
        for key in manifest.get("metadata", {})
        if key not in OBJECT_META_KEYS
    ]
    body = {k: v for k, v in manifest.items() if k != "metadata"}
    root = {**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "metadata"}}
    errors.extend(_walk(body, root, ""))
    return errors


def _walk(value: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                yield from _walk(item, properties[key], where)
            elif isinstance(extra, dict):
                yield from _walk(item, extra, where)
            elif extra is True:
                continue
            else:
                yield f"{where}: unknown field (not in the CRD schema; the API server would prune it)"
    elif isinstance(value, list):
        item_schema = schema.get("items", {})
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            seen = [tuple(item.get(k) for k in keys) for item in value if isinstance(item, dict)]
            for dup in {k for k in seen if seen.count(k) > 1}:
                yield f"{path}: duplicate entry for {dict(zip(keys, dup, strict=True))}"
        elif list_type == "set":
            for dup in {repr(v) for v in value if value.count(v) > 1}:
                yield f"{path}: duplicate set entry {dup}"
        for i, item in enumerate(value):
            yield from _walk(item, item_schema, f"{path}[{i}]")


def validate(manifest: dict[str, Any]) -> list[str]:
    """Every schema and unknown-field error of one KubeRay manifest."""
    return schema_errors(manifest) + unknown_field_errors(manifest)


# --- helpers for the semantic checks -------------------------------------------------------

_QUANTITY = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_SUFFIX = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ('500m', '8', '16Gi', 1) as a number."""
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(value)
    if not match:
        msg = f"not a quantity: {value!r}"
        raise ValueError(msg)
    return float(match["num"]) * _SUFFIX[match["suffix"]]


def ray_cluster_spec(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The RayCluster spec inside a RayCluster, RayJob or RayService (None: clusterSelector)."""
    kind = manifest["kind"]
    if kind == "RayCluster":
        return manifest["spec"]
    if kind == "RayJob":
        return manifest["spec"].get("rayClusterSpec")
    if kind == "RayService":
        return manifest["spec"]["rayClusterConfig"]
    msg = f"not a KubeRay kind: {kind}"
    raise ValueError(msg)


def ray_groups(cluster_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(group name, group spec) for the head ('head') and every worker group."""
    yield "head", cluster_spec["headGroupSpec"]
    for group in cluster_spec.get("workerGroupSpecs", []):
        yield group["groupName"], group


def mutated(manifest: dict[str, Any], path: str, value: Any = None, *, rename: str | None = None) -> dict[str, Any]:
    """A deep copy with one change at a dotted path ('spec.workerGroupSpecs.0.minReplicas').

    With ``rename``, the last key is renamed instead (a misspelling); else it is set to ``value``.
    """
    result = copy.deepcopy(manifest)
    *parents, last = path.split(".")
    node: Any = result
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if rename is not None:
        node[rename] = node.pop(key)
    else:
        node[key] = value
    return result
