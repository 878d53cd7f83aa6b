"""The collector (``treegym collect`` in its own process) killed with SIGKILL or SIGINT at
random points, then ``--resume``: exactly the tasks of an unfaulted run, no duplicates, no
missing rows, files valid."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.faults.conftest import record
from treegym.cli import app
from treegym.harness import load_run

ROOT = Path(__file__).resolve().parents[2]
N_TASKS = 30
ARGS = ["--env", "treegym/ToyRooms-v0", "-k", "max_episode_steps=8", "--policy",
        "scripted:expert:0.5", "--workers", "0", "--quiet", "--n-tasks", str(N_TASKS)]  # fmt: skip
TIMING = ["run_id", "policy_s", "env_s", "restore_s", "snapshot_s"]


def _canonical(run) -> tuple[str, str]:
    nodes = run.nodes.drop(columns=TIMING).sort_values(["task_id", "tree_index", "node_id"])
    samples = run.samples.drop(columns=["run_id"]).sort_values("sample_id")
    return nodes.to_json(orient="records"), samples.to_json(orient="records")


def _ledger_lines(run: Path) -> int:
    path = run / "ledger.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.fixture(scope="module")
def unfaulted(tmp_path_factory):
    out = tmp_path_factory.mktemp("unfaulted") / "run"
    res = CliRunner().invoke(app, ["collect", *ARGS, "--out", str(out)])
    assert res.exit_code == 0, res.stdout + res.stderr
    return load_run(out)


@pytest.mark.parametrize("sig,seed", [(signal.SIGKILL, 1), (signal.SIGKILL, 2),
                                      (signal.SIGINT, 3)])  # fmt: skip
def test_killed_collector_resumes_to_exactly_the_unfaulted_run(tmp_path, unfaulted, sig, seed):
    run = tmp_path / "run"
    target = random.Random(seed).randint(1, N_TASKS - 5)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "treegym"), "collect", *ARGS, "--out", str(run)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _ledger_lines(run) < target and proc.poll() is None:
            assert time.monotonic() < deadline, "the collector finished no task in time"
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, sig)
    finally:
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    killed_at = _ledger_lines(run)
    assert killed_at < N_TASKS, "the collector finished before the kill: test proves nothing"
    if sig == signal.SIGINT:  # a clean stop: one line, nothing half-written, a non-zero code
        assert proc.returncode == 130 and "--resume" in output, output[-2000:]
        assert "Traceback" not in output, output[-2000:]
    else:
        assert proc.returncode == -signal.SIGKILL
    partial = load_run(run)  # an unfinished run loads from its parts
    assert not partial.complete and len(partial.task_ids) == killed_at
    assert not partial.samples.sample_id.duplicated().any()
    res = CliRunner().invoke(app, ["collect", *ARGS, "--out", str(run), "--resume"])
    assert res.exit_code == 0, res.stdout + res.stderr
    resumed = load_run(run)
    assert resumed.complete
    assert sorted(resumed.task_ids) == sorted(unfaulted.task_ids)
    assert not resumed.samples.sample_id.duplicated().any()
    assert not resumed.nodes.duplicated(["task_id", "tree_index", "node_id"]).any()
    assert _canonical(resumed) == _canonical(unfaulted)
    ledger = [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]
    assert sorted(e["task_id"] for e in ledger) == sorted(unfaulted.task_ids)
    lost = len(unfaulted.nodes) - len(resumed.nodes) + len(unfaulted.samples) - len(resumed.samples)
    record(f"collector {signal.Signals(sig).name} + --resume", ok=True, rows_lost=lost)
    assert lost == 0
