"""The benchmark suite at smoke size (what keeps bench/ from rotting): one command writes
BENCHMARKS.md with every table, a PNG per table, and figures that make sense."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TITLES = (
    "Samplers at equal training trajectories per task: TextWorld",
    "Samplers at equal training trajectories per task: ALFWorld",
    "Samplers at equal token budget",
    "Env forking",
    "Harness overhead",
    "Export",
    "Engine-level prefix caching",
    "Engine throughput: synthetic prompts",
    "Engine throughput: a real Tree-GRPO collection",
    "Learning at equal engine tokens (textworld)",
    "Collector throughput",
)


def _table(text: str, title: str) -> list[list[str]]:
    """The markdown table under the section whose heading starts with ``title``."""
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows]


def _median(cell: str) -> float:
    return float(re.match(r"[\d,.]+", cell).group(0).replace(",", ""))


@pytest.mark.slow
def test_smoke_suite_writes_every_table_with_plots(tmp_path):
    env = {**os.environ, "TREEGYM_BENCH_RESULTS": str(tmp_path / "results")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_all.py"), "--size", "smoke",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1800, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "**Machine:**" in text and "run_all.py --size smoke" in text
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    for title in TITLES:
        assert any(h.startswith(title) for h in headings), (title, headings)
    pngs = re.findall(r"\]\((bench/figures/[\w.-]+\.png)\)", text)
    assert len(pngs) >= len(TITLES)
    for png in pngs:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    # Figures that must hold at any size: restoring beats replaying a 10-step path...
    forking = _table(text, "Env forking")
    header = forking[0]
    ratio = header.index(next(h for h in header if h.startswith("replay /")))
    depth10 = [row for row in forking[1:] if row[1] == "10"]
    assert depth10 and all(_median(row[ratio]) > 1 for row in depth10)
    # ...and every sampler arm was measured against chain (ratio 1.00 for chain itself).
    samplers = _table(text, TITLES[0])
    arms = {row[0]: row for row in samplers[1:]}
    assert len(arms) == 7 and arms["chain G=6"][samplers[0].index("gen tok ÷ chain")] == "1.00"
    # the learning part ran treegym train and wrote its learning curves
    assert list((tmp_path / "results").glob("learning-smoke/*/metrics.parquet"))
    assert list((tmp_path / "results").glob("learning-smoke/*/report.html"))


def test_merge_keeps_the_sections_it_did_not_measure_and_replaces_the_others(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import run_all
    from bench_common import Section

    def section(title: str, cell: str, headline: str = "") -> Section:
        return Section(title.lower()[:3], title, "intro", ["a"], [[cell]], headline=headline)

    first = [section("Alpha", "1", "alpha is 1"), section("Beta", "2", "beta is 2")]
    run_all.write(first, {"alpha": 1.0, "beta": 1.0}, "smoke", tmp_path)
    note = "**Stale:** Alpha was measured with the old model."
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(path.read_text().replace("**Machine:**", note + "\n\n**Machine:**", 1))
    run_all.write([section("Beta", "3", "beta is 3"), section("Gamma", "4")], {"beta": 1.0},
                  "smoke", tmp_path, merge=True)  # fmt: skip
    text = path.read_text()
    assert text.count(note) == 1 and text.index(note) < text.index("**Machine:**")
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["Headlines", "Alpha", "Beta", "Gamma"]
    assert _table(text, "Alpha")[1:] == [["1"]] and _table(text, "Beta")[1:] == [["3"]]
    assert "* alpha is 1 ([table](#alpha))" in text and "* beta is 3 ([table](#beta))" in text
    assert "beta is 2" not in text and "Merged (`--merge`)" in text
    run_all.write([section("Beta", "5")], {"beta": 1.0}, "smoke", tmp_path)  # no merge
    assert [ln for ln in (tmp_path / "BENCHMARKS.md").read_text().splitlines()
            if ln.startswith("## ")] == ["## Beta"]  # fmt: skip
