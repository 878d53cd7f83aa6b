"""Shared by ``tests/test_trainer_*.py``: the external trainers' environments (built by
``scripts/setup_trainers.sh``; a test skips with the install's own one-line reason when one is
missing) and a tiny Tree-GRPO collection of the embedded model with mixed rewards.

The policy is ``GuidedHFPolicy`` (tests/test_export_grpo.py): the embedded model, with some
turns answered by the expert's action scored by the model itself, so rewards differ within a
group while every logprob stays a real logprob of the model the trainers load.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.test_export_grpo import GuidedHFPolicy
from treegym.harness import InProcessExecutor, Runner, Task, TreeGRPOSampler
from treegym.harness.collect import collect
from treegym.policies import ReActTemplate, SamplingParams, embedded_model_path

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / ".venv-trainers"
SETUP = "bash scripts/setup_trainers.sh"
TASKS = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(2)]
SAMPLER = {"m": 2, "n": 1, "l": 1, "k": 2}  # M·K = 4 training leaves per task
GROUP = SAMPLER["m"] * SAMPLER["k"]


def status(name: str) -> str:
    """The install's one line (``ok: ...`` or why it failed), or how to get one."""
    path = ENVS / f"{name}.status"
    return path.read_text().strip() if path.is_file() else f"{name}: not set up (run {SETUP})"


def trainer_python(name: str) -> Path:
    """The python of ``name``'s own environment; skips the test with the reason if absent."""
    python = ENVS / name / "bin" / "python"
    line = status(name)
    if not line.startswith("ok") or not python.is_file():
        pytest.skip(line if not line.startswith("ok") else f"{python} missing: run {SETUP}")
    return python


def run_example(name: str, script: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """``examples/<script>`` with ``name``'s python and ``--json``; its JSON report."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(trainer_python(name)), str(ROOT / "examples" / script), *args,
                           "--json"], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_runner(max_batch: int = 1) -> Runner:
    """Tree-GRPO (M=2, N=1, L=1, K=2) on ToyRooms with the guided embedded model; batch 1, so
    a request's tokens do not depend on what else is in flight (the same run every time)."""
    policy = GuidedHFPolicy(embedded_model_path(), seed=0, max_batch=max_batch)
    return Runner(policy=policy, template=ReActTemplate(policy.tokenizer),
                  executor=InProcessExecutor("treegym/ToyRooms-v0", {"max_episode_steps": 6}),
                  sampler=TreeGRPOSampler(**SAMPLER),
                  sampling=SamplingParams(max_new_tokens=32, temperature=1.0),
                  context_length=1024, concurrency=1)  # fmt: skip


def collect_run(path: Path) -> Path:
    """The two tasks collected into the run folder ``path``."""
    config = {"env": "treegym/ToyRooms-v0", "env_kwargs": {"max_episode_steps": 6}}
    asyncio.run(collect(make_runner(), TASKS, path, config=config))
    return path
