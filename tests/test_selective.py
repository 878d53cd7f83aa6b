"""Selective Rollout gate: distance arithmetic, the gate on converged/divergent groups, export."""

from __future__ import annotations

import asyncio
import json

import pytest
from transformers import AutoTokenizer

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.harness import (
    SAMPLERS,
    ChainSampler,
    GatedSampler,
    InProcessExecutor,
    Runner,
    RunWriter,
    Task,
    TreeGRPOSampler,
    load_run,
)
from treegym.harness.selective import (
    END,
    INFO_KEY,
    decide,
    group_divergence,
    levenshtein,
    padded_prefix,
)
from treegym.policies import ReActTemplate, ScriptedPolicy
from treegym.report import summarize


# ---------------------------------------------------------------- arithmetic
def test_levenshtein_on_whole_action_symbols():
    assert levenshtein(["go north", "take key"], ["go north", "take key"]) == 0
    assert levenshtein(["a", "b", "c"], ["a", "c", END]) == 2
    assert levenshtein(["x", "y"], ["y", "x"]) == 2
    assert levenshtein([], ["a", "b"]) == 2
    # a whole action is one symbol: near-identical strings still differ by exactly 1
    assert levenshtein(["open door"], ["open doors"]) == 1


def test_group_divergence_hand_computed():
    a, b, c = ["n", "s", "e"], ["n", "e"], ["n", "s", "e"]
    assert padded_prefix(b, 3) == ["n", "e", END]
    # pairs: (a,b) = 2, (a,c) = 0, (b,c) = 2 -> mean 4/3, / K=3 -> 4/9
    assert group_divergence([a, b, c], 3) == pytest.approx(4 / 9)
    # only the first K actions count
    assert group_divergence([["n", "s", "x"], ["n", "s", "y"]], 2) == 0.0
    # fully different prefixes -> 1
    assert group_divergence([["a", "b"], ["c", "d"]], 2) == 1.0


def test_decide_threshold_and_or_rule():
    same = [["a", "b"]] * 4
    assert decide(same, [False] * 4, k=2, d_l=0.12).gated
    diff = [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]]
    passed = decide(diff, [True, True, True, True], k=2, d_l=0.12)
    assert not passed.gated and passed.d_k == 1.0 and passed.finished_fraction == 1.0
    either = decide(diff, [True] * 4, k=2, d_l=0.12, or_finished=True)
    assert either.gated and "finished fraction" in either.reason


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"d_l": 1.5}, "d_L must be in \\[0, 1\\]"),
        ({"d_l": -0.1}, "d_L must be in \\[0, 1\\]"),
        ({"d_l": float("nan")}, "d_L must be in \\[0, 1\\]"),
        ({"k": 0}, "K must be an integer >= 1"),
        ({"k": 31, "horizon": 30}, "larger than the horizon 30"),
        ({"inner": ChainSampler(1)}, "at least 2"),
        ({"finished_threshold": 0.0}, "finished_threshold"),
        ({"ended_before_k": "skip"}, "ended_before_k must be one of evaluate, pass"),
    ],
)
def test_bad_parameters(kw, message):
    with pytest.raises(ValueError, match=message):
        GatedSampler(**kw)


def test_presets_and_registry():
    g8, g16 = GatedSampler.g8(), GatedSampler.g16()
    assert (g8.group_size, g8.k, g8.d_l) == (8, 10, 0.12)
    assert (g16.group_size, g16.k, g16.d_l) == (16, 15, 0.09)
    assert SAMPLERS["selective"] is GatedSampler
    tg = GatedSampler.g8(TreeGRPOSampler(m=8, n=2, l=1, k=3))
    assert tg.estimators == ("tree_grpo", "grpo", "node_value") and tg.group_size == 8


# ---------------------------------------------------------------- running the gate
@pytest.fixture
def template(tiny_model):  # noqa: F811
    return ReActTemplate(AutoTokenizer.from_pretrained(tiny_model))


TASKS = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(3)]


def _run(template, sampler, policy, tasks=TASKS):
    async def go():
        ex = InProcessExecutor("treegym/ToyRooms-v0")
        runner = Runner(policy=policy, template=template, executor=ex, sampler=sampler)
        try:
            return runner, sorted([r async for r in runner.run(tasks)],
                                  key=lambda r: r.task.task_id)  # fmt: skip
        finally:
            await ex.close()

    return asyncio.run(go())


def test_gate_fires_on_a_converged_group(template):
    # A noiseless expert: every chain takes the same actions -> d_K = 0 -> gated after step 2.
    policy = ScriptedPolicy(template, "expert", epsilon=0.0, seed=1)
    _, results = _run(template, GatedSampler(ChainSampler(4), k=2, d_l=0.12), policy)
    for res in results:
        record = res.trees[0].root.info[INFO_KEY]
        assert record["gated"] and record["d_k"] == 0.0 and "d_K=0.0000 < d_L" in record["reason"]
        assert all(t.root.info[INFO_KEY] == record for t in res.trees)
        assert all(not leaves for leaves in res.training.values()) and res.advantages == {}
        for tree in res.trees:  # every chain stopped right after step K (ToyRooms needs more)
            (leaf,) = tree.leaves()
            assert leaf.depth == 2 and leaf.ended == "gated"
        assert res.budget.env_steps == 4 * 2


