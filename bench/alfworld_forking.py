"""ALFWorld: restore vs replay vs new env, and the step cost against TextWorld's stock PddlEnv.

Run: ``python bench/alfworld_forking.py [--task SPEC_OR_PATH] [--repeats N] [--steps N]``.
Everything is measured side by side in one run on one generated task (default: a kitchen
heat-and-place task):

* forking at depths 5/10/20 — snapshot, restore in place (fast-downward state id + immutable
  facts), replay from reset (the portable form), a new env sharing the loaded game, and a cold
  new game (grammar parse + PDDL translation: what a new task pays; a process's first game
  also copies the 33 MB library, timed once);
* stepping — the same random walk through the stock ``PddlEnv`` wrapped in ALFWorld's
  ``AlfredDemangler`` (admissible commands and ``won``, as ``AlfredTWEnv`` requests them) and
  through treegym (``expert_plan=False``, then ``True``), checking the observations, admissible
  commands and rewards agree; and the stock planner expert (``policy_commands``) on a few steps.
"""

from __future__ import annotations

import argparse
import random
import time

import textworld
from bench_common import fork_arms, median_ms
from rich.console import Console
from rich.table import Table
from textworld.envs.pddl import PddlEnv

from treegym.envs import alfworld_engine
from treegym.envs.alfworld_assets import alfworld_module
from treegym.envs.alfworld_engine import PddlGame
from treegym.envs.alfworld_env import ALFWorldEnv
from treegym.envs.alfworld_files import GameFile, read_game_file
from treegym.envs.alfworld_tasks import resolve_task

DEPTHS = (5, 10, 20)
DEFAULT_TASK = "pick_heat_then_place_in_recep:seed=1"  # a kitchen: ALFWorld's largest rooms


def bench_forking(task: str, repeats: int) -> list[list[str]]:
    env = ALFWorldEnv(task, max_episode_steps=None)
    game_file = read_game_file(resolve_task(task))
    rows = []
    for depth in DEPTHS:
        _, arms = fork_arms(env, depth, repeats)  # new env: a twin sharing the loaded game
        cold_ms = median_ms(lambda: cold_game(game_file), max(2, repeats // 4))
        rows.append([
            str(depth), f"{arms.snapshot_ms:.3f}", f"{arms.restore_ms:.3f}",
            f"{arms.replay_ms:.1f}", f"{arms.new_env_ms:.1f}", f"{cold_ms:.0f}",
            f"{arms.replay_ms / arms.fork_ms:.0f}×",
        ])  # fmt: skip
    return rows


def cold_game(game_file: GameFile) -> PddlGame:
    """A game loaded from nothing but an idle library copy (the grammar parse is not reused)."""
    alfworld_engine._logic.cache_clear()
    return PddlGame(game_file)


def library_copy_ms() -> float:
    """One new copy of libdownward (made once per process; copies are recycled, not freed)."""
    t = time.perf_counter()
    alfworld_engine._IDLE_LIBRARIES.append(alfworld_engine._new_library())
    return 1000 * (time.perf_counter() - t)


def stock_env(path: str, policy: bool) -> textworld.core.Wrapper:
    """TextWorld's PddlEnv as ALFWorld's AlfredTWEnv builds it (AlfredDemangler, no shuffle)."""
    demangler = alfworld_module("agents.environment.alfred_tw_env").AlfredDemangler
    infos = textworld.EnvInfos(won=True, admissible_commands=True, policy_commands=policy)
    env = demangler(PddlEnv(infos), shuffle=False)
    env.load(path)
    return env


def bench_steps(task: str, steps: int, planner_steps: int) -> tuple[dict[str, float], int]:
    """Mean ms per step of each arm on one random walk; also the number of steps compared."""
    path = str(read_game_file(resolve_task(task)).path)
    rng = random.Random(0)
    stock = stock_env(path, policy=False)
    state = stock.reset()
    walk_commands, stock_s, stock_trace = [], 0.0, []
    for _ in range(steps):
        command = rng.choice([*state.admissible_commands, "jump around"])
        t = time.perf_counter()
        state, reward, done = stock.step(command)
        stock_s += time.perf_counter() - t
        walk_commands.append(command)
        stock_trace.append((state.feedback, list(state.admissible_commands), float(reward)))
        if done:
            break
    result = {"stock PddlEnv": 1000 * stock_s / len(walk_commands)}
    for expert in (False, True):
        env = ALFWorldEnv(task, expert_plan=expert, max_episode_steps=None)
        env.reset(seed=0)
        elapsed, trace = 0.0, []
        for command in walk_commands:
            t = time.perf_counter()
            obs, reward, _, _, info = env.step(command)
            elapsed += time.perf_counter() - t
            trace.append((obs, info["admissible_commands"], reward))
        if trace != stock_trace:
            raise AssertionError("treegym and the stock PddlEnv disagree on this walk")
        result[f"treegym, expert_plan={expert}"] = 1000 * elapsed / len(walk_commands)
    if planner_steps:
        planner = stock_env(path, policy=True)
        planner.reset()
        t = time.perf_counter()
        for command in walk_commands[:planner_steps]:
            planner.step(command)
        result["stock PddlEnv + planner expert"] = 1000 * (time.perf_counter() - t) / planner_steps
    return result, len(walk_commands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default=DEFAULT_TASK, help="task spec or game.tw-pddl path")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40, help="random-walk steps per arm")
    parser.add_argument(
        "--planner-steps", type=int, default=1, help="steps of the (slow) stock planner expert"
    )
    args = parser.parse_args()
    console = Console(width=max(Console().width, 120))

    table = Table(title=f"ALFWorld forking, medians in ms ({args.task})")
    for col in (
        "depth",
        "snapshot",
        "restore",
        "replay",
        "new env (shared game) + restore",
        "new game (cold)",
        "replay/(snap+restore)",
    ):
        table.add_column(col, justify="right")
    rows = bench_forking(args.task, args.repeats)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    ten = next(r for r in rows if r[0] == "10")
    console.print(
        f"libdownward copy for a process's first game: {library_copy_ms():.0f} ms; "
        f"ALFWorld restore-vs-replay ratio at depth 10: [bold]{ten[-1]}[/]"
    )

    costs, n = bench_steps(args.task, args.steps, args.planner_steps)
    table = Table(title=f"ALFWorld step cost, mean ms over the same {n}-step random walk")
    table.add_column("env")
    table.add_column("ms / step", justify="right")
    for name, ms in costs.items():
        table.add_row(name, f"{ms:.2f}")
    console.print(table)
    ratio = costs["stock PddlEnv"] / costs["treegym, expert_plan=False"]
    console.print(
        f"ALFWorld step speedup over stock PddlEnv: [bold]{ratio:.1f}×[/] "
        "(identical observations, admissible commands and rewards; target ≥ 3×)"
    )
    if "stock PddlEnv + planner expert" in costs:
        planner = costs["stock PddlEnv + planner expert"] / costs["treegym, expert_plan=True"]
        console.print(f"ALFWorld expert-plan step speedup over the stock planner: {planner:.0f}×")


if __name__ == "__main__":
    main()
