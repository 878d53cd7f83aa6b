"""ALFWorld task generation: every type, solvable with a winning walkthrough, deterministic,
splits like ALFWorld's, the CLI, and bad generator input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from treegym.cli import app
from treegym.envs import GameGenerationError
from treegym.envs.alfworld_assets import constants
from treegym.envs.alfworld_env import ALFWorldEnv
from treegym.envs.alfworld_files import TASK_TYPES, read_game_file
from treegym.envs.alfworld_tasks import (
    generate_task,
    generate_tasks,
    make_task,
    parse_spec,
    split_floor_plans,
)


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_stored_walkthrough_wins_every_type(alfworld_tasks, task_type):
    path = alfworld_tasks[task_type]
    data = json.loads(Path(path).read_text())
    assert data["solvable"] is True and data["walkthrough"]
    traj = json.loads((Path(path).parent / "traj_data.json").read_text())
    assert traj["task_type"] == task_type
    env = ALFWorldEnv(path, expert_plan=False)
    obs, info = env.reset(seed=0)
    goal = traj["turk_annotations"]["anns"][0]["task_desc"]
    assert obs.startswith("-= Welcome to TextWorld, ALFRED! =-\n\n")
    assert obs.endswith(f"Your task is to: {goal}.")
    total = 0.0
    for i, command in enumerate(data["walkthrough"]):
        assert command in info["admissible_commands"]
        _, reward, terminated, _, info = env.step(command)
        total += reward
        assert terminated == (i == len(data["walkthrough"]) - 1)
    assert info["won"] and total == 1.0 and info["task_type"] == task_type


def test_generation_is_deterministic_for_a_seed_even_across_processes():
    first = generate_task("pick_heat_then_place_in_recep", "train", "7/3")
    again = generate_task("pick_heat_then_place_in_recep", "train", "7/3")
    assert first.game == again.game and first.traj == again.traj
    other = generate_task("pick_heat_then_place_in_recep", "train", "7/4")
    assert other.game["pddl_problem"] != first.game["pddl_problem"]
    code = (
        "import json; from treegym.envs.alfworld_tasks import generate_task; "
        "print(json.dumps(generate_task('pick_heat_then_place_in_recep', 'train', '7/3').game))"
    )
    child = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert json.loads(child.stdout) == first.game


def test_splits_follow_alfworld_and_ood_floor_plans_are_never_trained_on(tmp_path):
    train = set(split_floor_plans("train"))
    ood = set(split_floor_plans("eval_out_of_distribution"))
    assert train == set(split_floor_plans("eval_in_distribution"))
    assert train and ood and not train & ood
    assert train <= set(constants().TRAIN_SCENE_NUMBERS)
    assert ood <= set(constants().TEST_SCENE_NUMBERS)
    plans: dict[str, set[int]] = {}
    problems: dict[str, set[str]] = {}
    for split in ("train", "eval_in_distribution", "eval_out_of_distribution"):
        generate_tasks(tmp_path, 6, split=split, seed=3)
        files = list((tmp_path / split).glob("*/*/traj_data.json"))
        assert len(files) == 6
        plans[split] = {json.loads(f.read_text())["scene"]["scene_num"] for f in files}
        problems[split] = {
            json.loads((f.parent / "game.tw-pddl").read_text())["pddl_problem"] for f in files
        }
    assert not plans["train"] & plans["eval_out_of_distribution"]
    assert plans["eval_out_of_distribution"] <= ood
    assert plans["train"] | plans["eval_in_distribution"] <= train
    assert not problems["train"] & problems["eval_in_distribution"]


def test_cli_makes_tasks_of_chosen_types_and_prints_a_count_per_type(tmp_path):
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "alfworld-tasks",
            "--n",
            "3",
            "--types",
            "pick_and_place_simple,look_at_obj_in_light",
            "--out",
            str(tmp_path),
            "--seed",
            "5",
        ],
        terminal_width=200,
    )
    assert out.exit_code == 0, out.stdout
    assert "pick_and_place_simple │     2" in out.stdout
    assert "look_at_obj_in_light  │     1" in out.stdout
    games = sorted((tmp_path / "train").glob("*/*/game.tw-pddl"))
    assert len(games) == 3
    assert all(read_game_file(g).task_type for g in games)


def test_spec_tasks_are_made_once_into_the_cache(tmp_path):
    first = make_task(
        "pick_cool_then_place_in_recep:seed=2,split=eval_out_of_distribution", tmp_path
    )
    stamp = first.stat().st_mtime_ns
    again = make_task(
        "pick_cool_then_place_in_recep:seed=2,split=eval_out_of_distribution", tmp_path
    )
    assert again == first and again.stat().st_mtime_ns == stamp
    assert parse_spec("pick_two_obj_and_place:seed=4") == ("pick_two_obj_and_place", "train", 4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: generate_task("pick_and_eat", "train", "0"), "unknown ALFWorld task type"),
        (lambda: generate_task("pick_and_place_simple", "test", "0"), "unknown split 'test'"),
        (lambda: parse_spec("pick_and_place_simple:seed=x"), "seed must be an int"),
        (lambda: parse_spec("pick_and_place_simple:level=3"), "bad ALFWorld task spec"),
        (lambda: generate_tasks(Path("unused"), 1, task_types=[]), "at least one task type"),
    ],
)
def test_bad_generator_input_gets_a_named_error(call, message):
    with pytest.raises(GameGenerationError, match=message):
        call()


def test_cli_unknown_task_type_is_one_line_and_exit_2(tmp_path):
    out = CliRunner().invoke(
        app, ["alfworld-tasks", "--types", "pick_and_eat", "--out", str(tmp_path)]
    )
    assert out.exit_code == 2
    assert "unknown ALFWorld task type 'pick_and_eat'" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
