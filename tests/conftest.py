"""Shared fixtures: generated TextWorld games (made once per session, offline)."""

from __future__ import annotations

import pytest

from treegym.envs.textworld_games import make_game

#: One game per generator, including tw-cooking as the issue asks.
GAME_SPECS = {
    "cooking": "tw-cooking:recipe=2,take=2,go=6,open=true,cook=true,seed=7",
    "simple": "tw-simple:rewards=dense,goal=detailed,seed=1234",
    "coin": "tw-coin_collector:level=5,seed=3",
    "treasure": "tw-treasure_hunter:level=5,seed=4",
    "custom": "custom:world_size=4,nb_objects=8,quest_length=4,seed=5",
}


@pytest.fixture(scope="session")
def games() -> dict[str, str]:
    return {name: str(make_game(spec)) for name, spec in GAME_SPECS.items()}


@pytest.fixture(scope="session")
def cooking_game(games: dict[str, str]) -> str:
    return games["cooking"]


@pytest.fixture(scope="session")
def alfworld_tasks() -> dict[str, str]:
    """One generated ALFWorld task per task type (made once into the cache, offline)."""
    from treegym.envs.alfworld_files import TASK_TYPES
    from treegym.envs.alfworld_tasks import make_task

    return {task_type: str(make_task(f"{task_type}:seed=1")) for task_type in TASK_TYPES}
