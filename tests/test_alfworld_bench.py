"""The ALFWorld bench must keep running at tiny sizes and print its two headline ratios (their
size is the bench's claim, measured in BENCHMARKS.md, not a unit test's threshold)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "alfworld_forking.py"


@pytest.mark.slow
def test_alfworld_bench_prints_restore_and_step_ratios():
    out = subprocess.run(
        [sys.executable, str(BENCH), "--repeats", "2", "--steps", "15", "--planner-steps", "0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    restore = re.search(r"restore-vs-replay ratio at depth 10: (\d+)×", text)
    step = re.search(r"step speedup over stock PddlEnv: ([\d.]+)×", text)
    assert restore and step, out.stdout
    assert int(restore.group(1)) > 0 and float(step.group(1)) > 0, out.stdout
