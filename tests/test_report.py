"""``treegym show`` and ``RUN/report.html``: the terminal summary, a self-contained report
(nothing fetched at view time), side-by-side comparison, and the tree view rendered in headless
Chromium (Debian's ``chromium``; skipped with a reason where it is not installed)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from treegym.cli import app
from treegym.harness import load_run
from treegym.report import _natural, summarize

runner = CliRunner()
TOY = ["--env", "treegym/ToyRooms-v0", "-k", "max_episode_steps=8", "--policy",
       "scripted:expert:0.5", "--workers", "0", "--quiet", "--n-tasks", "3"]  # fmt: skip
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def invoke(*args: str):
    return runner.invoke(app, list(args), terminal_width=200)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {"tree": root / "tree", "chain": root / "chain"}
    res = invoke("collect", *TOY, "--out", str(out["tree"]))
    assert res.exit_code == 0, res.stderr
    res = invoke("collect", *TOY, "--sampler", "chain", "--out", str(out["chain"]))
    assert res.exit_code == 0, res.stderr
    return out


def _first_task_nodes(run_path: Path) -> tuple[str, int]:
    run = load_run(run_path)
    first = sorted(run.task_ids, key=_natural)[0]
    return first, int((run.nodes.task_id == first).sum())


def test_show_prints_the_summary_and_writes_a_self_contained_report(runs):
    (runs["tree"] / "report.html").unlink()
    res = invoke("show", str(runs["tree"]))
    assert res.exit_code == 0, res.stderr
    for word in ("leaves (training)", "success rate", "zero-variance groups",
                 "chain-baseline estimate", "prefix-cache hit rate", "report:"):  # fmt: skip
        assert word in res.stdout, word
    page = (runs["tree"] / "report.html").read_text()
    # nothing to fetch: no external scripts, styles, images, fonts or links
    assert not re.search(r"""\s(src|href)\s*=""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}
    for title in ("reward distribution", "tokens per leaf", "budget breakdown",
                  "advantage histogram"):  # fmt: skip
        assert title in page, title
    for part in ("trunk", "branch", "cached", "computed"):
        assert f">{part}</text>" in page, part


def test_summary_figures_agree_with_the_run(runs):
    run = load_run(runs["tree"])
    s = summarize(run)
    f = s.figures
    assert f["leaves (training)"] == len(run.samples) == 3 * 6
    assert s.trunk_tokens + s.branch_tokens == f["tokens generated"] == run.budget.generated_tokens
    assert s.branch_tokens > 0  # Tree-GRPO grew branches
    assert f["chain-baseline estimate"] == sum(
        int(m.sum(dtype="int64")) for m in run.samples.loss_mask
    )
    assert f["generated / chain"] < 1.0  # the shared trunk is generated once
    assert 0.0 <= f["success rate"] <= 1.0 and len(s.advantages) == len(run.samples)
    chain = summarize(load_run(runs["chain"]))
    assert chain.branch_tokens == 0 and chain.figures["generated / chain"] == pytest.approx(1.0)


def test_show_compare_puts_two_runs_side_by_side(runs):
    res = invoke("show", str(runs["chain"]), "--compare", str(runs["tree"]))
    assert res.exit_code == 0, res.stderr
    assert "tree / chain" in res.stdout  # the ratio column
    page = (runs["chain"] / "compare.html").read_text()
    assert page.count('class="runpanel"') == 2 and "chain vs tree" in page


def test_show_bad_input(tmp_path):
    for args in (["show", str(tmp_path)], ["show", str(tmp_path / "missing")],
                 ["show", str(tmp_path), "--compare", str(tmp_path / "missing")]):  # fmt: skip
        res = invoke(*args)
        assert res.exit_code == 2 and "error:" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


# ---------------------------------------------------------------------- headless Chromium
def _chromium(tmp_path: Path, url: str, *action: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,1200",
         "--virtual-time-budget=3000", *action, url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (.ci/run installs it)"
)


@needs_chromium
def test_report_tree_view_renders_in_chromium(runs, tmp_path):
    report = runs["tree"] / "report.html"
    if not report.exists():
        assert invoke("show", str(runs["tree"])).exit_code == 0
    task, n_nodes = _first_task_nodes(runs["tree"])
    dom = _chromium(tmp_path, report.resolve().as_uri(), "--dump-dom").stdout
    assert 'data-ready="1"' in dom, "the report's script did not run"
    svg = re.search(r'<svg class="tree"[^>]*>', dom).group(0)
    assert f'data-nodes="{n_nodes}"' in svg and f'data-task="{task}"' in svg
    assert len(re.findall(r'<circle[^>]*class="node', dom)) == n_nodes
    assert len(re.findall(r'<circle[^>]*class="node branch', dom)) >= 2  # branch points drawn
    assert "root: the reset" in dom  # the first node's turn is shown

    # a link to a node clicks it: its action and observation appear in the detail panel
    run = load_run(runs["tree"])
    node = run.nodes[(run.nodes.task_id == task) & (run.nodes.node_id == 3)].iloc[0]
    url = f"{report.resolve().as_uri()}#task={task}&tree={node.tree_index}&node=3"
    dom = _chromium(tmp_path, url, "--dump-dom").stdout
    detail = re.search(r'<div class="detail">(.*?)</div></div>', dom, re.S).group(1)
    assert "node 3" in detail and node.action in detail

    shot = tmp_path / "report.png"
    _chromium(tmp_path, report.resolve().as_uri(), f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 1200)
    assert len(data) > 20_000  # a blank page compresses to a few KB


@needs_chromium
def test_compare_report_draws_both_trees_in_chromium(runs, tmp_path):
    assert invoke("show", str(runs["chain"]), "--compare", str(runs["tree"])).exit_code == 0
    dom = _chromium(tmp_path, (runs["chain"] / "compare.html").resolve().as_uri(), "--dump-dom")
    svgs = re.findall(r'<svg class="tree"[^>]*>', dom.stdout)
    assert len(svgs) == 2
    for svg, which in zip(svgs, ("chain", "tree"), strict=True):
        task, n_nodes = _first_task_nodes(runs[which])
        assert f'data-nodes="{n_nodes}"' in svg and f'data-task="{task}"' in svg
