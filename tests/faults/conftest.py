"""Fault-injection suite: every case records a line in one table printed at the end.

``record(fault_class, completed_or_clean_failure, rows_lost)`` adds one run; the terminal
summary prints, per fault class, runs tried, runs that completed or failed cleanly, and rows
lost (which every test also asserts is 0).
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from transformers import AutoTokenizer

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.policies import ReActTemplate

TABLE: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])


def record(fault: str, ok: bool, rows_lost: int = 0) -> None:
    row = TABLE[fault]
    row[0] += 1
    row[1] += int(ok)
    row[2] += rows_lost


@pytest.fixture(scope="session")
def template(tiny_model):  # noqa: F811
    return ReActTemplate(AutoTokenizer.from_pretrained(tiny_model))


@pytest.fixture
def fault_table():
    return record


def pytest_terminal_summary(terminalreporter):
    if not TABLE:
        return
    tr = terminalreporter
    tr.section("fault injection")
    tr.write_line(f"{'fault class':44} {'runs tried':>10} {'completed/clean':>15} {'rows lost':>9}")
    for fault, (tried, ok, lost) in TABLE.items():
        tr.write_line(f"{fault:44} {tried:>10} {ok:>15} {lost:>9}")
