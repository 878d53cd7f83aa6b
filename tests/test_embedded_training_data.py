"""The embedded model's training data (``scripts/train_embedded_model.py``) on real tasks: the
prompt's shorter command list never hides a step the experts take, and the recipe expert's
cooking episodes read the recipe before they gather."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from treegym.envs.embedded_mix import TRAIN_SEEDS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_embedded_model.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_embedded_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _episodes(script, env: str, seed: int, epsilon: float) -> list[list[tuple[str, int]]]:
    template = {**script.TEMPLATE_SETTINGS, "hide_admissible": script.HIDE_UNUSED}
    data = {"alfworld_expert": "search", "textworld_expert": "recipe", "template": template}
    episodes, _ = script.play_task((env, seed, 2, epsilon, 0, data))
    return episodes


def _listed(observation: str) -> list[str]:
    """The commands an observation piece lists (none after the last step)."""
    _, sep, rest = observation.partition("Admissible commands: ")
    return rest.split("<|end|>")[0].split(" | ") if sep else []


def _actions(episode: list[tuple[str, int]]) -> list[str]:
    return [text.split("Action: ", 1)[1].split("<|end|>")[0] for text, gen in episode if gen]


@pytest.mark.parametrize(
    "env, seed", [("textworld", s) for s in TRAIN_SEEDS[:3]] + [("alfworld", 1)]
)
def test_no_expert_step_is_hidden_and_no_hidden_command_is_listed(script, env, seed):
    hidden = re.compile(script.HIDE_UNUSED)
    for episode in _episodes(script, env, seed, epsilon=0.0):
        steps = [a for a in _actions(episode) if a != "examine cookbook"]  # named by its thought
        assert steps and not [a for a in steps if hidden.match(a) and not a.startswith("go to ")]
        listed = [c for text, gen in episode if not gen for c in _listed(text)]
        assert listed and not [c for c in listed if hidden.match(c)]


def test_recipe_expert_cooking_episodes_read_the_recipe_first_and_cite_it(script):
    cooking = TRAIN_SEEDS[0]  # seed % 3 == 0: tw-cooking
    for episode in _episodes(script, "textworld", cooking, epsilon=0.0):
        actions = _actions(episode)
        assert actions.count("examine cookbook") == 1
        takes = [a for a in actions if a.startswith("take ")]
        assert takes and actions.index("examine cookbook") < actions.index(takes[0])
        assert "Thought: the recipe needs" in "".join(text for text, _ in episode)
