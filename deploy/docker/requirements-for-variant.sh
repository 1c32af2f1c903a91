#!/bin/sh
# Print the hashed requirement set of one image variant, from the locks in requirements/.
#   cuda: runtime.lock + gpu.lock as they are: PyPI's torch wheels bring the CUDA 13 user-space
#         libraries, gpu.lock the GPU-only extras (onnx2torch, PyNvVideoCodec).
#   cpu:  runtime.lock without torch/torchvision and the CUDA wheels only they need (each whole
#         entry: its hashes and comments go with it); the Dockerfile installs torch/torchvision
#         "+cpu" builds of the same versions instead.
# Usage: requirements-for-variant.sh cuda|cpu [requirements folder]
set -eu
variant=${1:?usage: $0 cuda|cpu [requirements folder]}
dir=${2:-requirements}
case "$variant" in
  cuda) cat "$dir/runtime.lock" "$dir/gpu.lock" ;;
  cpu)  awk '/^[A-Za-z0-9]/ {
               name = tolower($1); sub(/[=<>!~;[ ].*/, "", name)
               drop = (name ~ /^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)$/)
             }
             !drop' "$dir/runtime.lock" ;;
  *)    echo "unknown variant '$variant' (cuda|cpu)" >&2; exit 2 ;;
esac
