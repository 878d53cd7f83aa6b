"""SearchQA's benches keep running at tiny sizes (their figures are BENCHMARKS material, not
thresholds of a unit test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run(tmp_path: Path, script: str, *args: str) -> str:
    env = {**os.environ, "TREEGYM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, script, *args], cwd=BENCH, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_retrieval_bench_runs_at_tiny_sizes(tmp_path):
    figures = tmp_path / "figures.json"
    scratch = str(tmp_path / "scratch")
    out = run(tmp_path, "searchqa_retrieval.py", "--sizes", "500,1000", "--queries", "10",
              "--workers", "2", "--cache", scratch, "--json", str(figures))  # fmt: skip
    assert "SearchQA: BM25 index build and search" in out and "env worker (mean)" in out
    got = json.loads(figures.read_text())
    assert set(got) == {"500", "1000", "workers"} and len(got["1000"]["search_ms"]) == 10


def test_forking_bench_runs_and_prints_its_ratio(tmp_path):
    out = run(tmp_path, "searchqa_forking.py", "--repeats", "2", "--people", "40")
    line = next(x for x in out.splitlines() if "ratio at depth 3" in x)
    assert float(line.split(":")[1].split("×")[0].replace(",", "")) > 0
