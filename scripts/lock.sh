#!/usr/bin/env bash
# Regenerate the dependency locks in requirements/ (`make lock`), with uv, from pyproject.toml.
#
#   runtime.lock  [project] dependencies: what the image installs
#   gpu.lock      what the `gpu` extra adds to runtime (the GPU image)
#   demo.lock     what the `demo` extra adds to runtime (embedded broker and Redis)
#   dev.lock      what the `dev` extra adds to runtime + demo (tests, lint, uv itself)
#
# Each layer is resolved together with the layers below it (they are its constraints), so any
# stack of them is one consistent set; every line carries its sha256 hashes and pip installs them
# with --require-hashes --no-deps. Resolution is for CPython 3.11 on x86-64 manylinux (the image's
# python:3.11.14 bookworm; the dev machines' 3.11 too). Existing pins are kept unless pyproject.toml moves
# them (uv prefers the versions already in an output file); pass --upgrade to move everything.
# uv resolves against PyPI; torch/torchvision are pinned in pyproject.toml, and the wheels of a
# local mirror that pip may install them from have the same hashes as PyPI's.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
out=requirements
common=(--quiet --generate-hashes --python-version 3.11.14 --python-platform x86_64-unknown-linux-gnu
        --excludes "$out/excludes.txt" --custom-compile-command "make lock" "$@")

names() { sed -n 's/^\([A-Za-z0-9][A-Za-z0-9._-]*\)==.*/\1/p' "$@"; }
no_emit() { for name in $(names "$@"); do printf -- '--no-emit-package=%s\n' "$name"; done; }

"$uv" pip compile pyproject.toml "${common[@]}" -o "$out/runtime.lock"
for extra in gpu demo; do
  # shellcheck disable=SC2046
  "$uv" pip compile pyproject.toml "${common[@]}" --extra "$extra" -c "$out/runtime.lock" \
    $(no_emit "$out/runtime.lock") -o "$out/$extra.lock"
done
# shellcheck disable=SC2046
"$uv" pip compile pyproject.toml "${common[@]}" --extra demo --extra dev -c "$out/runtime.lock" -c "$out/demo.lock" \
  $(no_emit "$out/runtime.lock" "$out/demo.lock") -o "$out/dev.lock"
# uv lists every package a layer leaves to the layers below; that list is noise here.
for lock in "$out"/{runtime,gpu,demo,dev}.lock; do
  sed -i '/^# The following packages were excluded from the output:$/,$d' "$lock"
  sed -i -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$lock"  # no trailing blank lines
done
for lock in "$out"/{runtime,gpu,demo,dev}.lock; do
  printf '[lock] %s: %d packages\n' "$lock" "$(names "$lock" | wc -l)"
done
