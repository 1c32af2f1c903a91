#!/bin/sh
# Print the pinned requirement set for one image variant, from requirements.lock.
#   cuda: the lock as it is (PyPI's torch wheels bundle the CUDA 13 user-space libraries).
#   cpu:  the lock without torch/torchvision and the CUDA wheels only they need; the
#         Dockerfile installs torch/torchvision "+cpu" builds of the same versions instead.
# Usage: requirements-for-variant.sh cuda|cpu [requirements.lock]
set -eu
variant=${1:?usage: $0 cuda|cpu [lock]}
lock=${2:-requirements.lock}
case "$variant" in
  cuda) grep -v -E '^[[:space:]]*(#|$)' "$lock" ;;
  cpu)  grep -v -E '^[[:space:]]*(#|$)' "$lock" \
          | grep -v -i -E '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==' ;;
  *)    echo "unknown variant '$variant' (cuda|cpu)" >&2; exit 2 ;;
esac
