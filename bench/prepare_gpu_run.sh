#!/usr/bin/env bash
# Prepare, on a machine with ffmpeg and the package index, what the GPU benchmark machine needs
# and cannot fetch (bench/README.md, "GPU node: the device run"):
#   .whl/                 cp312 wheels missing from that machine's image (exact versions of requirements/*.lock)
#   .gpu_run/assets/      the shared SCRFD model and photos (../shared does not travel)
#   .gpu_run/clips/       the benchmark's H.264 720p 10 s clips with recorded probes (no ffmpeg there)
# `--pins` prints the wheels' name==version and stops. Both folders are git-ignored; name them in the device run's `carry`. Total stays well under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# name==version as pinned by the locks (their names are normalised: open-clip-torch, pydantic-core)
lock() { grep -h -i -E "^${1//[-_]/[-_]}==" requirements/runtime.lock requirements/gpu.lock | head -1 | cut -d' ' -f1; }
WHEELS=(
  "$(lock open_clip_torch)" "$(lock ftfy)" "$(lock wcwidth)" "$(lock onnx2torch)" "$(lock insightface)"
  "$(lock pydantic)" "$(lock pydantic_core)" "$(lock pydantic-settings)" "$(lock annotated-types)"
  "$(lock typing-inspection)" "$(lock python-dotenv)" "$(lock ffmpeg-python)" "$(lock future)"
  "$(lock PyNvVideoCodec)"
)
for w in "${WHEELS[@]}"; do [ -n "$w" ] || { echo "a wheel is not pinned in requirements/*.lock" >&2; exit 1; }; done
if [ "${1:-}" = "--pins" ]; then printf '%s\n' "${WHEELS[@]}"; exit 0; fi  # what would be downloaded (tested)
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ASSETS=${CLIPGUARD_ASSETS:-../shared/assets}
rm -rf .gpu_run/assets && mkdir -p .gpu_run/assets
cp -r "$ASSETS/models" "$ASSETS/faces" .gpu_run/assets/
[ -f .gpu_run/clips/clips.json ] || PYTHONPATH=. "$PY" -m bench.gpu_clips .gpu_run/clips
ls .whl
du -sh .whl .gpu_run
echo "total: $(du -scm .whl .gpu_run . --exclude=.venv --exclude=.git | tail -1)"
