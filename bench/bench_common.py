"""Helpers shared by the benches (run as scripts: ``python bench/<name>.py``) and the result
types of the suite (``bench/run_all.py``)."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from treegym.envs import TextEnv
from treegym.policies.protocol import GenerateRequest, GenerateResult, Policy


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, in milliseconds."""
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return 1000 * statistics.median(samples)


@dataclass
class ForkArms:
    """Median ms of each way to get an env back to a node's state, at one depth."""

    snapshot_ms: float
    restore_ms: float
    replay_ms: float
    new_env_ms: float

    @property
    def fork_ms(self) -> float:
        """Native snapshot + restore: what the harness pays per fork."""
        return self.snapshot_ms + self.restore_ms


def fork_arms(env: TextEnv, depth: int, repeats: int):
    """Walk ``env`` to ``depth`` and time the arms every forking bench compares there: a
    snapshot, a native restore, a replay restore, and a new env of the same game in this
    process (the env's own twin, sharing what it can, e.g. ALFWorld's loaded game) restored to
    the snapshot. Returns the snapshot and the :class:`ForkArms`; ``env`` is left at the
    snapshot's state."""
    walk(env, depth, seed=depth)
    snap = env.snapshot()
    replay = snap.replay_only()
    snapshot_ms = median_ms(env.snapshot, repeats * 10)
    restore_ms = median_ms(lambda: env.restore(snap), repeats * 10)
    replay_ms = median_ms(lambda: env.restore(replay), repeats)

    def new_env() -> None:
        twin = env._spawn_twin()
        twin.restore(snap)
        twin.close()

    new_ms = median_ms(new_env, max(3, repeats // 4))
    env.restore(snap)
    return snap, ForkArms(snapshot_ms, restore_ms, replay_ms, new_ms)


def walk(env: TextEnv, depth: int, seed: int) -> None:
    """Reset and take ``depth`` random admissible steps that do not end the episode."""
    rng = random.Random(seed)
    _, info = env.reset(seed=seed)
    while env.episode_depth < depth:
        snap = env.snapshot()
        commands = list(info["admissible_commands"])
        rng.shuffle(commands)
        for command in commands:
            _, _, terminated, truncated, new_info = env.step(command)
            if not (terminated or truncated):
                info = new_info
                break
            env.restore(snap)
        else:
            raise RuntimeError(
                f"every admissible command ends the episode at depth {env.episode_depth}"
            )


# ---------------------------------------------------------------------- the suite's results
# Every bench module of the suite (bench/run_all.py) returns ``Section``s: a markdown table, the
# notes that say what was measured where, and a ``Chart`` that becomes the section's PNG.


@dataclass
class Spread:
    """One figure measured over repetitions: the median and the min–max range are reported."""

    values: list[float]

    @property
    def defined(self) -> list[float]:
        """The values that are defined: NaN (e.g. a 0/0 ratio, a gate that never fired) is
        left out of every summary."""
        return [v for v in self.values if v == v]

    @property
    def median(self) -> float:
        return statistics.median(self.defined) if self.defined else float("nan")

    @property
    def lo(self) -> float:
        return min(self.defined, default=float("nan"))

    @property
    def hi(self) -> float:
        return max(self.defined, default=float("nan"))

    def fmt(self, digits: int = 2, suffix: str = "") -> str:
        """``median (lo–hi)``; just the median when the repetitions agree; ``—`` when no value
        is defined."""
        if not self.defined:
            return "—"
        med = f"{self.median:,.{digits}f}{suffix}"
        if len(self.defined) < 2 or self.lo == self.hi:
            return med
        return f"{med} ({self.lo:,.{digits}f}–{self.hi:,.{digits}f})"


def ratios(num: list[float], den: list[float]) -> Spread:
    """Per-repetition ratio ``num[i] / den[i]`` (arms measured side by side in repetition i)."""
    if len(num) != len(den):
        raise ValueError(f"{len(num)} vs {len(den)} repetitions")
    return Spread([n / d if d else float("nan") for n, d in zip(num, den, strict=True)])


@dataclass
class Chart:
    """A grouped bar chart with min–max error bars: one bar group per ``groups`` entry, one bar
    per ``series`` entry (its Spreads in ``groups`` order)."""

    ylabel: str
    groups: list[str]
    series: dict[str, list[Spread]]
    log: bool = False
    reference: float | None = None
    """Draw a horizontal line here (e.g. 1.0 for ratios against a baseline arm)."""


@dataclass
class Section:
    """One table of BENCHMARKS.md."""

    slug: str
    title: str
    intro: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    chart: Chart | None = None
    headline: str = ""
    """One sentence with the section's headline ratio (linked from the README)."""

    def markdown(self, png: str | None) -> str:
        lines = [f"## {self.title}", "", self.intro, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"* {note}" for note in self.notes]
        if png:
            lines += ["", f"![{self.title}]({png})"]
        return "\n".join(lines) + "\n"


def size_cli(doc: str, sizes: Any, sections: Callable[[str], list[Section]]) -> None:
    """A bench's command line: ``--size`` (smoke by default), its sections printed."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--size", choices=sorted(sizes), default="smoke")
    print_sections(sections(ap.parse_args().size))


def print_sections(sections: list[Section]) -> None:
    """Print Sections in the terminal (the benches' CLIs): intro, a rich table, notes, headline."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 160))
    for section in sections:
        table = Table(title=section.title)
        for i, col in enumerate(section.header):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in section.rows:
            table.add_row(*row)
        console.print(section.intro, markup=False, highlight=False)
        console.print(table)
        for note in section.notes:
            console.print(f"* {note}", markup=False, highlight=False)
        if section.headline:
            console.print(section.headline, markup=False, style="bold")


def plot_chart(chart: Chart, title: str, path: Path) -> None:
    """Write ``chart`` as a PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(chart.series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(chart.groups) + 2), 4.2))
    for i, (label, spreads) in enumerate(chart.series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(chart.groups))]
        meds = [s.median for s in spreads]
        err = [[m - s.lo for m, s in zip(meds, spreads, strict=True)],
               [s.hi - m for m, s in zip(meds, spreads, strict=True)]]  # fmt: skip
        ax.bar(xs, meds, width, yerr=err, capsize=3, label=label)
    if chart.reference is not None:
        ax.axhline(chart.reference, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(chart.groups)), chart.groups, rotation=20, ha="right")
    ax.set_ylabel(chart.ylabel)
    if chart.log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    if len(chart.series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    import torch

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "gpu": "none",
    }


class BusyTimer(Policy):
    """Wraps a policy; ``busy_s`` is the time with at least one ``generate`` in flight (the
    seconds the rollout waited on the engine, however many requests overlapped)."""

    def __init__(self, inner: Policy) -> None:
        self.inner, self.busy_s, self._inflight, self._t0 = inner, 0.0, 0, 0.0

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        if self._inflight == 0:
            self._t0 = time.perf_counter()
        self._inflight += 1
        try:
            return await self.inner.generate(requests)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self.busy_s += time.perf_counter() - self._t0

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    async def aclose(self) -> None:
        await self.inner.aclose()


def heldout_tasks(env: str, n: int) -> list[Any]:
    """``n`` held-out tasks of the embedded model's mix for ``env`` (``textworld`` or
    ``alfworld``), their game files made up front so that no timed arm pays for generation."""
    from treegym.envs.embedded_mix import EVAL_SEEDS, made_embedded_task
    from treegym.harness import Task

    made = [made_embedded_task(env, s) for s in EVAL_SEEDS[:n]]
    return [Task(t.task_id, {"task": str(path)}, seed=t.seed) for t, path in made]
