"""The searching ALFWorld expert: it searches where the plan would cheat, on real tasks."""

from __future__ import annotations

import random

import pytest

from treegym.envs.alfworld_env import ALFWorldEnv
from treegym.envs.alfworld_scenes import can_hold
from treegym.policies.search_expert import SearchExpert

ROOM = [
    "go to cabinet 1",
    "go to cabinet 2",
    "go to fridge 1",
    "go to garbagecan 1",
    "go to sinkbasin 1",
    "go to toaster 1",
    "help",
]
PLAN = ["go to fridge 1", "open fridge 1", "take apple 1 from fridge 1", "go to sinkbasin 1",
        "move apple 1 to sinkbasin 1"]  # fmt: skip
NEED = "I need a apple for sinkbasin 1"


def test_an_unseen_pickup_place_is_searched_for_among_places_that_may_hold_the_object():
    firsts = set()
    for seed in range(40):
        expert = SearchExpert(random.Random(seed))
        action, thought = expert.choose("You are in the middle of a room.", {
            "expert_plan": PLAN, "admissible_commands": ROOM})  # fmt: skip
        assert thought == NEED
        place = action.removeprefix("go to ")
        assert place not in {"sinkbasin 1", "toaster 1"}  # the destination; cannot hold apples
        firsts.add(place)
    assert firsts == {"fridge 1", "garbagecan 1"}  # ALFRED keeps no apples in cabinets
    assert can_hold("GarbageCan", "Apple") and can_hold("Fridge", "Apple")
    assert not can_hold("Cabinet", "Apple") and not can_hold("Toaster", "Apple")


def test_a_closed_place_is_opened_and_what_is_in_sight_is_taken():
    expert = SearchExpert(random.Random(0))
    obs = "You arrive at cabinet 2. The cabinet 2 is closed."
    expert.observe("go to cabinet 2", obs)
    info = {"expert_plan": PLAN, "admissible_commands": [*ROOM, "open cabinet 2"]}
    assert expert.choose(obs, info) == ("open cabinet 2", NEED)
    obs = "You open the cabinet 2. The cabinet 2 is open. In it, you see a apple 3."
    expert.observe("open cabinet 2", obs)
    info["admissible_commands"].append("take apple 3 from cabinet 2")
    assert expert.choose(obs, info) == ("take apple 3 from cabinet 2", NEED)


def test_the_plan_is_followed_once_its_place_has_been_seen_or_it_needs_no_search():
    expert = SearchExpert(random.Random(0))
    expert.observe("go to fridge 1", "You arrive at fridge 1. The fridge 1 is closed.")
    expert.observe("open fridge 1", "You open the fridge 1. The fridge 1 is open.")
    expert.observe("go to toaster 1", "You arrive at toaster 1. On the toaster 1, you see nothing.")
    info = {"expert_plan": PLAN, "admissible_commands": ROOM}
    assert expert.choose("", info) == ("go to fridge 1", "next, go to fridge 1")
    expert.observe("take apple 1 from fridge 1", "You pick up the apple 1 from the fridge 1.")
    info["expert_plan"] = PLAN[3:]
    assert expert.choose("", info) == ("go to sinkbasin 1", "bring the apple to sinkbasin 1")


def play(task: str, seed: int) -> tuple[list[tuple[str, str]], bool, ALFWorldEnv]:
    env = ALFWorldEnv(task, max_episode_steps=30)
    obs, info = env.reset(seed=0)
    expert, turns = SearchExpert(random.Random(seed)), []
    while True:
        action, thought = expert.choose(obs, info)
        turns.append((action, thought))
        obs, _, terminated, truncated, info = env.step(action)
        expert.observe(action, obs)
        if terminated or truncated:
            return turns, bool(info["won"]), env


@pytest.mark.parametrize("task_type", ["pick_heat_then_place_in_recep", "look_at_obj_in_light"])
def test_on_real_tasks_it_wins_by_searching_in_an_order_its_seed_decides(alfworld_tasks, task_type):
    runs = [play(alfworld_tasks[task_type], seed) for seed in range(6)]
    assert sum(won for _, won, _ in runs) >= 4
    routes = {tuple(a for a, _ in turns) for turns, _, _ in runs}
    assert len(routes) > 1
    for turns, _, env in runs:
        env.close()
        for action, thought in turns:
            assert "plan" not in thought
            if thought.startswith("I need a "):
                assert action.split(" ")[0] in {"go", "open", "take", "use"}
