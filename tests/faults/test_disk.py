"""The output folder filling up (a real 2 MB tmpfs) or turning read-only (the tmpfs remounted
``ro`` mid-run) under a real ``treegym collect``: one clear error line, the tasks finished
before are intact and loadable, and ``--resume`` after the fault is fixed gives exactly the
unfaulted run. (Root ignores chmod, so "unwritable" is a read-only remount; without the right
to mount, these tests skip.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.faults.conftest import canonical, record, rows_on_disk
from tests.faults.test_collector_kill import (
    ARGS,
    N_TASKS,
    _ledger_lines,
    paused_group,
    start_paused,
    unfaulted,  # noqa: F401 - fixture
)
from treegym.cli import app
from treegym.harness import load_run


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mnt)],
                         capture_output=True, text=True)  # fmt: skip
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], capture_output=True)
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _check_partial_and_resume(run: Path, unfaulted_run, fault: str) -> None:
    done = _ledger_lines(run)
    assert 0 < done < N_TASKS
    partial = load_run(run)  # every task finished before the fault is intact and loadable
    assert not partial.complete and len(partial.task_ids) == done
    res = CliRunner().invoke(app, ["collect", *ARGS, "--out", str(run), "--resume"])
    assert res.exit_code == 0, res.stdout + res.stderr
    resumed = load_run(run)
    expected, found = rows_on_disk(unfaulted_run), rows_on_disk(resumed)
    same = canonical(resumed) == canonical(unfaulted_run)
    record(fault, ok=resumed.complete and same, expected=expected, found=found)
    assert resumed.complete and sorted(resumed.task_ids) == sorted(unfaulted_run.task_ids)
    assert same and found == expected


def test_full_disk_gives_a_clear_error_and_keeps_finished_tasks(tmpfs, unfaulted):  # noqa: F811
    filler = tmpfs / "filler"
    filler.write_bytes(b"\0" * (2 * 1024 * 1024 - 160 * 1024))  # leave ~160 KB
    run = tmpfs / "run"
    res = CliRunner().invoke(app, ["collect", *ARGS, "--out", str(run)])
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "No space left on device" in res.stderr and "--resume" in res.stderr
    assert "Traceback" not in res.stderr
    filler.unlink()  # the user frees space
    _check_partial_and_resume(run, unfaulted, "disk full (tmpfs) + --resume")


def test_folder_turning_read_only_mid_run(tmp_path, unfaulted):  # noqa: F811
    """The run folder bind-mounted read-only over itself mid-run (files already open stay
    writable, every new file fails: exactly what a folder turning unwritable looks like). The
    collector waits inside its 4th task's part write (a pause point) while the folder turns
    read-only, so the fault always lands mid-run, however fast the collector is."""
    if os.geteuid() != 0:
        pytest.skip("needs root to bind-mount")
    run = tmp_path / "run"
    proc = start_paused(run, "part-write@4", tmp_path)
    listed = paused_group(run)  # tasks listed before the group the fault will hit
    mounted = False
    try:
        res = subprocess.run(["mount", "--bind", str(run), str(run)], capture_output=True,
                             text=True)  # fmt: skip
        if res.returncode != 0:
            proc.kill()
            pytest.skip(f"cannot bind-mount here: {res.stderr.strip()}")
        mounted = True
        res = subprocess.run(["mount", "-o", "remount,bind,ro", str(run)], capture_output=True,
                             text=True)  # fmt: skip
        if res.returncode != 0:
            proc.kill()
            pytest.skip(f"cannot remount read-only here: {res.stderr.strip()}")
        (tmp_path / "part-write.go").touch()
    finally:
        _, err = proc.communicate(timeout=60)
        if mounted:
            subprocess.run(["umount", str(run)], check=True)
    err = err.decode(errors="replace")
    assert proc.returncode == 2, err[-3000:]
    assert "Read-only file system" in err and "Traceback" not in err, err[-3000:]
    # at most the tasks listed before the fault (those of the group it hit were never
    # acknowledged), nothing after
    assert _ledger_lines(run) == listed >= 3
    _check_partial_and_resume(run, unfaulted, "output folder read-only + --resume")
