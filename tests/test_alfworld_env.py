"""treegym/ALFWorld-v0: conformance on every task type, ALFWorld's text, the real-data path
(a hand-written file in ALFWorld's format), and every kind of bad input."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

import treegym
from tests.test_alfworld_speed import stock_env
from treegym.envs import (
    EpisodeEndedError,
    GameFileError,
    GameGenerationError,
    UnknownTaskError,
    check_env,
)
from treegym.envs.alfworld_assets import alfworld_module, domain_text, grammar_text
from treegym.envs.alfworld_env import ALFWorldEnv
from treegym.envs.alfworld_files import TASK_TYPES

# A task in ALFWorld's own format, written by hand: capitalised ALFRED ids mangled with _bar_,
# _minus_, _dot_; bare class objects ("Mug - object"); the grammar still saying UNKNOWN GOAL,
# to be filled from traj_data.json as alfworld's add_task_to_grammar does.
MUG = "Mug_bar__minus_01_dot_76_bar__plus_00_dot_90_bar__minus_00_dot_62"
APPLE = "Apple_bar__plus_00_dot_10_bar__plus_00_dot_95_bar__minus_02_dot_00"
CABINET_A = "Cabinet_bar__minus_01_dot_55_bar__plus_00_dot_50_bar__plus_00_dot_38"
CABINET_B = "Cabinet_bar__plus_00_dot_68_bar__plus_00_dot_50_bar__minus_02_dot_20"
COFFEE = "CoffeeMachine_bar__minus_01_dot_98_bar__plus_00_dot_93_bar__minus_00_dot_19"
COUNTER = "CounterTop_bar__minus_01_dot_87_bar__plus_00_dot_95_bar__minus_01_dot_21"
SINK = "Sink_bar__minus_01_dot_90_bar__plus_00_dot_97_bar__minus_01_dot_50_bar_SinkBasin"
LOCS = {
    CABINET_A: "loc_bar__minus_4_bar_2_bar_3_bar_30",
    CABINET_B: "loc_bar_2_bar__minus_5_bar_2_bar_30",
    COFFEE: "loc_bar__minus_5_bar__minus_1_bar_3_bar_45",
    COUNTER: "loc_bar__minus_5_bar__minus_5_bar_3_bar_30",
    SINK: "loc_bar__minus_5_bar__minus_6_bar_3_bar_30",
}
START = "loc_bar__minus_1_bar_3_bar_1_bar_30"
GOAL = """(:goal
(and
(exists (?r - receptacle)
(exists (?o - object)
(and
(cleanable ?o)
(objectType ?o MugType)
(receptacleType ?r CoffeeMachineType)
(isClean ?o)
(inReceptacle ?o ?r)
)))))
)"""


def real_problem(goal: str = GOAL, apple_in_hand: bool = False) -> str:
    recs = {CABINET_A: "Cabinet", CABINET_B: "Cabinet", COFFEE: "CoffeeMachine"}
    recs |= {COUNTER: "CounterTop", SINK: "SinkBasin"}
    lines = ["(define (problem plan_trial_T20190909_012345_678901)", "(:domain alfred)"]
    lines += ["(:objects", "agent1 - agent", "Mug - object", "Apple - object"]
    lines += [f"{t}Type - otype" for t in ("Mug", "Apple", "Knife", "ButterKnife")]
    rtypes = ("Cabinet", "CoffeeMachine", "CounterTop", "SinkBasin", "Microwave", "Fridge")
    lines += [f"{t}Type - rtype" for t in rtypes]
    lines += [f"{MUG} - object", f"{APPLE} - object"]
    lines += [f"{r} - receptacle" for r in recs]
    lines += [f"{loc} - location" for loc in [*LOCS.values(), START]]
    lines += [")", "(:init"]
    lines += [f"(receptacleType {r} {t}Type)" for r, t in recs.items()]
    lines += [f"(objectType {MUG} MugType)", f"(objectType {APPLE} AppleType)"]
    apple = [] if apple_in_hand else ["Apple"]  # in hand, with nowhere to put it down
    for rtype, otypes in {
        "Cabinet": ["Mug"],
        "CoffeeMachine": ["Mug"],
        "CounterTop": ["Mug", *apple],
        "SinkBasin": ["Mug", *apple],
    }.items():
        lines += [f"(canContain {rtype}Type {o}Type)" for o in otypes]
    lines += [f"(pickupable {MUG})", f"(pickupable {APPLE})", f"(isReceptacleObject {MUG})"]
    lines += [f"(openable {CABINET_A})", f"(openable {CABINET_B})"]
    lines += [f"(atLocation agent1 {START})"]
    lines += [f"(cleanable {MUG})", f"(heatable {MUG})", f"(coolable {MUG})"]
    lines += [f"(cleanable {APPLE})", f"(sliceable {APPLE})"]
    lines += [f"(inReceptacle {MUG} {CABINET_A})"]
    lines += [f"(receptacleAtLocation {r} {loc})" for r, loc in LOCS.items()]
    lines += [f"(objectAtLocation {MUG} {LOCS[CABINET_A]})"]
    if apple_in_hand:
        lines += [f"(holds agent1 {APPLE})", "(holdsAny agent1)"]
    else:
        lines += [
            f"(inReceptacle {APPLE} {COUNTER})",
            f"(objectAtLocation {APPLE} {LOCS[COUNTER]})",
        ]
    lines += [")", goal]
    return "\n".join(lines)


WALKTHROUGH = [
    "go to cabinet 2",
    "open cabinet 2",
    "take mug 1 from cabinet 2",
    "go to sinkbasin 1",
    "clean mug 1 with sinkbasin 1",
    "go to coffeemachine 1",
    "move mug 1 to coffeemachine 1",
]
TRIAL = (
    "json_2.1.1/valid_seen/pick_clean_then_place_in_recep-Mug-None-CoffeeMachine-1/"
    "trial_T20190909_012345_678901"
)


def write_game(folder: Path, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    game = {
        "pddl_domain": domain_text(),
        "grammar": grammar_text(),
        "pddl_problem": real_problem(),
        "solvable": True,
        "walkthrough": WALKTHROUGH,
        **overrides,
    }
    (folder / "game.tw-pddl").write_text(json.dumps(game))
    traj = {
        "task_type": "pick_clean_then_place_in_recep",
        "pddl_params": {
            "object_target": "Mug",
            "parent_target": "CoffeeMachine",
            "toggle_target": "",
            "mrecep_target": "",
            "object_sliced": False,
        },
    }
    (folder / "traj_data.json").write_text(json.dumps(traj))
    return folder / "game.tw-pddl"


@pytest.mark.slow
@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_check_env_passes_on_generated_tasks_of_every_type(alfworld_tasks, task_type):
    report = check_env(
        "treegym/ALFWorld-v0",
        env_kwargs={"task": alfworld_tasks[task_type]},
        trials=2,
        horizon=12,
    )
    assert report.passed, str(report)


def _stock_copy(game_file: Path, folder: Path) -> Path:
    """The same game for the stock PddlEnv, its UNKNOWN GOAL filled from traj_data.json by
    alfworld's own add_task_to_grammar. ALFWorld picks the goal template with the global
    ``random``; treegym picks it seeded by the problem's hash (the same file always reads the
    same), so the global generator is seeded that way for the one call."""
    misc = alfworld_module("agents.utils.misc")
    game = json.loads(game_file.read_text())
    traj = json.loads((game_file.parent / "traj_data.json").read_text())
    saved = random.getstate()
    try:
        random.seed(hashlib.sha256(game["pddl_problem"].encode()).hexdigest())
        game["grammar"] = misc.add_task_to_grammar(game["grammar"], traj, rng=random.Random(0))
    finally:
        random.setstate(saved)
    folder.mkdir()
    (folder / "game.tw-pddl").write_text(json.dumps(game))
    return folder / "game.tw-pddl"


def test_real_alfworld_file_plays_like_the_stock_pddl_env(tmp_path, monkeypatch):
    """Loaded through ALFWORLD_DATA, the hand-written real-format file gives exactly what
    TextWorld's PddlEnv (with ALFWorld's AlfredDemangler) gives on the same game, step for
    step along the walkthrough with detours and nonsense."""
    game_file = write_game(tmp_path / TRIAL)
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    env = treegym.make("treegym/ALFWorld-v0", task=TRIAL)
    stock = stock_env(str(_stock_copy(game_file, tmp_path / "stock")))
    state = stock.reset()
    obs, info = env.reset(seed=0)
    assert obs == state.feedback and "UNKNOWN GOAL" not in obs
    assert info["admissible_commands"] == state.admissible_commands
    assert info["task_type"] == "pick_clean_then_place_in_recep"
    assert info["task_id"] == TRIAL.split("/", 2)[2]
    assert info["expert_plan"] == WALKTHROUGH
    commands = ["look", *WALKTHROUGH[:3], "jump around", "inventory", *WALKTHROUGH[3:]]
    for step, command in enumerate(commands):
        state, stock_reward, done = stock.step(command)
        obs, reward, terminated, _, info = env.step(command)
        assert obs == state.feedback, f"step {step}: {command!r}"
        assert info["admissible_commands"] == state.admissible_commands, f"step {step}"
        assert (reward, terminated, info["won"]) == (float(stock_reward), done, state["won"])
    assert terminated and reward == 1.0 and info["won"] and info["score"] == 1


@pytest.mark.slow
def test_check_env_passes_on_the_real_format_file(tmp_path, monkeypatch):
    write_game(tmp_path / TRIAL)
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))  # the checker's child process too
    report = check_env("treegym/ALFWorld-v0", env_kwargs={"task": TRIAL}, trials=2, horizon=10)
    assert report.passed, str(report)


def test_alfworld_data_path_and_explicit_path_are_one_code_path(tmp_path, monkeypatch):
    path = write_game(tmp_path / TRIAL)
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    by_data = ALFWorldEnv(TRIAL)
    by_path = ALFWorldEnv(path.parent)
    assert by_data.fingerprint == by_path.fingerprint
    assert by_data.reset(seed=0) == by_path.reset(seed=0)


def test_importing_alfworld_does_not_invent_alfworld_data(monkeypatch, alfworld_tasks):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    ALFWorldEnv(alfworld_tasks["pick_and_place_simple"]).reset(seed=0)
    assert "ALFWORLD_DATA" not in os.environ  # alfworld/info.py would set it on import


def test_info_contract_reward_and_episode_end(alfworld_tasks):
    env = ALFWorldEnv(alfworld_tasks["pick_two_obj_and_place"])
    _, info = env.reset(seed=0)
    keys = {"admissible_commands", "won", "lost", "score", "max_score", "moves", "task_id"}
    assert keys | {"expert_plan", "task_type", "gamefile"} <= set(info)
    assert info["admissible_commands"] == sorted(info["admissible_commands"])
    rewards = []
    while info["expert_plan"]:
        _, reward, terminated, _, info = env.step(info["expert_plan"][0])
        rewards.append(reward)
    assert terminated and rewards[-1] == 1.0 and sum(rewards) == 1.0
    assert info["moves"] == len(rewards) and info["lost"] is False
    with pytest.raises(EpisodeEndedError):
        env.step("look")


def test_command_outside_the_grammar_is_nothing_happens(alfworld_tasks):
    env = ALFWorldEnv(alfworld_tasks["look_at_obj_in_light"])
    _, before = env.reset(seed=0)
    for command in ("fly to the moon", "go to cabinet 99", "take", "\x00\n\tlook\x7f", "é漢字"):
        obs, reward, terminated, truncated, info = env.step(command)
        assert obs == "Nothing happens."
        assert (reward, terminated, truncated) == (0.0, False, False)
        assert info["moves"] == 0 and info["admissible_commands"] == before["admissible_commands"]
    assert env.step("  look  ")[0] != "Nothing happens."  # surrounding spaces are stripped


def test_truncation_at_max_episode_steps(alfworld_tasks):
    env = ALFWorldEnv(alfworld_tasks["pick_and_place_simple"], max_episode_steps=2)
    env.reset(seed=0)
    assert env.step("look")[3] is False
    assert env.step("look")[3] is True


# ---------------------------------------------------------------------------- bad input
def test_missing_task_file(tmp_path, monkeypatch):
    with pytest.raises(GameFileError, match="not found"):
        ALFWorldEnv(tmp_path / "nowhere" / "game.tw-pddl")
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    with pytest.raises(GameFileError, match=r"not found: json_2.1.1/x or under \$ALFWORLD_DATA"):
        ALFWorldEnv("json_2.1.1/x")
    with pytest.raises(GameFileError, match="not found"):
        ALFWorldEnv(tmp_path)  # a folder without game.tw-pddl


def test_unreadable_task_file():
    # /proc/self/mem is a file nobody, not even root, can read from the start.
    with pytest.raises(GameFileError, match="cannot read"):
        ALFWorldEnv("/proc/self/mem")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe not json", "not JSON"),
        (b"[1, 2, 3]", "expected a JSON object"),
        (b'{"pddl_domain": "x", "grammar": "y"}', "'pddl_problem' is missing"),
        (None, "'walkthrough' is not a list"),
        (None, "cannot translate the PDDL"),
        (None, "PDDL name of 400 characters"),
        (None, "cannot parse the grammar"),
    ],
)
def test_malformed_task_file(tmp_path, content, message):
    folder = tmp_path / "trial"
    if content is not None:
        folder.mkdir()
        (folder / "game.tw-pddl").write_bytes(content)
    elif "walkthrough" in message:
        write_game(folder, walkthrough="go to cabinet 2")
    elif "translate" in message:
        write_game(folder, pddl_problem=real_problem()[:-40])
    elif "name of" in message:
        write_game(folder, pddl_problem=real_problem().replace(START, "loc" + "x" * 397))
    else:
        write_game(folder, grammar='grammar :: """ {"intro": [ """;')
    with pytest.raises(GameFileError, match=message):
        ALFWorldEnv(folder)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"solvable": False}, "marked unsolvable"),
        (
            {"pddl_problem": real_problem(apple_in_hand=True), "solvable": None},
            "unsolvable, fast-downward finds no plan",
        ),
        (
            {"pddl_problem": real_problem(GOAL.replace("MugType", "AppleType"))},
            "unsolvable, fast-downward's translator finds the goal unreachable",
        ),
        (
            {"pddl_problem": real_problem("(:goal (and (pickupable " + MUG + ")))\n)")},
            "the goal holds",
        ),
    ],
)
def test_unsolvable_problem(tmp_path, overrides, message):
    # 1: the agent holds an apple nothing may hold, so it can never take the mug (only the
    # search sees that); 2: no coffee machine may hold an apple (the translator sees that).
    with pytest.raises(GameFileError, match=message):
        ALFWorldEnv(write_game(tmp_path / "trial", **overrides))


def test_unknown_task_type_and_non_task_values():
    with pytest.raises(GameGenerationError, match="unknown ALFWorld task type 'pick_and_eat'"):
        ALFWorldEnv("pick_and_eat:seed=0")
    with pytest.raises(UnknownTaskError, match="generator spec"):
        ALFWorldEnv(42)


def test_bad_reset_task_leaves_a_clear_error_and_a_usable_env(alfworld_tasks, tmp_path):
    env = ALFWorldEnv(alfworld_tasks["pick_and_place_simple"])
    with pytest.raises(GameFileError, match="not found"):
        env.reset(options={"task": str(tmp_path / "missing")})
    obs, _ = env.reset(seed=0)
    assert obs.startswith("-= Welcome to TextWorld, ALFRED! =-")