def test_gate_passes_a_divergent_group(template):
    policy = ScriptedPolicy(template, "random", seed=5)
    sampler = GatedSampler(TreeGRPOSampler(m=4, n=2, l=1, k=3), k=3, d_l=0.12)
    _, results = _run(template, sampler, policy)
    for res in results:
        record = res.trees[0].root.info[INFO_KEY]
        assert not record["gated"] and record["d_k"] >= 0.12
        assert sum(map(len, res.training.values())) == 12  # M·K training leaves, as ungated
        assert set(res.advantages) == {"tree_grpo", "grpo", "node_value"}
        assert all(leaf.ended != "gated" for t in res.trees for leaf in t.leaves())


def test_gated_groups_never_reach_samples_parquet(template, tmp_path):
    # A mixed run: a converged group (noiseless expert) and divergent ones (random policy),
    # same policy object per run, so collect two runs' results into one folder.
    sampler = GatedSampler(ChainSampler(4), k=2, d_l=0.12)
    expert = ScriptedPolicy(template, "expert", epsilon=0.0, seed=1)
    _, gated = _run(template, sampler, expert, TASKS[:1])
    _, passed = _run(template, sampler, ScriptedPolicy(template, "random", seed=5), TASKS[1:])
    with RunWriter(tmp_path / "run", sampler=sampler, tokenizer=template.tokenizer) as w:
        w.write_all(gated + passed)
    run = load_run(tmp_path / "run")
    samples, nodes = run.samples, run.nodes
    assert "toy-0" not in set(samples.task_id)
    assert set(samples.task_id) == {"toy-1", "toy-2"} and len(samples) == 8
    roots = nodes[nodes.parent_id.isna()]
    marks = {r.task_id: json.loads(r.info)[INFO_KEY] for r in roots.itertuples()}
    assert marks["toy-0"]["gated"] and "d_L" in marks["toy-0"]["reason"]
    assert not marks["toy-1"]["gated"] and not marks["toy-2"]["gated"]
    gated_nodes = nodes[nodes.task_id == "toy-0"]
    assert len(gated_nodes) == 4 * 3 and not gated_nodes.training.any()  # kept, not trained
    assert (gated_nodes[gated_nodes.depth == 2].ended == "gated").all()


# ---------------------------------------------------------------- groups that end before K
def _expert(template):
    return ScriptedPolicy(template, "expert", epsilon=0.0, seed=1)  # ToyRooms: won in 4-6 steps


def test_groups_whose_chains_all_end_before_k_are_evaluated_by_default(template):
    # 17_grpo_static.py's gate_fires: the rule is applied to the END-padded prefixes.
    sampler = GatedSampler(ChainSampler(4), k=30, d_l=0.12)
    assert sampler.ended_before_k == "evaluate"
    _, results = _run(template, sampler, _expert(template))
    for res in results:
        record = res.trees[0].root.info[INFO_KEY]
        assert record["gated"] and record["d_k"] == 0.0 and record["finished_fraction"] == 1.0
        # the gate stopped nothing that was running: no leaf ends "gated"
        assert {leaf.ended for t in res.trees for leaf in t.leaves()} == {"terminated"}
        assert not any(res.training.values())


def test_ended_before_k_pass_keeps_such_groups_like_the_training_scripts(template):
    # 11_grpo_train.py never reaches step K then; 19_grpo_onpolicy.py skips the gate too.
    sampler = GatedSampler(ChainSampler(4), k=30, d_l=0.12, ended_before_k="pass")
    _, results = _run(template, sampler, _expert(template))
    for res in results:
        record = res.trees[0].root.info[INFO_KEY]
        assert not record["gated"] and "every chain ended before step K=30" in record["reason"]
        assert record["d_k"] == 0.0  # still recorded, for auditing
        assert sum(map(len, res.training.values())) == 4
    # a group that does reach step K is gated as usual
    reached = GatedSampler(ChainSampler(4), k=2, d_l=0.12, ended_before_k="pass")
    _, results = _run(template, reached, _expert(template))
    assert all(res.trees[0].root.info[INFO_KEY]["gated"] for res in results)


def test_summary_counts_gated_groups_from_the_roots_decisions(template, tmp_path):
    # Every chain ended before K, so the gate's decision left no leaf ended "gated".
    sampler = GatedSampler(ChainSampler(4), k=30, d_l=0.12)
    _, gated = _run(template, sampler, _expert(template), TASKS[:2])
    _, passed = _run(template, sampler, ScriptedPolicy(template, "random", seed=5), TASKS[2:])
    with RunWriter(tmp_path / "run", sampler=sampler, tokenizer=template.tokenizer) as w:
        w.write_all(gated + passed)
    assert summarize(load_run(tmp_path / "run")).figures["gated groups"] == 2
