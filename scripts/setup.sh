#!/usr/bin/env bash
# Create .venv and install treegym with its test extras (idempotent, offline-safe except for
# the package registry). torch is not a dependency yet; when it becomes one it must be pinned
# (torch==2.13.0 is the CPU build on this platform's disk: an unpinned torch pulls CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.treegym-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # fast-downward-textworld's setup.py runs `python build.py`: give its build a `python`.
  export PATH="$PWD/.venv/bin:$PATH"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  touch "$stamp"
fi
