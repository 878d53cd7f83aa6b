"""Policy evaluation (``treegym.harness.evaluate``) and the embedded model's task mix."""

from __future__ import annotations

import asyncio

import pytest

from tests.policy_fixtures import toy_texts
from treegym.envs import embedded_mix
from treegym.envs.embedded_mix import EVAL_SEEDS, TRAIN_SEEDS, VALID_SEEDS, embedded_task
from treegym.envs.errors import GameGenerationError
from treegym.harness import InProcessExecutor, Task, TaskResult
from treegym.harness.budget import Budget
from treegym.harness.evaluate import EvalReport, TaskOutcome, evaluate, outcome_of
from treegym.harness.tree import Node, Tree
from treegym.policies import ReActTemplate, ScriptedPolicy
from treegym.policies.protocol import GenerateResult, Policy
from treegym.policies.tokenizer import train_react_tokenizer


def _episode(index: int, won: bool, malformed: int, turns: int) -> Tree:
    tree = Tree("t", index, Node(id=0, parent=None, depth=0), ())
    node = tree.root
    for i in range(turns):
        node = tree.add_child(
            node, generated_ids=(1, 2), parse_error="no" if i < malformed else None
        )
    node.info, node.ended = {"won": won}, "terminated"
    return tree


def test_outcome_counts_wins_turns_and_malformed_turns_of_hand_built_episodes():
    trees = [_episode(0, True, 0, 3), _episode(1, False, 2, 4), _episode(2, True, 1, 1)]
    result = TaskResult(Task("t"), trees, {}, {}, Budget())
    got = outcome_of(result, "fam")
    assert (got.episodes, got.wins, got.turns, got.malformed_turns) == (3, 2, 8, 3)
    assert got.generated_tokens == 16 and got.mixed and got.win_rate == pytest.approx(2 / 3)


def test_report_summary_by_hand():
    report = EvalReport([
        TaskOutcome("a", "x", 4, 4, 10, 0, 0), TaskOutcome("b", "x", 4, 2, 10, 1, 0),
        TaskOutcome("c", "y", 4, 0, 20, 1, 0), TaskOutcome("d", "y", 4, 1, 10, 0, 0),
    ])  # fmt: skip
    s = report.summary()
    assert s["success_rate"] == 7 / 16 and s["mixed_task_share"] == 0.5
    assert s["malformed_turn_rate"] == 2 / 50 and s["mean_turns"] == round(50 / 16, 2)
    assert s["win_rate_quartiles"] == [0.0, 0.0, 0.25, 0.5, 1.0]
    fam = report.by_family()
    assert fam["x"]["success_rate"] == 0.75 and fam["y"]["mixed_task_share"] == 0.5


class _Babbler(Policy):
    """Answers every turn without an ``Action:`` line."""

    def __init__(self, template: ReActTemplate) -> None:
        self.template = template

    async def generate(self, requests):
        ids = tuple(self.template.encode("Thought: hmm<|end|>"))
        return [GenerateResult(ids, (0.0,) * len(ids), "stop", len(r.input_ids), 0, 0.0)
                for r in requests]  # fmt: skip


def test_evaluate_plays_groups_on_a_real_env():
    template = ReActTemplate(train_react_tokenizer(toy_texts(), vocab_size=400))
    tasks = [(Task(f"toy-{i}", {"task": i}, seed=i), "toy") for i in range(3)]

    def run(policy):
        ex = InProcessExecutor("treegym/ToyRooms-v0", {"max_episode_steps": 12})
        return asyncio.run(evaluate(policy, template, ex, tasks, episodes=3))

    expert = run(ScriptedPolicy(template, "expert", epsilon=0.0))
    assert [o.task_id for o in expert.outcomes] == ["toy-0", "toy-1", "toy-2"]
    assert all(o.wins == o.episodes == 3 and o.malformed_turns == 0 for o in expert.outcomes)
    babble = run(_Babbler(template)).summary()
    assert babble["success_rate"] == 0 and babble["malformed_turn_rate"] == 1.0
    assert babble["mean_turns"] == 12


def test_embedded_mix_is_deterministic_and_covers_every_family():
    assert embedded_task("textworld", 5) == embedded_task("textworld", 5)
    assert not set(TRAIN_SEEDS) & set(EVAL_SEEDS) and not set(EVAL_SEEDS) & set(VALID_SEEDS)
    tw = {embedded_task("textworld", s).family for s in EVAL_SEEDS[:6]}
    assert tw == {"tw-cooking", "tw-coin_collector", "tw-treasure_hunter"}
    alf = [embedded_task("alfworld", s) for s in EVAL_SEEDS[:6]]
    assert len({t.family for t in alf}) == 6
    assert all("split=eval_in_distribution" in t.spec for t in alf)
    assert "split=train" in embedded_task("alfworld", 3).spec
    with pytest.raises(ValueError, match="no embedded task mix for env 'toy'"):
        embedded_task("toy", 0)


def test_a_seed_the_generator_refuses_moves_to_the_next_generator_seed(monkeypatch, tmp_path):
    tried = []

    def make_game(spec):
        tried.append(spec)
        if len(tried) < 3:
            raise GameGenerationError("Try using a different value for the `--seed` argument.")
        return tmp_path / "game.z8"

    import treegym.envs.textworld_games as games

    monkeypatch.setattr(games, "make_game", make_game)
    task, path = embedded_mix.made_embedded_task("textworld", 7)
    assert tried[0].endswith(",seed=7") and tried[2].endswith(",seed=200007")
    assert task.spec == tried[2] and task.seed == 7 and path == tmp_path / "game.z8"

    def broken(spec):
        raise GameGenerationError("unknown generator")

    monkeypatch.setattr(games, "make_game", broken)
    with pytest.raises(GameGenerationError, match="unknown generator"):
        embedded_mix.made_embedded_task("textworld", 7)
