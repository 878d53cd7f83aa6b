#!/usr/bin/env bash
# README command 1: set up .venv, then run the main job with its defaults — `treegym collect`:
# held-out tw-cooking games of the embedded model's family, Tree-GRPO (published setting),
# the embedded model, into runs/<timestamp> — and print the run's summary. Arguments go to
# `treegym collect` (e.g. `bash scripts/collect.sh --n-tasks 8 --name mine`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/treegym collect "$@"
