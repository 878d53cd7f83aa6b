"""Env forking: native snapshot+restore vs replay vs TextWorld's copy vs a new env.

Run: ``python bench/env_forking.py [--game SPEC] [--repeats N]``. All arms are measured side by
side in one run on the same game and the same action path; the headline is the ratio
replay / (snapshot + restore) at each depth. Medians over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bench_common import fork_costs, median_ms
from rich.console import Console
from rich.table import Table

from treegym.envs import TextEnv
from treegym.envs.textworld_env import TextWorldEnv
from treegym.envs.toy import ToyRoomsEnv

DEPTHS = (5, 10, 20)
DEFAULT_GAME = "tw-cooking:recipe=3,take=3,go=9,open=true,cook=true,cut=true,seed=11"


def bench_env(
    name: str, make: Callable[[], TextEnv], repeats: int, tw_copy: bool
) -> list[list[str]]:
    rows = []
    env = make()
    for depth in DEPTHS:
        snap, snapshot_ms, restore_ms, replay_ms = fork_costs(env, depth, repeats)

        def new_env(snap=snap) -> None:
            twin = env._spawn_twin()
            twin.restore(snap)
            twin.close()

        new_ms = median_ms(new_env, max(3, repeats // 4))
        copy_ms = float("nan")
        if tw_copy:
            env.restore(snap)
            copy_ms = median_ms(lambda: env._env.copy().close(), max(3, repeats // 4))
        fork_ms = snapshot_ms + restore_ms
        rows.append([
            name, str(depth), f"{snapshot_ms:.3f}", f"{restore_ms:.3f}", f"{replay_ms:.2f}",
            f"{copy_ms:.1f}" if tw_copy else "—", f"{new_ms:.1f}", f"{replay_ms / fork_ms:.0f}×",
        ])  # fmt: skip
    env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--game", default=DEFAULT_GAME, help="TextWorld game spec or .z8 path")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
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
