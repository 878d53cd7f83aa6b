#!/usr/bin/env bash
# External trainers for tests/test_trainer_*.py, each where its pins allow (README "Trainers"):
#   trl       trl==1.16.0 into treegym's own .venv (the treegym[trl] extra: no pin conflicts)
#   verl      .venv-trainers/verl: verl==0.9.1 with its own dependencies, no GPU extras
#             (it pins transformers<5.11; treegym's policies need >=5.24), plus treegym --no-deps
#   openrlhf  .venv-trainers/openrlhf: openrlhf==0.11.2 --no-deps and the pieces that install
#             on a CPU (its flash-attn==2.8.3 builds only with CUDA's nvcc; transformers==5.15.0)
# Usage: bash scripts/setup_trainers.sh [trl] [verl] [openrlhf]   (default: all three)
# Best effort per library: each writes .venv-trainers/NAME.log and one line to NAME.status
# ("ok ..." or the reason it failed), which the tests print when they skip. Idempotent.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=.venv-trainers
mkdir -p "$OUT"
TORCH="torch==2.13.0"  # the CPU build on this platform's disk (as treegym's own pin)
FAILED=""

pip_in() { "$1/bin/python" -m pip install --quiet "${@:2}"; }

new_venv() {  # $1: folder
  [ -x "$1/bin/python" ] || "$PY" -m venv "$1"
  pip_in "$1" --upgrade pip
}

install_trl() {  # the treegym[trl] extra's pin, read from pyproject.toml (no second copy)
  local pin
  local extras="import tomllib; e = tomllib.load(open('pyproject.toml', 'rb'))['project']"
  pin=$(.venv/bin/python -c "$extras; print(*e['optional-dependencies']['trl'])") || return 1
  pip_in .venv "$pin" || return 1
  .venv/bin/python -c "import trl; print('trl', trl.__version__)"
}

install_verl() {
  local V=$OUT/verl
  new_venv "$V" || return 1
  pip_in "$V" "verl==0.9.1" "$TORCH" gymnasium || return 1
  pip_in "$V" --no-deps -e . || return 1  # the loaders need only numpy, pyarrow, gymnasium, torch
  "$V/bin/python" -c "import verl, verl.trainer.ppo.core_algos, treegym.integrations.verl"
}

install_openrlhf() {
  local V=$OUT/openrlhf
  new_venv "$V" || return 1
  pip_in "$V" "$TORCH" setuptools wheel packaging psutil ninja || return 1
  # deepspeed's setup.py imports torch: build it against the torch above (no CUDA ops built)
  pip_in "$V" --no-build-isolation "deepspeed==0.19.6" || return 1
  pip_in "$V" --no-deps "openrlhf==0.11.2" || return 1
  pip_in "$V" "transformers==5.15.0" peft einops sympy pylatexenc gymnasium pyarrow || return 1
  pip_in "$V" --no-deps -e . || return 1
  # Not installable here: record why (the tests of openrlhf.models' package import say so).
  if pip_in "$V" --no-build-isolation "flash-attn==2.8.3" >"$OUT/flash-attn.log" 2>&1; then
    echo "flash-attn installed" >"$OUT/flash-attn.status"
  else
    reason=$(grep -m1 -E "^ *OSError: " "$OUT/flash-attn.log" | sed 's/^ *//')
    echo "flash-attn==2.8.3 did not build: ${reason:-see $OUT/flash-attn.log}" >"$OUT/flash-attn.status"
  fi
  "$V/bin/python" -c "import openrlhf.trainer.ppo_utils, deepspeed, treegym.integrations.openrlhf"
}

libs=("$@")
[ ${#libs[@]} -gt 0 ] || libs=(trl verl openrlhf)
for lib in "${libs[@]}"; do
  status=$OUT/$lib.status
  # a venv that installed once is kept (trl: pip finds it satisfied in a second)
  if [ "$lib" != trl ] && [ -x "$OUT/$lib/bin/python" ] && grep -qs '^ok' "$status"; then
    continue
  fi
  start=$(date +%s)
  if "install_$lib" >"$OUT/$lib.log" 2>&1; then
    echo "ok: $lib installed in $(($(date +%s) - start)) s" | tee "$status"
  else
    why=$(grep -v -e "is ignored" -e "^ *$" "$OUT/$lib.log" | tail -n 1)
    echo "$lib could not be installed ($(($(date +%s) - start)) s; see $OUT/$lib.log): $why" \
      | tee "$status"
    FAILED="$FAILED $lib"
  fi
done
[ -z "$FAILED" ]
