#!/usr/bin/env bash
# README command 2: set up, lint, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# The default tier leaves out tests marked `slow` (the benchmark suite, long end-to-end
# collections); README "Tests" says what they add. A -m given here replaces the default.
marker=(-m "not slow")
for arg in "$@"; do
  case "$arg" in -m | -m*) marker=() ;; esac
done
exec .venv/bin/python -m pytest ${marker[@]+"${marker[@]}"} "$@"
