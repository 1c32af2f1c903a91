#!/usr/bin/env bash
# Idempotent set-up for a fresh machine of this kind (Debian, root or sudo):
#   1. ffmpeg + ffprobe from Debian when missing;
#   2. the locked dependency set (requirements/runtime.lock + demo.lock + dev.lock: what the
#      tests need) in a virtualenv cached outside the clone, under
#      ~/.cache/clipguard/deps-<hash of those locks> (torch is large: built once, shared by
#      every clone; a dependency change builds a new one);
#   3. a thin virtualenv of this clone in .venv: its own interpreter, the cached
#      dependencies through a .pth file, and this checkout installed in develop mode.
#      Each clone gets its own `.venv/bin/clipguard`, so two clones never import each
#      other's code through a shared editable install.
set -euo pipefail
cd "$(dirname "$0")/.."

py=${CLIPGUARD_PYTHON:-python3.11}
cache=${CLIPGUARD_VENV_CACHE:-$HOME/.cache/clipguard}
# The layers a development machine and CI install (requirements/README.md); the image takes
# runtime.lock (+ gpu.lock) only.
locks=(requirements/runtime.lock requirements/demo.lock requirements/dev.lock)

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  echo "[bootstrap] installing ffmpeg (Debian package)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

key=$(cat "${locks[@]}" | sha256sum | cut -c1-16)
deps="$cache/deps-$key"
if [ ! -f "$deps/.complete" ]; then
  echo "[bootstrap] building $deps (first time: a few minutes; torch is large)"
  rm -rf "$deps"
  mkdir -p "$cache"
  "$py" -m venv "$deps"
  # The locks are the whole resolved set: pip installs exactly them, every file checked against
  # its sha256, and resolves nothing (torch 2.14.1 may come from a local mirror pip is set up
  # with: the same wheel, the same hash).
  reqs=(); for lock in "${locks[@]}"; do reqs+=(-r "$lock"); done
  "$deps/bin/pip" install -q --require-hashes --no-deps "${reqs[@]}" 2>&1 | { grep -v '^WARNING: Location' || true; }
  sh scripts/pip_check.sh "$deps/bin/python"
  touch "$deps/.complete"
fi

# The clone's own thin venv (rebuilt when the dependency set changes).
if [ -L .venv ] || [ "$(cat .venv/.deps 2>/dev/null)" != "$deps" ]; then
  rm -rf .venv
  "$py" -m venv --without-pip .venv
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  deps_site=$("$deps/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  # addsitedir (not a bare path) so the dependencies' own .pth files are processed too.
  echo "import site; site.addsitedir('$deps_site')" >"$site/_clipguard_deps.pth"
  # The dependencies' commands (ray, pytest, ruff, redis-server...) run this clone's interpreter.
  for tool in "$deps"/bin/*; do
    name=$(basename "$tool")
    case "$name" in python*|activate*|Activate*|pip*|clipguard) continue ;; esac
    if head -c 2 "$tool" | grep -q '#!' && head -1 "$tool" | grep -q "^#!$deps/bin/python"; then
      { echo "#!$PWD/.venv/bin/python"; tail -n +2 "$tool"; } >".venv/bin/$name"
      chmod +x ".venv/bin/$name"
    else
      ln -sf "$tool" ".venv/bin/$name"
    fi
  done
  echo "$deps" >.venv/.deps
fi
# Cheap (no dependencies): `clipguard` and the packages of this checkout.
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v '^WARNING: Location' || true; }
echo "[bootstrap] ready: .venv over $deps"
