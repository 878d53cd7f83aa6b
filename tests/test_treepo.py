"""TreePO: divergence arithmetic, early stop, fallback, segments inside turns, the segment-level
advantage, and an end-to-end run through the runner, exported and loaded back."""

from __future__ import annotations

import asyncio
import math
import random

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.harness import (
    ESTIMATORS,
    SAMPLERS,
    InProcessExecutor,
    Runner,
    RunWriter,
    Task,
    TreePOSampler,
    load_run,
    whiten_batch,
)
from treegym.harness.advantages import subgroup_advantages
from treegym.harness.tree import Node, Tree, open_turn
from treegym.harness.treepo import (
    divergence_total,
    fixed_divergence,
    has_repetition,
    logprob_divergence,
    whiten,
)
from treegym.policies import HFPolicy, ReActTemplate, ScriptedPolicy
from treegym.policies.protocol import GenerateResult, Policy, SamplingParams
from treegym.policies.react import ASSISTANT, parse_action

TOY = "treegym/ToyRooms-v0"


# ---------------------------------------------------------------- arithmetic
def test_fixed_divergence_on_hand_made_frontiers():
    # 16 wanted, 10 finished (1 of them this step), 3 active: remaining 6 = min(6, 2·1 + 2·3)
    total = divergence_total(active=3, finished=10, finished_this_step=1, max_width=16, div=2)
    assert total == 6 and fixed_divergence(3, total) == [2, 2, 2]
    # remaining 4 over 3 paths: even split, the remainder to the last path (as the reference)
    total = divergence_total(active=3, finished=12, finished_this_step=0, max_width=16, div=2)
    assert total == 4 and fixed_divergence(3, total) == [1, 1, 2]
    # nothing remains: every active path still gets one branch
    total = divergence_total(active=3, finished=16, finished_this_step=2, max_width=16, div=2)
    assert total == 3 and fixed_divergence(3, total) == [1, 1, 1]
    # the budget of paths that finished this step moves to the active ones
    total = divergence_total(active=2, finished=2, finished_this_step=2, max_width=16, div=2)
    assert total == 8 and fixed_divergence(2, total) == [4, 4]


def test_logprob_weighted_divergence_on_hand_made_frontiers():
    # weights softmax(−(L − min L)) = softmax([−2, 0]) ≈ [0.119, 0.881]; rest 3 → raw [0.36, 2.64]
    assert logprob_divergence([-1.0, -3.0], 5) == [1, 4]
    # equal paths split evenly; every path gets at least one
    assert logprob_divergence([-2.0, -2.0, -2.0, -2.0], 8) == [2, 2, 2, 2]
    assert logprob_divergence([0.0, -50.0, -100.0], 3) == [1, 1, 1]
    # a high temperature flattens the weights
    assert logprob_divergence([-1.0, -3.0], 6, temperature=1e6) == [3, 3]
    with pytest.raises(ValueError, match="less than the 3 active"):
        logprob_divergence([0.0, 0.0, 0.0], 2)


def test_repetition_rule():
    assert has_repetition("abcd" * 40)  # every 32-char window repeats
    assert not has_repetition("".join(chr(65 + i % 58) for i in range(400)) + "x" * 31)
    chunk = "".join(chr(97 + (i * 7) % 26) for i in range(32))
    assert not has_repetition(" | ".join([chunk] * 7))
    assert has_repetition(" | ".join([chunk] * 8))


