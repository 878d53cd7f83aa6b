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

from tests import hand_run
from treegym.cli import app
from treegym.harness import load_run
from treegym.report import _natural, summarize, tree_data

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


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hand") / "run"
    hand_run.write(path)
    return path


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


def test_summary_figures_of_a_hand_built_run(hand):
    """Every figure against the numbers worked out by hand in tests/hand_run.py."""
    s = summarize(load_run(hand))
    for key, want in hand_run.FIGURES.items():
        assert s.figures[key] == pytest.approx(want), key
    assert (s.trunk_tokens, s.branch_tokens) == (hand_run.TRUNK_TOKENS, hand_run.BRANCH_TOKENS)
    assert sorted(s.rewards) == sorted(hand_run.RETURNS.values())
    assert sorted(s.tokens_per_leaf) == [1, 1, 2, 5]
    assert s.advantage_column == "adv_grpo"
    assert sorted(s.advantages) == pytest.approx(sorted(hand_run.GRPO.values()))


def test_show_prints_the_hand_built_figures(hand):
    res = invoke("show", str(hand))
    assert res.exit_code == 0, res.stderr
    rows = dict(re.findall(r"│ ([a-z /()-]+?)\s+│\s+(\S+) │", res.stdout))
    assert rows["success rate"] == "25.0%" and rows["mean reward"] == "0.375"
    assert rows["zero-variance groups"] == "50.0%" and rows["distinct trajectories"] == "3"
    assert rows["prefix-cache hit rate"] == "65.8%" and rows["generated / chain"] == "1.11×"
    assert rows["tokens generated"] == "10" and rows["chain-baseline estimate"] == "9"


def test_tree_and_chain_runs_share_and_do_not_share_their_trunks(runs):
    """Chain sampling generates every trajectory in full; Tree-GRPO generates the trunk once."""
    tree = summarize(load_run(runs["tree"]))
    assert tree.figures["leaves (training)"] == 3 * 6  # 3 tasks, M·(1 + N·L) = 6 leaves each
    assert tree.branch_tokens > 0 and tree.figures["generated / chain"] < 1.0
    chain = summarize(load_run(runs["chain"]))
    assert chain.branch_tokens == 0 and chain.figures["generated / chain"] == pytest.approx(1.0)


def _plot(page: str, title: str) -> dict[tuple[str, str], int]:
    """A histogram's bars in the report: {(bin start, bin end): count}."""
    svg = re.search(rf'<svg class="plot"[^>]*aria-label="{re.escape(title)}">(.*?)</svg>', page)
    assert svg, title
    return {
        (lo, hi): int(n)
        for n, lo, hi in re.findall(
            r"<title>[^<]*: (\d+) in \[([^,]+), ([^)]+)\)</title>", svg.group(1)
        )
    }


def test_report_histograms_hold_the_hand_built_values(hand):
    assert invoke("show", str(hand)).exit_code == 0
    page = (hand / "report.html").read_text()
    # training returns 1, 0.5, 0, 0 in 20 bins over [0, 1]
    assert _plot(page, "reward distribution (training leaves)") == {
        ("0", "0.05"): 2, ("0.5", "0.55"): 1, ("0.95", "1"): 1}  # fmt: skip
    # generated tokens per training leaf 5, 2, 1, 1: one bar per value
    assert _plot(page, "tokens per leaf") == {
        ("0.5", "1.5"): 2, ("1.5", "2.5"): 1, ("4.5", "5.5"): 1}  # fmt: skip
    # grpo: ±Z (≈ 0.71) for task a's two leaves, 0 for b's, 20 bins over [-Z, Z]
    bars = _plot(page, "advantage histogram")
    assert sorted(bars.values()) == [1, 1, 2] and ("-0.71", "-0.64") in bars


def test_tree_view_data_carries_values_and_training_marks(hand):
    data = tree_data(load_run(hand))
    assert (data["vmin"], data["vmax"]) == (0.0, 1.0)
    for task in data["tasks"]:
        for tree in task["trees"]:
            values = hand_run.VALUES[(task["id"], tree["index"])]
            assert {n[0]: n[2] for n in tree["nodes"]} == pytest.approx(values)
            training = {n[0] for n in tree["nodes"] if n[5]}
            assert training == {
                k[2] for k in hand_run.RETURNS if k[:2] == (task["id"], tree["index"])
            }


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


RED, YELLOW, GREEN = "rgb(215,48,39)", "rgb(254,224,139)", "rgb(26,152,80)"


@needs_chromium
def test_tree_view_colours_nodes_by_value_and_marks_training_leaves(hand, tmp_path):
    """Task a of the hand-built run: values 0 … 1 run red → yellow → green; the training
    leaves n2 and n4 get a square (n3, a leaf not kept, does not); root and n1 (two children
    each) are branch points."""
    assert invoke("show", str(hand)).exit_code == 0
    dom = _chromium(tmp_path, (hand / "report.html").resolve().as_uri(), "--dump-dom").stdout
    assert 'data-ready="1"' in dom and 'data-task="a"' in dom
    circles = {}
    for tag in re.findall(r"<circle[^>]*>", dom):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
        circles[int(attrs["data-node"])] = (attrs["fill"], set(attrs["class"].split()))
    want = {0: YELLOW, 1: YELLOW, 2: GREEN, 3: RED, 4: YELLOW}  # V = .5, .5, 1, 0, .5
    assert {i: fill for i, (fill, _) in circles.items()} == want
    assert {i for i, (_, cls) in circles.items() if "train" in cls} == {2, 4}
    assert {i for i, (_, cls) in circles.items() if "branch" in cls} == {0, 1}
    marks = re.findall(r'<rect[^>]*width="6" height="6" fill="#2b3340"[^>]*>', dom)
    assert len(marks) == 2
