"""The forking bench must keep running at tiny sizes and print its headline ratio (how large
the ratio is, is the bench's own claim: BENCHMARKS.md, not a unit test's threshold). A few
seconds, so it is the default tier's smoke of bench/ (the whole suite is ``slow``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "env_forking.py"


def test_env_forking_bench_runs_and_prints_the_depth_10_ratio(cooking_game):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--game", cooking_game, "--repeats", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "ratio at depth 10" in x)
    ratio = float(line.split(":")[1].split("×")[0])
    assert ratio > 0, out.stdout