def test_bad_input_is_refused():
    for kw, message in (({"segment_len": 0}, "segment_len"), ({"segment_len": -3}, "segment_len"),
                        ({"div": 0}, "div"), ({"max_width": 0}, "max_width"),
                        ({"divergence": "greedy"}, "divergence"),
                        ({"temperature": 0.0}, "temperature")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            TreePOSampler(**kw)
    assert SAMPLERS["treepo"] is TreePOSampler and "treepo" in ESTIMATORS


# ---------------------------------------------------------------- advantage
def _leaf(tree: Tree, parent: Node, reward: float = 0.0) -> Node:
    return tree.add_child(parent, generated_ids=(1,), logprobs=(-0.5,), reward=reward,
                          ended="terminated")  # fmt: skip


def test_segment_level_advantage_on_a_hand_built_tree():
    tree = Tree("t", 0, Node(0, None, 0), (5,))
    a = tree.add_child(tree.root, generated_ids=(1, 2), logprobs=(0.0, 0.0), partial=True)
    a1, a2 = _leaf(tree, a, 1.0), _leaf(tree, a, 0.0)
    b = _leaf(tree, tree.root, 1.0)
    adv = ESTIMATORS["treepo"]([tree])
    # d=0: mean 2/3 over the task; d=1: {a1, a2} mean 1/2 (b's group is itself: unused)
    assert adv.per_leaf[(0, a1.id)] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert adv.per_leaf[(0, a2.id)] == pytest.approx((-2 / 3 - 1 / 2) / 2)
    assert adv.per_leaf[(0, b.id)] == pytest.approx(1 / 3)
    sized = subgroup_advantages([tree], weighting="group_size")
    assert sized[(0, a1.id)] == pytest.approx((1 / 3 * 3 + 1 / 2 * 2) / 5)
    # a lone leaf keeps its reward at d=0 (mean 0 for a group of one, as the reference)
    lone = Tree("u", 0, Node(0, None, 0), (5,))
    only = _leaf(lone, lone.root, 0.7)
    assert ESTIMATORS["treepo"]([lone]).per_leaf[(0, only.id)] == pytest.approx(0.7)
    assert whiten([1.0, 2.0, 3.0]) == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)


# ---------------------------------------------------------------- policies for runs
class Continuing(Policy):
    """Scripted play that continues a partial turn: each request completes the ids already
    generated since the last ``<|assistant|>`` with one admissible action's full text (chosen
    by the request's seed among those that extend them)."""

    def __init__(self, template: ReActTemplate) -> None:
        self.template = template
        self.assistant = template.tokenizer.convert_tokens_to_ids(ASSISTANT)
        self.requests = 0

    async def generate(self, requests):
        out = []
        for req in requests:
            self.requests += 1
            ids = list(req.input_ids)
            done = ids[len(ids) - ids[::-1].index(self.assistant) :]
            cands = [self.template.encode(self.template.assistant_text("let me try", c))
                     for c in req.hints["admissible_commands"]]  # fmt: skip
            cands = [c for c in cands if c[: len(done)] == done]
            assert cands, "a continuation must extend the turn's ids"
            full = random.Random(req.sampling.seed).choice(cands)
            new = full[len(done) :][: req.sampling.max_new_tokens]
            reason = "stop" if new[-1] == self.template.end_id else "length"
            lps = (math.log(1 / len(cands)),) + (0.0,) * (len(new) - 1)
            out.append(GenerateResult(tuple(new), lps, reason, len(ids), 0, 0.0))
        return out


class Repeater(Policy):
    """Never finishes its turn: the same words over and over."""

    def __init__(self, template: ReActTemplate) -> None:
        self.ids = template.encode("Thought: I go round and round and round " * 20)

    async def generate(self, requests):
        return [GenerateResult(tuple(self.ids[: r.sampling.max_new_tokens]),
                               (-0.1,) * min(len(self.ids), r.sampling.max_new_tokens),
                               "length", len(r.input_ids), 0, 0.0) for r in requests]  # fmt: skip


class CountingExecutor(InProcessExecutor):
    steps = 0

    async def step(self, state, action):
        self.steps += 1
        return await super().step(state, action)


@pytest.fixture
def template(tiny_model):  # noqa: F811
    return ReActTemplate(AutoTokenizer.from_pretrained(tiny_model))


