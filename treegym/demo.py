"""``treegym demo``: play a generated TextWorld game as a small tree, through snapshot forks.

This is the main job until ``treegym collect`` exists: it generates a game offline, plays a
trunk with an expert-with-noise scripted policy, and at every few turns forks the env (restore
in place from a native snapshot) to play extra branches to the end. It reports the tree, the
outcomes, and what the forks cost against replaying each branch's prefix from reset.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from treegym.envs import make


@dataclass
class Branch:
    """One trajectory that leaves the trunk at ``start`` turns."""

    start: int
    actions: list[str] = field(default_factory=list)
    ret: float = 0.0
    outcome: str = "running"


@dataclass
class DemoResult:
    game: str
    trunk: Branch
    branches: list[Branch]
    env_steps: int = 0
    restores: int = 0
    restore_s: float = 0.0
    snapshots: int = 0
    snapshot_s: float = 0.0
    step_s: float = 0.0
    wall_s: float = 0.0

    @property
    def replay_steps_avoided(self) -> int:
        """Steps a fork-less harness would spend replaying each branch's prefix from reset."""
        return sum(b.start for b in self.branches)


def noisy_expert(info: dict[str, Any], rng: random.Random, epsilon: float) -> str:
    """Follow the env's expert plan with probability ``1 - epsilon``, else a random command."""
    plan = info.get("expert_plan") or []
    admissible = info.get("admissible_commands") or ["look"]
    if plan and rng.random() >= epsilon:
        return plan[0]
    return rng.choice(admissible)


def run_demo(
    game: str,
    *,
    branch_every: int = 2,
    branches: int = 2,
    epsilon: float = 0.3,
    seed: int = 0,
    max_steps: int = 40,
) -> DemoResult:
    t_wall = time.perf_counter()
    env = make("treegym/TextWorld-v0", game=game, max_episode_steps=max_steps)
    rng = random.Random(seed)
    _, info = env.reset(seed=seed)
    result = DemoResult(game=game, trunk=Branch(0), branches=[])

    def play_out(branch: Branch, info: dict[str, Any]) -> None:
        while True:
            action = noisy_expert(info, rng, epsilon)
            t = time.perf_counter()
            _, reward, terminated, truncated, info = env.step(action)
            result.step_s += time.perf_counter() - t
            result.env_steps += 1
            branch.actions.append(action)
            branch.ret += reward
            if terminated or truncated:
                branch.outcome = "won" if info["won"] else ("lost" if info["lost"] else "truncated")
                return

    # Trunk: snapshot every `branch_every` turns; those are the branch points.
    points: list[tuple[int, Any, dict[str, Any], float]] = []
    trunk, depth = result.trunk, 0
    while True:
        if depth % branch_every == 0:
            t = time.perf_counter()
            points.append((depth, env.snapshot(), info, trunk.ret))
            result.snapshot_s += time.perf_counter() - t
            result.snapshots += 1
        action = noisy_expert(info, rng, 0.0 if depth < branch_every else epsilon)
        _, reward, terminated, truncated, info = env.step(action)
        result.env_steps += 1
        trunk.actions.append(action)
        trunk.ret += reward
        depth += 1
        if terminated or truncated:
            trunk.outcome = "won" if info["won"] else ("lost" if info["lost"] else "truncated")
            break

    for start, snap, point_info, ret_so_far in points:
        for _ in range(branches):
            t = time.perf_counter()
            env.restore(snap)
            result.restore_s += time.perf_counter() - t
            result.restores += 1
            branch = Branch(start, ret=ret_so_far)
            play_out(branch, point_info)
            result.branches.append(branch)
    env.close()
    result.wall_s = time.perf_counter() - t_wall
    return result


def render(result: DemoResult, console: Any) -> None:
    """Print the tree and the cost table with rich."""
    from rich.table import Table
    from rich.tree import Tree

    colours = {"won": "green", "lost": "red", "truncated": "yellow"}
    tree = Tree(f"[bold]{result.game}[/]")
    trunk = result.trunk
    node = tree
    by_start: dict[int, list[Branch]] = {}
    for b in result.branches:
        by_start.setdefault(b.start, []).append(b)
    for depth, action in enumerate(trunk.actions):
        for b in by_start.get(depth, []):
            c = colours[b.outcome]
            node.add(
                f"[{c}]fork → {b.outcome}[/] return {b.ret:g} after {b.start + len(b.actions)} "
                f"turns: {' > '.join(b.actions[:4])}{' …' if len(b.actions) > 4 else ''}"
            )
        node = node.add(f"turn {depth + 1}: [cyan]{action}[/]")
    c = colours[trunk.outcome]
    node.add(f"[{c}]trunk → {trunk.outcome}[/] return {trunk.ret:g}")
    console.print(tree)

    leaves = [trunk, *result.branches]
    table = Table(title="what it cost", show_header=False)
    table.add_row("trajectories (leaves)", str(len(leaves)))
    table.add_row(
        "won / lost / truncated",
        " / ".join(str(sum(b.outcome == k for b in leaves)) for k in ("won", "lost", "truncated")),
    )
    table.add_row("env steps taken", str(result.env_steps))
    table.add_row("steps a chain would add replaying prefixes", str(result.replay_steps_avoided))
    step_ms = 1000 * result.step_s / max(1, result.env_steps - len(trunk.actions))
    table.add_row("mean step", f"{step_ms:.2f} ms")
    table.add_row(
        "snapshots",
        f"{result.snapshots} × {1000 * result.snapshot_s / max(1, result.snapshots):.3f} ms",
    )
    table.add_row(
        "restores (in place)",
        f"{result.restores} × {1000 * result.restore_s / max(1, result.restores):.3f} ms",
    )
    table.add_row("wall time (incl. game load)", f"{result.wall_s:.2f} s")
    console.print(table)
