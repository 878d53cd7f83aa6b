"""Env forking: native snapshot+restore vs replay vs TextWorld's copy vs a new env.

Run: ``python bench/env_forking.py [--game SPEC] [--repeats N]``. All arms are measured side by
side in one run on the same game and the same action path; the headline is the ratio
replay / (snapshot + restore) at each depth. Medians over ``--repeats`` runs.
``--suite smoke|full`` prints the benchmark suite's table instead (TextWorld and ALFWorld,
3 repetitions; :func:`sections`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from alfworld_forking import DEFAULT_TASK as ALFWORLD_TASK
from alfworld_forking import DEPTHS
from bench_common import (
    Chart,
    ForkArms,
    Section,
    Spread,
    fork_arms,
    median_ms,
    print_sections,
    ratios,
)
from rich.console import Console
from rich.table import Table

from treegym.envs import TextEnv
from treegym.envs.alfworld_env import ALFWorldEnv
from treegym.envs.textworld_env import TextWorldEnv
from treegym.envs.toy import ToyRoomsEnv

DEFAULT_GAME = "tw-cooking:recipe=3,take=3,go=9,open=true,cook=true,cut=true,seed=11"
REPETITIONS = 3
CALLS = {"smoke": 3, "full": 20}
"""Replay calls per arm and repetition (snapshot/restore: 10×, new env: max(3, ÷4))."""
SUITE_ENVS: dict[str, Callable[[], TextEnv]] = {
    "TextWorld": lambda: TextWorldEnv(DEFAULT_GAME, max_episode_steps=None),
    "ALFWorld": lambda: ALFWorldEnv(ALFWORLD_TASK, max_episode_steps=None),
}


def measure_forking(
    make: Callable[[], TextEnv], repeats: int, repetitions: int = REPETITIONS
) -> dict[int, list[ForkArms]]:
    """Every arm at every depth, ``repetitions`` times (one env, the same walk each time)."""
    env = make()
    out: dict[int, list[ForkArms]] = {depth: [] for depth in DEPTHS}
    try:
        for _ in range(repetitions):
            for depth in DEPTHS:
                out[depth].append(fork_arms(env, depth, repeats)[1])
    finally:
        env.close()
    return out


def sections(size: str) -> list[Section]:
    """The suite's env-forking table: TextWorld and ALFWorld at depths 5/10/20."""
    calls = CALLS[size]
    rows, groups = [], []
    series: dict[str, list[Spread]] = {"replay": [], "new env + restore": []}
    at10 = {}
    for name, make in SUITE_ENVS.items():
        for depth, reps in measure_forking(make, calls).items():
            fork = [a.fork_ms for a in reps]
            replay = ratios([a.replay_ms for a in reps], fork)
            new = ratios([a.new_env_ms for a in reps], fork)
            rows.append([
                name, str(depth), Spread(fork).fmt(3),
                Spread([a.replay_ms for a in reps]).fmt(1),
                Spread([a.new_env_ms for a in reps]).fmt(1),
                replay.fmt(0, "×"), new.fmt(0, "×"),
            ])  # fmt: skip
            groups.append(f"{name} d{depth}")
            series["replay"].append(replay)
            series["new env + restore"].append(new)
            if depth == 10:
                at10[name] = replay
    intro = (
        "Time to bring an env back to a node's state at depth 5, 10 and 20 of a random walk, "
        "three ways measured side by side in one process on the same walk: a native snapshot "
        "+ restore in place (what the harness does at every fork), a replay from reset (reset "
        "+ the recorded actions: the portable form, and what a harness without snapshots "
        "pays), and a new env of the same game restored to the snapshot. TextWorld: "
        f"`{DEFAULT_GAME}`; ALFWorld: `{ALFWORLD_TASK}` (a kitchen, ALFWorld's largest rooms). "
        f"{REPETITIONS} repetitions; in each, snapshot and restore are medians of "
        f"{10 * calls} calls, replay of {calls}, new env of {max(3, calls // 4)}. Cells: median "
        "(min–max) over the repetitions, ms."
    )
    notes = [
        "Baseline arm: snapshot + restore (the denominator of both ratios); a ratio is taken "
        "per repetition, then summarised.",
        "New env: the env's own twin (`TextEnv._spawn_twin`): TextWorld loads the game file "
        "into a new Jericho interpreter; ALFWorld shares the game already parsed and "
        "translated in this process — a cold ALFWorld game (PDDL translation) costs ≈0.8 s "
        "more (`python bench/alfworld_forking.py`).",
        "Replay grows with depth (one env step per action); snapshot + restore does not.",
    ]
    headline = (
        f"Restoring a native snapshot is {at10['TextWorld'].median:,.0f}× faster than replaying "
        f"from reset at depth 10 on TextWorld and {at10['ALFWorld'].median:,.0f}× on ALFWorld "
        f"(median of {REPETITIONS} repetitions)."
    )
    chart = Chart("× the time of snapshot + restore (log)", groups, series, log=True,
                  reference=1.0)  # fmt: skip
    header = ["env", "depth", "snapshot + restore ms", "replay ms", "new env + restore ms",
              "replay / (snapshot + restore)", "new env / (snapshot + restore)"]  # fmt: skip
    return [Section("env_forking", "Env forking: snapshot + restore vs replay vs a new env",
                    intro, header, rows, notes, chart, headline)]  # fmt: skip


def bench_env(
    name: str, make: Callable[[], TextEnv], repeats: int, tw_copy: bool
) -> list[list[str]]:
    rows = []
    env = make()
    for depth in DEPTHS:
        _, arms = fork_arms(env, depth, repeats)
        copy_ms = float("nan")
        if tw_copy:
            copy_ms = median_ms(lambda: env._env.copy().close(), max(3, repeats // 4))
        rows.append([
            name, str(depth), f"{arms.snapshot_ms:.3f}", f"{arms.restore_ms:.3f}",
            f"{arms.replay_ms:.2f}", f"{copy_ms:.1f}" if tw_copy else "—",
            f"{arms.new_env_ms:.1f}", f"{arms.replay_ms / arms.fork_ms:.0f}×",
        ])  # fmt: skip
    env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--game", default=DEFAULT_GAME, help="TextWorld game spec or .z8 path")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--suite", choices=sorted(CALLS), help="print the suite's table only")
    args = parser.parse_args()
    if args.suite:
        print_sections(sections(args.suite))
        return
    console = Console(width=max(Console().width, 120))
    rows = bench_env(
        "TextWorld",
        lambda: TextWorldEnv(args.game, max_episode_steps=None),
        args.repeats,
        tw_copy=True,
    )
    rows += bench_env(
        "ToyRooms",
        lambda: ToyRoomsEnv(n_rooms=8, max_episode_steps=None),
        args.repeats,
        tw_copy=False,
    )
    table = Table(title=f"env forking, medians in ms ({args.game})")
    for col in (
        "env",
        "depth",
        "snapshot",
        "restore",
        "replay",
        "tw copy()",
        "new env+restore",
        "replay/(snap+restore)",
    ):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    ten = next(r for r in rows if r[0] == "TextWorld" and r[1] == "10")
    console.print(
        f"TextWorld restore-vs-replay ratio at depth 10: [bold]{ten[-1]}[/] (target ≥ 20×)"
    )


if __name__ == "__main__":
    main()