def _run(policy, template, sampler, *, max_steps=6, max_new=64, tasks=2, path=None):
    async def go():
        ex = CountingExecutor(TOY, {"max_episode_steps": max_steps})
        runner = Runner(policy=policy, template=template, executor=ex, sampler=sampler,
                        sampling=SamplingParams(max_new_tokens=max_new, temperature=1.0),
                        context_length=2048)  # fmt: skip
        todo = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(tasks)]
        try:
            if path is None:
                results = [r async for r in runner.run(todo)]
            else:
                with RunWriter.for_runner(path, runner, config={"env": TOY}) as w:
                    results = []
                    async for r in runner.run(todo):
                        w.write(r)
                        results.append(r)
        finally:
            await ex.close()
        return sorted(results, key=lambda r: r.task.task_id), ex.steps

    return asyncio.run(go())


def _check_paths(tree: Tree, template: ReActTemplate) -> None:
    """Invariants: ids along a path are the exact sequence; partial nodes hold only generated
    ids and no env step; each finished turn's action parses from the whole turn."""
    for node in tree.nodes[1:]:
        if node.partial:
            assert not node.closing_ids and not node.observation_ids
            assert node.stats.env_steps == 0 and node.state is None and node.action == ""
        elif node.ended != "failed":
            _, ids, _ = open_turn(node.parent)
            text = template.decode(ids + node.generated_ids)
            assert parse_action(text) == (node.action, node.parse_error)
            assert node.stats.env_steps == 1
    for leaf in tree.leaves():
        seq = list(tree.prompt_ids)
        for n in tree.path(leaf):
            seq += list(n.generated_ids) + list(n.closing_ids) + list(n.observation_ids)
        assert seq == tree.input_ids(leaf)


# ---------------------------------------------------------------- runs
def test_segment_boundaries_inside_a_turn_do_not_step_the_env(template):
    policy = Continuing(template)
    # a turn is ~15 ids: 4-token segments put most boundaries inside turns
    sampler = TreePOSampler(segment_len=4, max_depth=40, max_width=6, div=2)
    results, env_steps = _run(policy, template, sampler)
    partial = turns = 0
    for res in results:
        assert res.error is None
        tree = res.trees[0]
        _check_paths(tree, template)
        partial += sum(n.partial for n in tree.nodes)
        turns += sum(1 for n in tree.nodes[1:] if not n.partial)
        finished = [leaf for leaf in tree.leaves() if leaf.ended]
        assert len(finished) >= sampler.max_width
        # siblings under a partial node continue the same generation from the same env state
        for node in tree.nodes:
            if node.partial and len(node.children) > 1:
                starts = {open_turn(c.parent)[0].id for c in node.children}
                assert len(starts) == 1
    assert partial > turns > 0
    assert env_steps == turns  # one env step per finished turn, none per inner boundary


def _whole_turns(tree: Tree, template: ReActTemplate):
    """``(start node, text, logprobs)`` of every finished turn: its partial segments and its
    last one, read together."""
    for node in tree.nodes[1:]:
        if not node.partial and node.ended != "failed":
            start, ids, lps = open_turn(node.parent)
            yield start, template.decode(ids + node.generated_ids), lps + node.logprobs


def test_scripted_policy_continues_turns_cut_by_short_segments(template):
    # 4-token segments cut every turn (~15 ids): each continuation must finish the turn it
    # continues, so the noiseless expert wins every leaf, and no turn restarts its text.
    policy = ScriptedPolicy(template, "expert", epsilon=0.0, seed=0)
    sampler = TreePOSampler(segment_len=4, max_depth=80, max_width=4, div=2)
    results, _ = _run(policy, template, sampler, max_steps=10)
    for res in results:
        assert res.error is None
        tree = res.trees[0]
        _check_paths(tree, template)
        assert any(n.partial for n in tree.nodes)
        leaves = tree.leaves()
        assert len(leaves) >= sampler.max_width
        assert all(leaf.ended == "terminated" and leaf.info["won"] for leaf in leaves)
        for _, text, _ in _whole_turns(tree, template):
            assert text.count("Thought:") == 1 and text.endswith("<|end|>"), text


