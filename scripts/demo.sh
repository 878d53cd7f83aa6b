#!/usr/bin/env bash
# README command 1: set up, then run the main job (at this stage: play a generated TextWorld
# game as a tree through snapshot/restore forks and print what it cost).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/treegym demo "$@"
