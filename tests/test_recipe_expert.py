"""The recipe-reading TextWorld expert: it reads the cookbook first and cites it, on real games."""

from __future__ import annotations

import pytest

from treegym.envs.embedded_mix import TRAIN_SEEDS, embedded_task, made_embedded_task
from treegym.envs.textworld_env import TextWorldEnv
from treegym.policies.recipe_expert import READ, RecipeExpert

KITCHEN = ["go north", "take cookbook from table", "take flour from shelf", READ]


def test_it_reads_once_in_reach_then_cites_the_recipe_for_each_step():
    expert = RecipeExpert()
    plan = ["take flour from shelf", "prepare meal", "eat meal"]
    unread = expert.choose({"expert_plan": ["go north", *plan], "admissible_commands": KITCHEN[:3]})
    assert unread == ("go north", "the plan says go north")  # no cookbook in reach yet
    assert expert.choose({"expert_plan": plan, "admissible_commands": KITCHEN}) == (
        READ,
        "let me read the recipe",
    )
    steps = [
        expert.choose({"expert_plan": plan[i:], "admissible_commands": KITCHEN}) for i in range(3)
    ]
    assert steps == [
        ("take flour from shelf", "the recipe needs flour"),
        ("prepare meal", "I have what the recipe needs"),
        ("eat meal", "the meal is ready"),
    ]  # read once: the cookbook stays admissible, the expert does not read it again


def test_before_reading_a_take_keeps_the_plans_thought():
    expert = RecipeExpert()
    step = "take coin"  # a coin collector: no cookbook, ever
    assert expert.choose({"expert_plan": [step], "admissible_commands": [step]}) == (
        step,
        "the plan says take coin",
    )


COOKING = [
    s for s in TRAIN_SEEDS[:12] if embedded_task("textworld", s).spec.startswith("tw-cooking")
]


@pytest.mark.parametrize("seed", COOKING[:2])
def test_on_real_cooking_games_it_wins_and_every_ingredient_it_takes_is_in_the_recipe(seed):
    _, path = made_embedded_task("textworld", seed)
    env = TextWorldEnv(str(path), max_episode_steps=30)
    obs, info = env.reset(seed=0)
    expert, recipe, actions = RecipeExpert(), None, []
    while True:
        action, thought = expert.choose(info)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if action == READ:
            recipe = obs
            assert "Ingredients:" in recipe
        if thought.startswith("the recipe needs "):
            assert thought.removeprefix("the recipe needs ") in recipe
        if terminated or truncated:
            break
    env.close()
    assert info["won"] and actions.count(READ) == 1
