"""The collector (``treegym collect`` in its own process) killed with SIGKILL or SIGINT at
random points, or with SIGKILL inside a part write and inside finalize (held there by a pause
point, :mod:`treegym.harness.pause`), then ``--resume``: exactly the tasks of an unfaulted run,
no duplicates, no missing rows, files valid."""

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

from tests.faults.conftest import canonical, record, rows_on_disk
from treegym.cli import app
from treegym.harness import load_run
from treegym.harness.export import FINALIZING, part_paths
from treegym.harness.loaders import RunLoadError

ROOT = Path(__file__).resolve().parents[2]
N_TASKS = 30
ARGS = ["--env", "treegym/ToyRooms-v0", "-k", "max_episode_steps=8", "--policy",
        "scripted:expert:0.5", "--workers", "0", "--quiet", "--n-tasks", str(N_TASKS)]  # fmt: skip


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
    # One task at a time (concurrency changes no row): the writer commits as tasks finish, so
    # at the default concurrency this tiny run would be done before the kill could land.
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "treegym"), "collect", *ARGS, "--concurrency", "1",
         "--out", str(run)],
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
    assert canonical(resumed) == canonical(unfaulted)
    ledger = [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]
    assert sorted(e["task_id"] for e in ledger) == sorted(unfaulted.task_ids)
    expected, found = rows_on_disk(unfaulted), rows_on_disk(resumed)
    record(f"collector {signal.Signals(sig).name} + --resume", ok=resumed.complete,
           expected=expected, found=found)  # fmt: skip
    assert found == expected


def start_paused(run: Path, point: str, pause_dir: Path, extra=()) -> subprocess.Popen:
    """``treegym collect`` into ``run``, held at pause point ``point`` (``name[@n]``) once it
    gets there: returns the process, waiting in that window."""
    env = {**os.environ, "TREEGYM_PAUSE_AT": point, "TREEGYM_PAUSE_DIR": str(pause_dir)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "treegym"), "collect", *ARGS, "--out", str(run),
         *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    paused = pause_dir / f"{point.partition('@')[0]}.paused"
    deadline = time.monotonic() + 120
    while not paused.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"the collector never reached {point}: {(out + err)[-2000:]}")
        time.sleep(0.005)
    return proc


def paused_group(run: Path) -> int:
    """The seq of the group commit held between its two part renames (its nodes part is in
    place, its samples part is not): the first task of that group, not yet listed."""
    lone = [p for p in (run / "parts").glob("*.nodes.parquet")
            if not p.with_name(p.name.replace(".nodes.", ".samples.")).exists()]  # fmt: skip
    assert len(lone) == 1, lone
    seq = int(lone[0].name[:6])
    assert part_paths(run, seq)[0] == lone[0]
    return seq


def _window(run: Path, point: str) -> None:
    """What the folder holds while the collector waits at ``point`` (the window is real)."""
    if point.startswith("part-write"):  # the n-th group's nodes part is in place, not the rest
        assert _ledger_lines(run) <= paused_group(run)
    elif point == "finalize-compact":
        assert (run / "nodes.parquet.final.tmp").exists() and not (run / FINALIZING).exists()
        assert not (run / "samples.parquet.final.tmp").exists()
    else:
        assert (run / FINALIZING).exists() and (run / "nodes.parquet").exists()
        assert (run / "samples.parquet.final.tmp").exists()


@pytest.mark.parametrize("point", ["part-write@4", "finalize-compact", "finalize-rename"])
def test_collector_killed_inside_a_write_resumes_to_the_unfaulted_run(tmp_path, unfaulted, point):
    """The finalize kills land in a run's second finalize (20 tasks collected and finalized,
    then resumed to 30), where ``nodes.parquet`` already holds compacted rows: renaming half of
    the new files and losing the rest would duplicate or drop rows."""
    run, extra = tmp_path / "run", ()
    if point.startswith("finalize"):
        res = CliRunner().invoke(app, ["collect", *ARGS, "--n-tasks", "20", "--out", str(run)])
        assert res.exit_code == 0, res.stdout + res.stderr
        extra = ("--resume", "--force")  # --force: the task count is part of the identity
    proc = start_paused(run, point, tmp_path, extra)
    try:
        _window(run, point)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    if point == "finalize-rename":  # half-renamed: named, and rolled forward by the next writer
        with pytest.raises(RunLoadError, match="FINALIZING: a finalize was interrupted"):
            load_run(run)
    else:  # everything before the window loads; the half-written task is not in it
        partial = load_run(run)
        assert not partial.complete and len(partial.task_ids) == _ledger_lines(run)
    res = CliRunner().invoke(app, ["collect", *ARGS, "--out", str(run), "--resume", *extra[1:]])
    assert res.exit_code == 0, res.stdout + res.stderr
    resumed = load_run(run)
    expected, found = rows_on_disk(unfaulted), rows_on_disk(resumed)
    same = canonical(resumed) == canonical(unfaulted)
    record(f"collector SIGKILL in {point.partition('@')[0]} + --resume",
           ok=resumed.complete and same, expected=expected, found=found)  # fmt: skip
    assert resumed.complete and same
    assert not list(run.glob("*.tmp")) and not (run / FINALIZING).exists()
    assert found == expected
