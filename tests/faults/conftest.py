"""Fault-injection suite: every case records a line in one table printed at the end.

``record(fault_class, ok, expected, found)`` adds one run: ``expected`` and ``found`` are rows
per task (nodes + samples) that the run should hold and that were counted on disk (or in
memory, where a test writes no folder). The terminal summary prints, per fault class, runs
tried, runs that completed or failed cleanly, rows expected, rows found and rows lost (a task's
missing rows; every test also asserts ``found == expected``). So the README's reliability table
is copied from what the tests counted, never from constants.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

import pytest
from transformers import AutoTokenizer

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.policies import ReActTemplate

TABLE: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])


TIMING = ["run_id", "policy_s", "env_s", "restore_s", "snapshot_s", "restores"]
"""Node columns that depend on timing, not on the data: seconds, and ``restores`` (whether a
worker's env is already at a node's parent state depends on which sibling stepped first)."""


def canonical(run) -> tuple[str, str]:
    """A run's rows without :data:`TIMING`, in a fixed order: equal for runs with the same data."""
    nodes = run.nodes.drop(columns=TIMING).sort_values(["task_id", "tree_index", "node_id"])
    samples = run.samples.drop(columns=["run_id"]).sort_values("sample_id")
    return nodes.to_json(orient="records"), samples.to_json(orient="records")


def rows_in_memory(results: Iterable) -> dict[str, int]:
    """Rows a run folder must hold per task for these ``TaskResult``s: one ``nodes`` row per
    node of every tree and one ``samples`` row per training leaf."""
    out: Counter[str] = Counter()
    for r in results:
        out[r.task.task_id] += sum(len(t.nodes) for t in r.trees)
        out[r.task.task_id] += sum(len(leaves) for leaves in r.training.values())
    return dict(out)


def rows_on_disk(run) -> dict[str, int]:
    """Rows per task actually in a loaded run folder (``nodes`` + ``samples``)."""
    out = Counter(run.nodes.task_id) + Counter(run.samples.task_id)
    return dict(out)


def record(fault: str, ok: bool, expected: Mapping[str, int], found: Mapping[str, int]) -> int:
    """Add one run to the table; return the rows lost (summed per task, extra rows not
    counted as found)."""
    lost = sum(max(0, n - found.get(task, 0)) for task, n in expected.items())
    row = TABLE[fault]
    row[0] += 1
    row[1] += int(ok)
    row[2] += sum(expected.values())
    row[3] += sum(min(n, found.get(task, 0)) for task, n in expected.items())
    row[4] += lost
    return lost


FUZZ = "fuzz (actions/options/config/snapshots)"


def pytest_runtest_logreport(report):
    """Each fuzz target is one run of the fuzz class, completed only if it passed (fuzzing
    writes no run folder: no rows)."""
    if report.nodeid.split("::")[0].endswith("test_fuzz.py") and (
        report.when == "call" or (report.when == "setup" and report.failed)
    ):
        record(FUZZ, ok=report.passed, expected={}, found={})


@pytest.fixture(scope="session")
def template(tiny_model):  # noqa: F811
    return ReActTemplate(AutoTokenizer.from_pretrained(tiny_model))


def pytest_terminal_summary(terminalreporter):
    if not TABLE:
        return
    tr = terminalreporter
    tr.section("fault injection")
    tr.write_line(
        f"{'fault class':50} {'runs tried':>10} {'completed/clean':>15} "
        f"{'rows expected':>13} {'rows found':>10} {'rows lost':>9}"
    )
    for fault, (tried, ok, expected, found, lost) in TABLE.items():
        tr.write_line(f"{fault:50} {tried:>10} {ok:>15} {expected:>13} {found:>10} {lost:>9}")
