"""ALFWorld snapshots: in-place rewinds on fast-downward state ids, shared loaded games, pooled
envs restoring any task, thread safety of the shared library copy."""

from __future__ import annotations

import gc
import random
import threading

from treegym.envs.alfworld_env import ALFWorldEnv
from treegym.envs.checker import play


def walk(env: ALFWorldEnv, info: dict, rng: random.Random, steps: int) -> list[str]:
    commands = []
    for _ in range(steps):
        commands.append(rng.choice(info["admissible_commands"]))
        _, _, terminated, _, info = env.step(commands[-1])
        if terminated:
            break
    return commands


def test_restore_rewinds_in_place_any_number_of_times(alfworld_tasks):
    env = ALFWorldEnv(alfworld_tasks["pick_heat_then_place_in_recep"], max_episode_steps=None)
    _, info = env.reset(seed=0)
    walk(env, info, random.Random(1), 8)
    snap = env.snapshot()
    assert snap.is_native and snap.native.position.state_id > 0
    rng = random.Random(2)
    info = env.step("look")[4]
    continuation = walk(env, info, rng, 10)
    expected = None
    for _ in range(3):
        env.restore(snap)
        got = play(env, ["look", *continuation])
        assert expected is None or got == expected
        expected = got
    env.restore(snap.replay_only())
    assert play(env, ["look", *continuation]) == expected


def test_pooled_env_restores_snapshots_of_other_tasks_in_place(alfworld_tasks):
    env = ALFWorldEnv(alfworld_tasks["pick_cool_then_place_in_recep"])
    _, info = env.reset(seed=0)
    walk(env, info, random.Random(3), 5)
    snap = env.snapshot()
    expected = play(env, ["look", "inventory"])
    env.reset(options={"task": alfworld_tasks["look_at_obj_in_light"]})
    other = env.fingerprint
    env.restore(snap)  # no reset to the first task needed
    assert env.fingerprint == snap.fingerprint != other
    assert play(env, ["look", "inventory"]) == expected


def test_fork_shares_the_loaded_game_and_stays_isolated(alfworld_tasks):
    env = ALFWorldEnv(alfworld_tasks["pick_two_obj_and_place"], max_episode_steps=None)
    _, info = env.reset(seed=0)
    walk(env, info, random.Random(4), 4)
    before = env.snapshot()
    expected = play(env, ["look", "inventory"])
    env.restore(before)
    twin = env.fork()
    assert twin._game is env._game  # the loaded game is shared: no PDDL translation again
    walk(twin, twin.step("look")[4], random.Random(5), 6)
    assert play(env, ["look", "inventory"]) == expected
    twin.restore(before)
    assert play(twin, ["look", "inventory"]) == expected


def test_a_snapshot_keeps_its_game_alive_after_the_env_is_gone(alfworld_tasks):
    path = alfworld_tasks["pick_and_place_simple"]
    env = ALFWorldEnv(path)
    _, info = env.reset(seed=0)
    walk(env, info, random.Random(6), 3)
    snap = env.snapshot()
    expected = play(env, ["look"])
    env.close()
    del env
    gc.collect()
    fresh = ALFWorldEnv(path)
    fresh.restore(snap)
    assert play(fresh, ["look"]) == expected


def test_envs_sharing_a_game_step_safely_from_threads(alfworld_tasks):
    env = ALFWorldEnv(alfworld_tasks["pick_clean_then_place_in_recep"], max_episode_steps=None)
    _, info = env.reset(seed=0)
    plans = [walk(env.fork(), info, random.Random(seed), 25) for seed in range(4)]
    expected = []
    for commands in plans:
        env.reset(seed=0)
        expected.append(play(env, commands))
    forks = [env.fork() for _ in plans]
    results: list = [None] * len(plans)

    def run(i: int) -> None:
        forks[i].reset(seed=0)
        results[i] = play(forks[i], plans[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == expected
