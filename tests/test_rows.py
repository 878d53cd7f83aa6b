"""Rows of a finished task (harness/rows.py): the gathered token columns equal what the tree
says token for token, for every sampler's tree shape (TreePO's partial segments included),
and a malformed task is refused naming it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from transformers import AutoTokenizer

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.harness import (
    ChainSampler,
    ExportError,
    InProcessExecutor,
    Runner,
    Task,
    TreeGRPOSampler,
    TreePOSampler,
)
from treegym.harness.rows import Turns, nodes_table, samples_table
from treegym.policies import ReActTemplate, SamplingParams, ScriptedPolicy

SAMPLERS = {
    "chain": lambda: ChainSampler(group_size=3),
    "tree_grpo": lambda: TreeGRPOSampler(m=2, n=2, l=1, k=3),
    "treepo": lambda: TreePOSampler(segment_len=4, max_width=4),
}


@pytest.fixture(scope="module")
def template(tiny_model):  # noqa: F811
    return ReActTemplate(AutoTokenizer.from_pretrained(tiny_model))


def _collect(template, sampler):
    async def go():
        ex = InProcessExecutor("treegym/ToyRooms-v0", {"slip_prob": 0.3, "max_episode_steps": 6})
        runner = Runner(policy=ScriptedPolicy(template, "expert", epsilon=0.5, seed=5),
                        template=template, executor=ex, sampler=sampler,
                        sampling=SamplingParams(max_new_tokens=24))  # fmt: skip
        try:
            tasks = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(3)]
            return runner, [r async for r in runner.run(tasks)]
        finally:
            await ex.close()

    return asyncio.run(go())


@pytest.fixture(scope="module", params=sorted(SAMPLERS))
def collected(request, template):
    return _collect(template, SAMPLERS[request.param]())


def _expected_sample(result, tree, leaf, estimators):
    """The sample row written out turn by turn from the tree (the definition)."""
    path = tree.path(leaf)
    mask, logprobs, tokens = [], [], {}
    for turn in path:
        tail = len(turn.turn_ids) - len(turn.generated_ids)
        mask += [1] * len(turn.generated_ids) + [0] * tail
        logprobs += [*turn.logprobs, *[0.0] * tail]
    for name in estimators:
        per_turn = result.advantages[name].per_turn.get((tree.index, leaf.id))
        if per_turn is not None:
            tokens[name] = []
            for value, turn in zip(per_turn, path, strict=True):
                g = len(turn.generated_ids)
                tokens[name] += [value] * g + [0.0] * (len(turn.turn_ids) - g)
    offsets = np.cumsum([0] + [len(t.turn_ids) for t in path])[:-1].tolist()
    return mask, np.float32(logprobs).tolist(), tokens, offsets


def test_samples_equal_the_tree_token_for_token(collected):
    runner, results = collected
    estimators = list(runner.sampler.estimators)
    token_level = [e for e in estimators if f"adv_{e}_tokens" in
                   samples_table(results[0], "r", estimators).column_names]  # fmt: skip
    checked = 0
    for result in results:
        table = samples_table(result, "r", estimators).to_pylist()
        leaves = [(t, leaf) for t in sorted(result.trees, key=lambda t: t.index)
                  for leaf in result.training.get(t.index, [])]  # fmt: skip
        assert len(table) == len(leaves)
        for row, (tree, leaf) in zip(table, leaves, strict=True):
            mask, logprobs, tokens, offsets = _expected_sample(result, tree, leaf, token_level)
            assert row["sample_id"] == f"{tree.task_id}/{tree.index}/{leaf.id}"
            assert row["prompt_ids"] == list(tree.prompt_ids)
            assert row["response_ids"] == tree.input_ids(leaf)[len(tree.prompt_ids) :]
            assert row["loss_mask"] == mask and row["logprobs"] == logprobs
            assert row["turn_offsets"] == offsets
            assert row["node_path"] == [n.id for n in tree.path(leaf)]
            assert row["num_turns"] == sum(not n.partial for n in tree.path(leaf))
            assert row["reward"] == tree.returns(leaf)
            for name in token_level:
                assert row[f"adv_{name}_tokens"] == pytest.approx(tokens[name], abs=1e-6)
            checked += 1
    assert checked


def test_nodes_equal_the_tree_field_for_field(collected):
    _, results = collected
    for result in results:
        rows = nodes_table(result, "r").to_pylist()
        nodes = [(t, n) for t in result.trees for n in t.nodes]
        assert len(rows) == len(nodes)
        for row, (tree, node) in zip(rows, nodes, strict=True):
            assert (row["tree_index"], row["node_id"]) == (tree.index, node.id)
            assert row["generated_ids"] == list(node.generated_ids)
            assert row["logprobs"] == list(node.logprobs)
            assert row["closing_ids"] == list(node.closing_ids)
            assert row["observation_ids"] == list(node.observation_ids)
            assert row["prompt_ids"] == (list(tree.prompt_ids) if node.parent is None else [])
            assert row["parent_id"] == (None if node.parent is None else node.parent.id)


def test_a_leaf_without_turn_values_has_a_null_token_column(template):
    runner, results = _collect(template, SAMPLERS["tree_grpo"]())
    result = results[0]
    tree = result.trees[0]
    leaf = result.training[tree.index][0]
    result.advantages["node_value"].per_turn.pop((tree.index, leaf.id))
    rows = samples_table(result, "r", list(runner.sampler.estimators)).to_pylist()
    nulls = [r["sample_id"] for r in rows if r["adv_node_value_tokens"] is None]
    assert nulls == [f"{tree.task_id}/{tree.index}/{leaf.id}"]


def test_malformed_tasks_are_refused_naming_the_node(template):
    runner, results = _collect(template, SAMPLERS["chain"]())
    result = results[0]
    node = result.trees[1].nodes[2]
    node.logprobs = node.logprobs[:-1]
    expected = rf"task 'toy-0' tree 1 node 2: {len(node.generated_ids)} generated ids but"
    with pytest.raises(ExportError, match=expected):
        Turns.of("toy-0", result.trees)
    node.logprobs = (*node.logprobs, 0.0)
    tree = result.trees[0]
    leaf = result.training[tree.index][0]
    adv = result.advantages["node_value"]
    adv.per_turn[(tree.index, leaf.id)] = [0.0]
    with pytest.raises(ExportError, match=rf"leaf {leaf.id}: estimator 'node_value' has 1 turn"):
        samples_table(result, "r", list(runner.sampler.estimators))


def test_the_treepo_case_has_turns_split_into_segments(template):
    _, results = _collect(template, SAMPLERS["treepo"]())
    assert any(n.partial for r in results for t in r.trees for n in t.nodes)
