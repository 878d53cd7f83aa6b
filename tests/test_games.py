"""Game specs and offline, deterministic TextWorld game generation."""

from __future__ import annotations

import pytest

from treegym.envs import GameGenerationError
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


def test_impossible_generation_fails_with_textworlds_reason(tmp_path):
    with pytest.raises(GameGenerationError, match="could not make"):
        make_game("custom:theme=no-such-theme,seed=0", tmp_path)
    assert not list((tmp_path / "textworld").iterdir())  # nothing half-made left behind
