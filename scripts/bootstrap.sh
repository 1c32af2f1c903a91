#!/usr/bin/env bash
# Idempotent set-up for a fresh machine of this kind (Debian, root or sudo):
#   1. ffmpeg + ffprobe from Debian when missing;
#   2. a virtualenv with the exact locked dependency set, cached outside the clone
#      under ~/.cache/clipguard/venv-<hash of pyproject.toml + requirements.lock>
#      and linked as .venv (a new clone reuses it; a dependency change builds a new one);
#   3. the project itself installed in develop mode for the `clipguard` command.
set -euo pipefail
cd "$(dirname "$0")/.."

py=${CLIPGUARD_PYTHON:-python3.11}
cache=${CLIPGUARD_VENV_CACHE:-$HOME/.cache/clipguard}

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  echo "[bootstrap] installing ffmpeg (Debian package)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

key=$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  echo "[bootstrap] building $venv (first time: a few minutes; torch is large)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$py" -m venv "$venv"
  # The lock is the whole resolved set: pip installs exactly it, no resolution of torch.
  "$venv/bin/pip" install -q --no-deps -r requirements.lock 2>&1 | { grep -v '^WARNING: Location' || true; }
  "$venv/bin/pip" check >/dev/null || { "$venv/bin/pip" check; exit 1; }
  touch "$venv/.complete"
fi
ln -sfn "$venv" .venv
# Cheap (no dependencies): points the `clipguard` script at this checkout.
.venv/bin/pip install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v '^WARNING: Location' || true; }
echo "[bootstrap] ready: $(readlink .venv)"
