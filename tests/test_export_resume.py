"""Resume after a killed collection: SIGKILL a real collecting process, resume, and compare
with an uninterrupted run — exactly the same tasks and rows, no duplicates, nothing lost."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.harness import load_run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "collect_run.py"
N_TASKS = 7


def _example():
    spec = importlib.util.spec_from_file_location("collect_run_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(run: Path, model: Path) -> list[str]:
    return [str(run), "--tasks", str(N_TASKS), "--model", str(model), "--max-steps", "6"]


def _ledger_lines(run: Path) -> int:
    path = run / "ledger.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


# Timing columns differ between any two runs; everything else must be identical.
TIMING = ["run_id", "policy_s", "env_s", "restore_s", "snapshot_s"]


def _canonical(run):
    nodes = run.nodes.drop(columns=TIMING).sort_values(["task_id", "tree_index", "node_id"])
    samples = run.samples.drop(columns=["run_id"]).sort_values("sample_id")
    return nodes.to_json(orient="records"), samples.to_json(orient="records")


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(tiny_model, tmp_path):  # noqa: F811
    example = _example()
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *_args(killed, tiny_model), "--pause", "0.3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _ledger_lines(killed) < 3:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the collector finished no task in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    done = _ledger_lines(killed)
    assert 3 <= done < N_TASKS, "the kill came after the collection finished: test proves nothing"
    assert not (killed / "nodes.parquet").exists()  # never finalized
    partial = load_run(killed)  # an unfinished run loads from its parts
    assert not partial.complete and len(partial.task_ids) == done

    example.main([*_args(killed, tiny_model), "--resume"])
    full = tmp_path / "full"
    example.main(_args(full, tiny_model))

    resumed, uninterrupted = load_run(killed), load_run(full)
    assert resumed.complete and uninterrupted.complete
    assert sorted(resumed.task_ids) == sorted(uninterrupted.task_ids)
    assert len(resumed.task_ids) == N_TASKS
    assert partial.task_ids == resumed.task_ids[:done]  # finished tasks were kept, not redone
    assert not resumed.samples.sample_id.duplicated().any()
    assert len(resumed.samples) == len(uninterrupted.samples) > 0
    assert _canonical(resumed) == _canonical(uninterrupted)
    ledger = [json.loads(x) for x in (killed / "ledger.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in ledger] == list(range(N_TASKS))
    assert resumed.manifest["budget"]["leaves"] == uninterrupted.manifest["budget"]["leaves"]
