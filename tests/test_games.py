"""Game specs and offline, deterministic TextWorld game generation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from treegym.envs import GameGenerationError
from treegym.envs.textworld_env import TextWorldEnv
from treegym.envs.textworld_games import GameSpec, is_spec, make_game


def test_string_and_mapping_specs_are_the_same_spec():
    a = GameSpec.parse("tw-cooking:recipe=2, take=1,go=6,seed=3")
    b = GameSpec.parse({"challenge": "tw-cooking", "go": 6, "take": "1", "recipe": 2, "seed": 3})
    assert a == b and a.slug == b.slug
    assert a.canonical.startswith("tw-cooking:") and "seed=3" in a.canonical
    assert dict(a.params)["cook"] is False  # challenge defaults filled in


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tw-cooking:recipe=two", "must be an int"),
        ("tw-cooking:go=5", "must be one of"),
        ("tw-cooking:flavour=1", "unknown parameter"),
        ("tw-simple:goal=detailed", "needs parameter 'rewards'"),
        ("tw-cooking:open=maybe", "true/false"),
        ("tw-doom:level=1", "unknown TextWorld generator"),
        (
            "tw-cookin:recipe=1",
            "unknown TextWorld generator 'tw-cookin'.*did you mean 'tw-cooking'",
        ),
        ("tw-cooking recipe=1", "unknown TextWorld generator.*did you mean 'tw-cooking:recipe=1'"),
        ("tw-coin_collector:level=301", r"'level' must be in \[1, 300\], got 301"),
        ("tw-treasure_hunter:level=0", r"'level' must be in \[1, 30\], got 0"),
        ("tw-cooking:recipe=9", r"'recipe' must be in \[1, 5\], got 9"),
        ("tw-cooking:recipe=2,take=3", r"'take' must be in \[0, 2\] \(at most 'recipe'\), got 3"),
        ("tw-cooking:recipe_seed=-2", r"'recipe_seed' must be in \[0, 4294967295\]"),
        ("tw-cooking:seed=-1", r"seed must be in \[0, 4294967295\].*got -1"),
        ("custom:world_size=0", ">= 1"),
        ("custom:rooms=3", "unknown parameter"),
        ("tw-cooking:recipe", "key=value"),
        (42, "str or a mapping"),
    ],
)
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(GameGenerationError, match=message):
        GameSpec.parse(spec)


def test_is_spec_tells_specs_from_paths():
    assert is_spec("tw-simple:rewards=dense,goal=brief")
    assert is_spec({"challenge": "custom"})
    assert not is_spec("/games/tw-simple.z8") and not is_spec("game.z8") and not is_spec(3)
    # Typos are specs too, so they are parsed and named, not looked up as files.
    assert is_spec("tw-cookin:recipe=1") and is_spec("tw-cooking recipe=1")
    assert not is_spec("games/mygame") and not is_spec("story.Z5")


@pytest.mark.parametrize("game", ["tw-cookin:recipe=1", "tw-cooking recipe=1"])
def test_mistyped_spec_given_to_the_env_names_the_generator(game):
    with pytest.raises(GameGenerationError, match="unknown TextWorld generator"):
        TextWorldEnv(game=game)


def test_check_and_games_refuse_a_mistyped_generator_with_the_same_line():
    cli = str(Path(sys.executable).with_name("treegym"))
    runs = [
        subprocess.run([cli, *args], capture_output=True, text=True, timeout=300)
        for args in (
            ["games", "tw-cookin:recipe=1"],
            ["check", "treegym/TextWorld-v0", "-k", "game=tw-cookin:recipe=1"],
        )
    ]
    assert [r.returncode for r in runs] == [2, 2]
    games, check = (" ".join(r.stderr.split()) for r in runs)
    assert games == check and games.startswith("error: unknown TextWorld generator 'tw-cookin'")


@pytest.mark.slow
def test_generation_is_deterministic_across_processes_and_caches(tmp_path):
    spec = "custom:world_size=3,nb_objects=6,quest_length=3,seed=11"
    first = make_game(spec, tmp_path / "a")
    second = make_game(spec, tmp_path / "b")
    assert first != second
    assert first.read_bytes() == second.read_bytes()
    assert first.with_suffix(".json").read_bytes() == second.with_suffix(".json").read_bytes()
    assert make_game(spec, tmp_path / "a") == first  # cached: no regeneration
    assert {p.name for p in first.parent.iterdir()} == {"game.json", "game.z8"}
    assert not [p for p in (tmp_path / "a" / "textworld").iterdir() if p.name.startswith(".tmp")]


def test_impossible_generation_fails_with_textworlds_reason_in_one_line(tmp_path):
    with pytest.raises(GameGenerationError, match="could not make") as caught:
        make_game("custom:theme=no-such-theme,seed=0", tmp_path)
    message = str(caught.value)
    assert "MissingTextGrammar: Cannot find any theme files" in message
    assert "\n" not in message and "Traceback" not in message
    assert "^^^" not in message and " | " not in message and 'File "' not in message
    assert not list((tmp_path / "textworld").iterdir())  # nothing half-made left behind
