#!/bin/sh
# `pip check` of an environment installed from the locks, accepting exactly one known report:
# insightface declares the GUI build opencv-python, which the locks exclude in favour of
# opencv-python-headless (requirements/excludes.txt). Anything else fails.
# Usage: pip_check.sh [python]   (default: python)
set -eu
python=${1:-python}
expected='^insightface [^ ]+ requires opencv-python, which is not installed\.$'
report=$("$python" -m pip check 2>&1) && exit 0
unexpected=$(printf '%s\n' "$report" | grep -v -E "$expected" || true)
if [ -n "$unexpected" ]; then
  printf '%s\n' "$report" >&2
  exit 1
fi
