"""A collector SIGKILLed inside a group commit (held by the ``group-commit`` pause point: the
group's ledger lines are written, their fsync has not happened): every task it had acknowledged
is in the folder with all its rows, and ``resume`` completes the run to exactly the rows of an
unfaulted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.conftest import canonical, record, rows_on_disk
from treegym.harness import load_run
from treegym.harness.export import read_ledger

ROOT = Path(__file__).resolve().parents[2]
N_TASKS = 24
SCRIPT = f"""
import asyncio, sys
from transformers import AutoTokenizer
from treegym.harness import InProcessExecutor, Runner, Task, TreeGRPOSampler
from treegym.harness.collect import collect
from treegym.policies import ReActTemplate, ScriptedPolicy
from treegym.policies.embedded import embedded_model_path

async def main(out, resume):
    template = ReActTemplate(AutoTokenizer.from_pretrained(str(embedded_model_path())))
    runner = Runner(policy=ScriptedPolicy(template, "expert", epsilon=0.5, seed=3),
                    template=template, sampler=TreeGRPOSampler(m=2, n=2, l=1, k=3),
                    executor=InProcessExecutor("treegym/ToyRooms-v0", {{"max_episode_steps": 8}}),
                    concurrency=8, seed=0)
    tasks = [Task(f"toy-{{i}}", {{"task": i}}, seed=i) for i in range({N_TASKS})]
    await collect(runner, tasks, out, resume=resume,
                  on_result=lambda entry, result: print("ack", entry["task_id"], flush=True))

asyncio.run(main(sys.argv[1], sys.argv[2] == "resume"))
"""


def _collect(out: Path, mode: str, log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), mode], cwd=ROOT,
                                env={**os.environ, **(env or {})}, stdout=fh,
                                stderr=subprocess.STDOUT)  # fmt: skip


def _acked(log: Path) -> list[str]:
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith("ack ")]


def test_sigkill_inside_a_group_commit_loses_nothing_acknowledged(tmp_path):
    clean = _collect(tmp_path / "clean", "new", tmp_path / "clean.log")
    assert clean.wait(300) == 0, (tmp_path / "clean.log").read_text()[-3000:]
    unfaulted = load_run(tmp_path / "clean")

    run, log = tmp_path / "run", tmp_path / "run.log"
    pause = {"TREEGYM_PAUSE_AT": "group-commit@3", "TREEGYM_PAUSE_DIR": str(tmp_path)}
    proc = _collect(run, "new", log, pause)
    deadline = time.monotonic() + 300
    while not (tmp_path / "group-commit.paused").exists():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the collector never reached its third commit"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    acked = _acked(log)
    # the kill landed inside a commit: that group's lines were written, none acknowledged
    assert 0 < len(acked) < len(read_ledger(run)) < N_TASKS
    partial = load_run(run)
    assert set(acked) <= set(partial.task_ids)
    want, got = rows_on_disk(unfaulted), rows_on_disk(partial)
    assert {t: got.get(t) for t in acked} == {t: want[t] for t in acked}

    resumed_proc = _collect(run, "resume", tmp_path / "resume.log")
    assert resumed_proc.wait(300) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    resumed = load_run(run)
    assert not set(acked) & set(_acked(tmp_path / "resume.log"))  # nothing acked is redone
    expected, found = rows_on_disk(unfaulted), rows_on_disk(resumed)
    same = resumed.complete and canonical(resumed) == canonical(unfaulted)
    record("collector SIGKILL in group-commit + --resume", ok=same, expected=expected,
           found=found)  # fmt: skip
    assert same and found == expected