def test_scripted_segment_logprobs_add_up_to_the_turns_probability(template):
    # Each segment carries log P(segment | the turn so far): summed over a turn's segments,
    # the probability the scripted policy gives the turn's action.
    policy = ScriptedPolicy(template, "expert", epsilon=0.5, seed=0)
    sampler = TreePOSampler(segment_len=3, max_depth=80, max_width=6, div=2)
    results, _ = _run(policy, template, sampler)
    turns = 0
    for res in results:
        for start, text, lps in _whole_turns(res.trees[0], template):
            action, _ = parse_action(text)
            assert math.isclose(sum(lps), math.log(policy.probability(start.info, action)))
            turns += 1
    assert turns > 0


def test_boundaries_at_turn_ends_fork_the_env(template):
    # segments longer than any turn: every node is a whole turn and each child steps the env
    sampler = TreePOSampler(segment_len=64, max_depth=4, max_width=4, div=2)
    results, env_steps = _run(Continuing(template), template, sampler)
    nodes = [n for r in results for n in r.trees[0].nodes[1:]]
    assert not any(n.partial for n in nodes) and env_steps == len(nodes)
    assert all(n.ended in (None, "terminated", "truncated", "max_depth") for n in nodes)


def test_early_stop_on_a_repetitive_generation(template):
    sampler = TreePOSampler(segment_len=8, max_depth=50, max_width=4, div=2, fallback=False)
    results, env_steps = _run(Repeater(template), template, sampler, max_new=400)
    for res in results:
        leaves = res.trees[0].leaves()
        assert leaves and all(leaf.ended == "repetition" for leaf in leaves)
        assert all(leaf.partial and leaf.depth < 50 for leaf in leaves)
    assert env_steps == 0  # the turn never finished


def test_repetition_scope_turn_spares_formulaic_multi_turn_play(template):
    # "<|end|>Thought: let me try\nAction: " recurs in every turn of a healthy trajectory
    kw = {"segment_len": 64, "max_depth": 30, "max_width": 2, "div": 1, "fallback": False}
    by_turn, _ = _run(Continuing(template), template, TreePOSampler(**kw), max_steps=14)
    whole, _ = _run(Continuing(template), template,
                    TreePOSampler(**kw, repetition_scope="trajectory"), max_steps=14)  # fmt: skip
    assert not any(leaf.ended == "repetition" for r in by_turn for leaf in r.trees[0].leaves())
    stopped = [leaf for r in whole for leaf in r.trees[0].leaves() if leaf.ended == "repetition"]
    assert stopped and all(leaf.depth >= 8 for leaf in stopped)
    with pytest.raises(ValueError, match="repetition_scope"):
        TreePOSampler(repetition_scope="segment")


def test_max_depth_and_max_length_stop_paths(template):
    sampler = TreePOSampler(segment_len=4, max_depth=3, max_width=4, div=2, fallback=False)
    results, _ = _run(Continuing(template), template, sampler, tasks=1)
    assert {leaf.ended for leaf in results[0].trees[0].leaves()} == {"max_depth"}
    sampler = TreePOSampler(segment_len=4, max_depth=40, max_width=4, max_length=10,
                            fallback=False)  # fmt: skip
    results, _ = _run(Continuing(template), template, sampler, tasks=1)
    tree = results[0].trees[0]
    for leaf in tree.leaves():
        assert leaf.ended == "max_length"
        assert sum(len(n.generated_ids) for n in tree.path(leaf)) == 10


