"""treegym's ALFWorld step against TextWorld's stock PddlEnv (+ ALFWorld's AlfredDemangler):
identical observations, admissible commands and rewards on random walks; expert plans that win
from anywhere and are as short as the stock planner's. How much faster a step is, is measured
by ``bench/alfworld_forking.py`` ("step speedup over stock PddlEnv"), not asserted here."""

from __future__ import annotations

import random

import pytest
import textworld
from textworld.envs.pddl import PddlEnv

from treegym.envs.alfworld_assets import alfworld_module
from treegym.envs.alfworld_env import ALFWorldEnv

NONSENSE = ("jump around", "take the moon from the sky", "go to cabinet 99")


def stock_env(path: str, policy: bool = False) -> textworld.core.Wrapper:
    """TextWorld's PddlEnv as ALFWorld's AlfredTWEnv builds it (AlfredDemangler, no shuffle)."""
    demangler = alfworld_module("agents.environment.alfred_tw_env").AlfredDemangler
    infos = textworld.EnvInfos(won=True, admissible_commands=True, policy_commands=policy)
    env = demangler(PddlEnv(infos), shuffle=False)
    env.load(path)
    return env


def mixed_walk(path: str, seed: int, steps: int = 60) -> list[str]:
    """Random admissible commands, nonsense, and expert steps (to reach states near the goal)."""
    env = ALFWorldEnv(path, max_episode_steps=None)
    _, info = env.reset(seed=0)
    rng, commands = random.Random(seed), []
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.3:
            command = info["expert_plan"][0]
        elif roll < 0.4:
            command = rng.choice(NONSENSE)
        else:
            command = rng.choice(info["admissible_commands"])
        commands.append(command)
        _, _, terminated, _, info = env.step(command)
        if terminated:
            break
    return commands


@pytest.mark.parametrize(
    ("task_type", "seed"),
    [
        ("pick_heat_then_place_in_recep", 0),
        ("look_at_obj_in_light", 1),
        ("pick_two_obj_and_place", 2),
    ],
)
def test_random_walks_match_the_stock_pddl_env(alfworld_tasks, task_type, seed):
    path = alfworld_tasks[task_type]
    commands = mixed_walk(path, seed)
    stock = stock_env(path)
    ours = ALFWorldEnv(path, expert_plan=False, max_episode_steps=None)
    state = stock.reset()
    obs, info = ours.reset(seed=0)
    assert obs == state.feedback
    assert info["admissible_commands"] == state.admissible_commands
    for step, command in enumerate(commands):
        state, stock_reward, done = stock.step(command)
        obs, reward, terminated, _, info = ours.step(command)
        assert obs == state.feedback, f"step {step}: {command!r}"
        assert info["admissible_commands"] == state.admissible_commands, f"step {step}"
        assert (reward, terminated, info["won"]) == (float(stock_reward), done, state["won"])


@pytest.mark.parametrize("seed", range(3))
def test_expert_plan_wins_from_random_states(alfworld_tasks, seed):
    rng = random.Random(seed)
    for task_type in ("pick_cool_then_place_in_recep", "pick_two_obj_and_place"):
        env = ALFWorldEnv(alfworld_tasks[task_type], max_episode_steps=None)
        _, info = env.reset(seed=0)
        for _ in range(rng.randrange(3, 15)):  # wander: open things, carry things off
            _, _, terminated, _, info = env.step(rng.choice(info["admissible_commands"]))
            if terminated:
                break
        else:
            plan = info["expert_plan"]
            assert plan
            for i, command in enumerate(plan):
                _, reward, terminated, _, info = env.step(command)
                assert terminated == (i == len(plan) - 1) and info["expert_plan"] == plan[i + 1 :]
            assert reward == 1.0 and info["won"]


def test_expert_plans_are_as_short_as_the_stock_planner(alfworld_tasks):
    """The goal-relevant sub-problem loses no optimality: same plan length as fast-downward's
    replan on the whole game, at the start and after random steps (a bathroom: the stock
    planner takes seconds a call on kitchens)."""
    path = alfworld_tasks["pick_clean_then_place_in_recep"]
    stock = stock_env(path, policy=True)
    state = stock.reset()
    ours = ALFWorldEnv(path, max_episode_steps=None)
    _, info = ours.reset(seed=0)
    rng = random.Random(0)
    for _ in range(4):
        assert len(info["expert_plan"]) == len(state["policy_commands"])
        command = rng.choice(info["admissible_commands"])
        state, _, _ = stock.step(command)
        _, _, _, _, info = ours.step(command)
