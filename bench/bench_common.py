"""Helpers shared by the forking benches (run as scripts: ``python bench/<name>.py``)."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from treegym.envs import TextEnv


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, in milliseconds."""
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return 1000 * statistics.median(samples)


def fork_costs(env: TextEnv, depth: int, repeats: int):
    """Walk ``env`` to ``depth``; return its snapshot there and the median ms of a snapshot, a
    native restore and a replay restore (the three arms every forking bench compares)."""
    walk(env, depth, seed=depth)
    snap = env.snapshot()
    replay = snap.replay_only()
    snapshot_ms = median_ms(env.snapshot, repeats * 10)
    restore_ms = median_ms(lambda: env.restore(snap), repeats * 10)
    replay_ms = median_ms(lambda: env.restore(replay), repeats)
    return snap, snapshot_ms, restore_ms, replay_ms


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