def test_fallback_fires_when_all_paths_die(template):
    # every episode ends after one turn: step 1's two paths both die, so only fallback (from
    # the prompt: a one-segment path has no earlier boundary) reaches max_width, in one round
    # that branches div=2 ways from each of the two finished trajectories
    sampler = TreePOSampler(segment_len=64, max_depth=10, max_width=6, div=2)
    results, _ = _run(Continuing(template), template, sampler, max_steps=1, tasks=1)
    tree = results[0].trees[0]
    assert tree.root.info["treepo"]["fallbacks"] == 1
    assert len(tree.root.children) == 6
    assert len(tree.leaves()) == 6 and all(leaf.ended == "truncated" for leaf in tree.leaves())
    # with segments inside turns (div=1: one path at a time), fallback cuts back to inner
    # boundaries too: the new branch continues the cut turn's partial generation
    sampler = TreePOSampler(segment_len=4, max_depth=40, max_width=5, div=1)
    results, _ = _run(Continuing(template), template, sampler, max_steps=1, tasks=1)
    tree = results[0].trees[0]
    assert tree.root.info["treepo"]["fallbacks"] >= 2
    assert len(tree.leaves()) >= 5 and all(leaf.ended == "truncated" for leaf in tree.leaves())
    assert any(n.partial and len(n.children) > 1 for n in tree.nodes)
    _check_paths(tree, template)
    without = TreePOSampler(segment_len=64, max_depth=10, max_width=6, div=2, fallback=False)
    results, _ = _run(Continuing(template), template, without, max_steps=1, tasks=1)
    assert len(results[0].trees[0].leaves()) == 2


def test_end_to_end_with_a_model_exports_and_loads_aligned(tiny_model, template, tmp_path):  # noqa: F811
    policy = HFPolicy(tiny_model)
    sampler = TreePOSampler(segment_len=8, max_depth=6, max_width=4, div=2,
                            divergence="logprob_weighted")  # fmt: skip
    results, env_steps = _run(policy, template, sampler, max_new=12, path=tmp_path / "run")
    assert all(r.error is None for r in results)
    assert env_steps == sum(1 for r in results for n in r.trees[0].nodes[1:]
                            if not n.partial and n.ended != "failed")  # fmt: skip
    assert any(n.partial for r in results for n in r.trees[0].nodes)
    assert set(results[0].advantages) == {"treepo", "grpo", "node_value"}
    run = load_run(tmp_path / "run")
    rows = {r.sample_id: r for r in run.samples.itertuples()}
    assert len(rows) == sum(len(v) for r in results for v in r.training.values())
    checked = 0
    for res in results:
        tree = res.trees[0]
        _check_paths(tree, template)
        for leaf in res.training[0]:
            row = rows[f"{tree.task_id}/0/{leaf.id}"]
            assert row.adv_treepo == pytest.approx(res.advantages["treepo"].per_leaf[(0, leaf.id)])
            seq = tree.input_ids(leaf)
            assert list(row.prompt_ids) + list(row.response_ids) == seq
            path = tree.path(leaf)
            assert list(row.node_path) == [n.id for n in path]
            assert row.num_turns == len(tree.actions(leaf)) == sum(not n.partial for n in path)
            mask, lps = np.asarray(row.loss_mask), np.asarray(row.logprobs)
            assert mask.sum() == sum(len(n.generated_ids) for n in tree.path(leaf))
            # the stored logprobs are the model's, token for token, across segment boundaries
            with torch.inference_mode():
                logits = policy.model(input_ids=torch.tensor([seq])).logits[0].float()
            logp = torch.log_softmax(logits[:-1], dim=-1)
            scored = logp.gather(-1, torch.tensor(seq[1:])[:, None]).squeeze(-1).numpy()
            at = np.nonzero(mask)[0] + len(row.prompt_ids) - 1
            assert np.allclose(scored[at], lps[mask == 1], atol=2e-3)
            assert not lps[mask == 0].any()
            checked += 1
    assert checked > 0
    # whitening over the batch: token-weighted mean 0
    whiten_batch(results)
    values, weights = [], []
    for res in results:
        tree = res.trees[0]
        for (_, leaf_id), value in res.advantages["treepo"].per_leaf.items():
            values.append(value)
            weights.append(sum(len(n.generated_ids) for n in tree.path(tree.nodes[leaf_id])))
    assert np.average(values, weights=weights) == pytest.approx(0.0, abs=1e-6)
