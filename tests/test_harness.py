"""The harness core: advantages on hand-built trees, sampler shapes, guards, failures, replay."""

from __future__ import annotations

import asyncio
import math

import pytest
from transformers import AutoTokenizer

import treegym
from tests import hand_run
from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.envs.toy import ToyRoomsEnv
from treegym.harness import (
    ChainSampler,
    InProcessExecutor,
    Node,
    PrefixDriftError,
    ProcessExecutor,
    Runner,
    Sampler,
    Task,
    Tree,
    TreeGRPOSampler,
    grpo,
    node_value,
    node_values,
    tree_grpo,
)
from treegym.policies import Policy, ReActTemplate, SamplingParams, ScriptedPolicy


# ---------------------------------------------------------------- hand-built trees
def _tree(index: int, spec: list[tuple[int, float]]) -> Tree:
    """``spec``: (parent position in creation order, reward) for each node after the root."""
    tree = Tree("t", index, Node(0, None, 0), (1, 2, 3))
    for parent, reward in spec:
        tree.add_child(
            tree.nodes[parent], reward=reward, generated_ids=(7,), action=f"a{len(tree.nodes)}"
        )
    return tree


def _group():
    # tree 0: root -> a1 -> a2 (R=1) ; a1 -> b2 (R=0)    tree 1: root -> c1 (R=1)
    return [_tree(0, [(0, 0.0), (1, 1.0), (1, 0.0)]), _tree(1, [(0, 1.0)])]


def test_grpo_hand_computed():
    adv = grpo(_group())
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 1]
    assert adv.estimator == "grpo"
    assert adv.per_leaf[(0, 2)] == pytest.approx((1 - 2 / 3) / (std + 1e-6))
    assert adv.per_leaf[(0, 3)] == pytest.approx((0 - 2 / 3) / (std + 1e-6))
    assert adv.per_leaf[(1, 1)] == pytest.approx((1 - 2 / 3) / (std + 1e-6))


def test_tree_grpo_hand_computed_inter_plus_intra():
    adv = tree_grpo(_group())
    inter = (1 - 2 / 3) / (math.sqrt(1 / 3) + 1e-6)
    intra = 0.5 / (math.sqrt(0.5) + 1e-6)
    assert adv.per_leaf[(0, 2)] == pytest.approx(inter + intra)
    assert adv.per_leaf[(0, 3)] == pytest.approx(-2 * inter - intra)
    assert adv.per_leaf[(1, 1)] == pytest.approx(inter + 1.0)  # a one-leaf tree: mean 0, std 1


def test_node_value_hand_computed():
    trees = _group()
    assert node_values(trees[0]) == {3: 0.0, 2: 1.0, 1: 0.5, 0: 0.5}
    adv = node_value(trees)
    assert adv.per_turn[(0, 2)] == [0.0, 0.5]
    assert adv.per_turn[(0, 3)] == [0.0, -0.5]
    assert adv.per_turn[(1, 1)] == [0.0]
    assert adv.per_leaf[(0, 3)] == -0.5


def test_group_of_one_and_selected_leaves():
    trees = _group()
    assert grpo(trees, {0: [trees[0].nodes[3]], 1: []}).per_leaf == {(0, 3): 0.0}
    only = {0: [], 1: [trees[1].nodes[1]]}
    assert grpo(trees, only).per_leaf == {(1, 1): 1.0}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TreeGRPOSampler(m=0), "M must be >= 1"),
        (lambda: TreeGRPOSampler(n=0), "N must be >= 1"),
        (lambda: TreeGRPOSampler(l=-1), "L must be >= 0"),
        (lambda: TreeGRPOSampler(n=2, l=1, k=4), "1 \\+ N·L = 3"),
        (lambda: ChainSampler(0), "group_size"),
    ],
)
def test_invalid_sampler_parameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_presets_match_the_reference_and_published_settings():
    assert TreeGRPOSampler.published().trajectories_per_task == 6
    ref = TreeGRPOSampler.reference()
    assert (ref.m, ref.n, ref.l, ref.k) == (4, 2, 1, 3)


# ---------------------------------------------------------------- running samplers
@pytest.fixture
def template(tiny_model):  # noqa: F811
    return ReActTemplate(AutoTokenizer.from_pretrained(tiny_model))


def _run(template, sampler, tasks, *, env_id="treegym/ToyRooms-v0", env_kwargs=None, policy=None,
         executor=None, **kw):  # fmt: skip
    policy = policy or ScriptedPolicy(template, "expert", epsilon=0.5, seed=3)

    async def go():
        ex = executor or InProcessExecutor(env_id, env_kwargs)
        runner = Runner(policy=policy, template=template, executor=ex, sampler=sampler, **kw)
        try:
            return sorted([r async for r in runner.run(tasks)], key=lambda r: r.task.task_id)
        finally:
            await ex.close()

    return asyncio.run(go())


TOY_TASKS = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(5)]


def test_chain_shape(template):
    results = _run(template, ChainSampler(3), TOY_TASKS)
    for res in results:
        assert res.error is None and len(res.trees) == 3
        assert all(len(t.leaves()) == 1 for t in res.trees)
        assert res.budget.leaves == 3 and set(res.advantages) == {"grpo", "node_value"}
        assert all(n.depth <= 30 for t in res.trees for n in t.nodes)  # ToyRooms' step limit
        # chains share nothing: the unique tokens are every trajectory's full sequence
        full = sum(len(t.input_ids(leaf)) for t in res.trees for leaf in t.leaves())
        assert res.budget.unique_tokens == full


def test_tree_grpo_shape_and_selection(template):
    sampler = TreeGRPOSampler(m=2, n=2, l=2, k=3)
    for res in _run(template, sampler, TOY_TASKS):
        assert res.error is None and len(res.trees) == 2
        for tree in res.trees:
            assert len(tree.leaves()) == 1 + 2 * 2
            assert len(res.training[tree.index]) == 3
            assert set(res.training[tree.index]) <= set(tree.leaves())
        assert set(res.advantages["tree_grpo"].per_leaf) == {
            (t.index, n.id) for t in res.trees for n in res.training[t.index]
        }
        assert res.budget.leaves == 6
        # branches share their trunk: fewer unique tokens than the leaves' sequences hold
        full = sum(len(t.input_ids(leaf)) for t in res.trees for leaf in t.leaves())
        assert res.budget.unique_tokens < full


def test_task_budget_of_hand_built_trees():
    """Counters against the numbers worked out by hand in tests/hand_run.py."""
    figures = hand_run.FIGURES
    a, b = (r.budget for r in hand_run.results())
    assert (a.unique_tokens, b.unique_tokens) == (hand_run.UNIQUE_TOKENS["a"],
                                                  hand_run.UNIQUE_TOKENS["b"])  # fmt: skip
    assert (a.generated_tokens, b.generated_tokens) == (8, 2)
    assert (a.leaves, a.distinct_leaves, b.leaves, b.distinct_leaves) == (2, 2, 2, 1)
    assert (a.zero_variance_groups, b.zero_variance_groups, a.groups + b.groups) == (0, 1, 2)
    assert a.prompt_tokens + b.prompt_tokens == figures["prompt tokens"]
    assert (a.cached_tokens, b.cached_tokens) == (21, 4)
    assert (a.resets, b.resets, a.env_steps + b.env_steps, a.failed_branches) == (1, 2, 6, 0)


def test_token_budget_is_never_exceeded(template):
    budget = 400
    results = _run(template, TreeGRPOSampler(m=3, n=2, l=2, k=None), TOY_TASKS, token_budget=budget)
    for res in results:
        assert res.budget.generated_tokens <= budget
    stopped = [n for r in results for t in r.trees for n in t.nodes if n.ended == "budget"]
    assert stopped, "the budget was large enough to never bind: test proves nothing"


def test_context_guard_stops_branches(template):
    results = _run(template, ChainSampler(2), TOY_TASKS[:2], context_length=400)
    ended = {n.ended for r in results for t in r.trees for n in t.leaves()}
    assert "context" in ended
    for r in results:
        for t in r.trees:
            assert all(len(t.input_ids(n)) <= 400 for n in t.nodes)


def test_an_observation_past_the_context_is_cut_and_ends_the_branch(template):
    """The guard lets a turn start when prompt + max_new_tokens fits; the env's answer may not
    fit after it. It is cut to the context, and the branch ends ``context``."""
    (free,) = _run(template, ChainSampler(1), TOY_TASKS[:1])
    tree = free.trees[0]
    first = tree.nodes[1]
    context = len(tree.prompt_ids) + 48  # exactly the guard's minimum for the first turn
    room = context - len(tree.prompt_ids) - len(first.generated_ids) - len(first.closing_ids)
    assert len(first.observation_ids) > room, "the observation fits: test proves nothing"
    (cut,) = _run(template, ChainSampler(1), TOY_TASKS[:1], context_length=context)
    node = cut.trees[0].nodes[1]
    assert node.generated_ids == first.generated_ids and node.reward == first.reward
    assert node.observation_ids == first.observation_ids[:room] and node.ended == "context"
    assert len(cut.trees[0].input_ids(node)) == context and len(cut.trees[0].nodes) == 2


class _OneSecondBatches(Policy):
    """Scripted, but every result reports its batch's latency as 1 s (as engines do)."""

    def __init__(self, template) -> None:
        self.inner = ScriptedPolicy(template, "expert", epsilon=0.5, seed=3)

    async def generate(self, requests):
        from dataclasses import replace

        return [replace(r, latency_s=1.0) for r in await self.inner.generate(requests)]

    def identity(self):
        return {"policy": "one-second-batches"}


class _FanOut(Sampler):
    """One tree: the root's 3 children in one request batch, then each rolled out."""

    name = "fan-out"
    trajectories_per_task = 3

    async def grow(self, ctx):
        tree = await ctx.new_tree()
        children = await ctx.expand(tree, tree.root, 3)
        await asyncio.gather(*(ctx.rollout(tree, c) for c in children if c.ended is None))


def test_a_batch_counts_its_policy_seconds_once(template):
    (res,) = _run(template, _FanOut(), TOY_TASKS[:1], policy=_OneSecondBatches(template))
    tree = res.trees[0]
    first_turns = tree.root.children
    assert len(first_turns) == 3
    assert math.isclose(sum(n.stats.policy_s for n in first_turns), 1.0)
    later = [n for n in tree.nodes[1:] if n not in first_turns]
    assert later and {n.stats.policy_s for n in later} == {1.0}  # one request per call
    assert res.budget.policy_s == pytest.approx(1.0 + len(later))


def test_every_node_equals_a_fresh_replay_of_its_path(template):
    results = _run(template, TreeGRPOSampler(m=2, n=3, l=2, k=None), TOY_TASKS[:3],
                   env_kwargs={"slip_prob": 0.4})  # fmt: skip
    fresh = ToyRoomsEnv(slip_prob=0.4)
    checked = 0
    for res in results:
        for tree in res.trees:
            for node in tree.nodes[1:]:
                fresh.reset(seed=res.task.seed, options=res.task.options)
                for earlier in tree.path(node)[:-1]:
                    fresh.step(earlier.action)
                obs, reward, _, _, info = fresh.step(node.action)
                assert (obs, reward, info) == (node.observation, node.reward, node.info)
                checked += 1
    assert checked > 50


def _canonical(results):
    return [
        (r.task.task_id, t.index, t.actions(leaf), t.returns(leaf))
        for r in results for t in r.trees for leaf in sorted(t.leaves(), key=t.actions)
    ]  # fmt: skip


def test_seeded_runs_are_reproducible_across_executors(template):
    sampler = TreeGRPOSampler(m=2, n=2, l=1, k=3)
    a = _run(template, sampler, TOY_TASKS[:3], concurrency=3)
    b = _run(template, sampler, TOY_TASKS[:3], concurrency=1)
    c = _run(template, sampler, TOY_TASKS[:3],
             executor=ProcessExecutor("treegym/ToyRooms-v0", n_workers=2))  # fmt: skip
    assert _canonical(a) == _canonical(b) == _canonical(c)
    # Node ids follow completion order; compare advantages keyed by each leaf's action path.
    assert _by_path(a) == _by_path(b) == _by_path(c)


def _by_path(results):
    out = {}
    for r in results:
        trees = {t.index: t for t in r.trees}
        for (index, node_id), adv in r.advantages["tree_grpo"].per_leaf.items():
            tree = trees[index]
            out[(r.task.task_id, index, tree.actions(tree.nodes[node_id]))] = adv
    return out


class Redecoding(ReActTemplate):
    """A transcript that decodes the turn and encodes it again: the drift treegym guards."""

    def next_prompt(self, parent_ids, generated_ids, closing_ids, observation_ids):
        text = self.decode([*generated_ids, *closing_ids, *observation_ids])
        return [*parent_ids, *self.encode(" " + text)]


def test_exact_prefix_guard_fires_on_a_drifting_transcript(template):
    broken = Redecoding(template.tokenizer)
    results = _run(broken, ChainSampler(1), TOY_TASKS[:1], policy=ScriptedPolicy(broken, "random"))
    assert results[0].error is not None and PrefixDriftError.__name__ in results[0].error
    assert "first difference at token" in results[0].error


class PitRaises(ToyRoomsEnv):
    """An env bug: jumping into the pit raises instead of ending the game."""

    def _step(self, action):
        if action == "jump into pit":
            raise RuntimeError("pit physics exploded")
        return super()._step(action)


def test_env_error_fails_only_its_branch(template):
    treegym.register("tests/PitRaises-v0", "tests.test_harness:PitRaises")
    tasks = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(12)]
    results = _run(template, ChainSampler(4), tasks, env_id="tests/PitRaises-v0",
                   policy=ScriptedPolicy(template, "random", seed=1))  # fmt: skip
    failed = [n for r in results for t in r.trees for n in t.nodes if n.ended == "failed"]
    assert failed and all("pit physics exploded" in n.error for n in failed)
    assert all(r.error is None for r in results)
    ok_leaves = [n for r in results for t in r.trees for n in t.leaves() if n.ended != "failed"]
    assert ok_leaves
    assert sum(r.budget.failed_branches for r in results) == len(failed)
    training = {id(n) for r in results for leaves in r.training.values() for n in leaves}
    assert not training & {id(n) for n in failed}  # failed branches never reach training


class Silent(Policy):
    async def generate(self, requests):
        return []


def test_policy_returning_nothing_is_a_recorded_failure(template):
    results = _run(template, ChainSampler(2), TOY_TASKS[:1], policy=Silent())
    leaves = [n for t in results[0].trees for n in t.leaves()]
    assert len(leaves) == 2 and all(n.ended == "failed" for n in leaves)
    assert all("policy returned 0 results for 1 requests" in n.error for n in leaves)
    assert results[0].budget.leaves == 0 and results[0].advantages == {}


def test_task_that_cannot_reset_reports_its_error(template):
    results = _run(
        template, ChainSampler(2), [Task("bad", {"task": "castle"}, seed=0), TOY_TASKS[0]]
    )
    bad = next(r for r in results if r.task.task_id == "bad")
    assert bad.error is not None and "toy-<n>" in bad.error and bad.trees == []
    assert next(r for r in results if r.task.task_id == "toy-0").error is None


def test_runner_rejects_bad_settings(template):
    with pytest.raises(ValueError, match="token_budget"):
        executor = InProcessExecutor("treegym/ToyRooms-v0")
        Runner(policy=Silent(), template=template, executor=executor, sampler=ChainSampler(1),
               token_budget=0)  # fmt: skip


@pytest.mark.slow
def test_tree_grpo_on_textworld_games_in_worker_processes(template, games):
    tasks = [
        Task(name, {"task": games[name]}, seed=i)
        for i, name in enumerate(["cooking", "coin", "custom"])
    ]
    sampler = TreeGRPOSampler.published()
    executor = ProcessExecutor("treegym/TextWorld-v0", {"max_episode_steps": 12}, n_workers=2)
    policy = ScriptedPolicy(template, "expert", epsilon=0.3, seed=0)
    results = _run(template, sampler, tasks, env_id="treegym/TextWorld-v0", executor=executor,
                   policy=policy, concurrency=3)  # fmt: skip
    for res in results:
        assert res.error is None and len(res.trees) == 2
        assert all(len(t.leaves()) == 3 for t in res.trees)
        assert res.budget.leaves == 6 and res.budget.env_steps > 0
        assert res.budget.restores > 0  # branches restored the env in place inside the worker
    won = [t.returns(leaf) > 0 for r in results for t in r.trees for leaf in t.leaves()]
    assert any(won)
    # Spot-check forked nodes against a fresh replay of their action paths.
    from treegym.envs.textworld_env import TextWorldEnv

    res = results[0]
    fresh = TextWorldEnv(res.task.options["task"], max_episode_steps=12)
    for tree in res.trees:
        for node in tree.nodes[1:]:
            if node.parent.children[0] is node:
                continue  # first children follow the trunk; check the forks
            fresh.reset(seed=res.task.seed)
            for earlier in tree.path(node):
                obs, reward, *_ = fresh.step(earlier.action)
            assert (obs, reward) == (node.observation, node.reward)


@pytest.mark.slow
def test_both_samplers_on_alfworld_tasks(template, alfworld_tasks):
    names = sorted(alfworld_tasks)[:2]
    tasks = [Task(name, {"task": alfworld_tasks[name]}, seed=i) for i, name in enumerate(names)]
    policy = ScriptedPolicy(template, "expert", epsilon=0.3, seed=0)
    for sampler in (ChainSampler(2), TreeGRPOSampler(m=1, n=2, l=1, k=3)):
        executor = ProcessExecutor("treegym/ALFWorld-v0", {"max_episode_steps": 15}, n_workers=2)
        # The test tokenizer was trained on ToyRooms text: ALFWorld words take many tokens.
        results = _run(template, sampler, tasks, env_id="treegym/ALFWorld-v0", executor=executor,
                       policy=policy, context_length=32768,
                       sampling=SamplingParams(max_new_tokens=256))  # fmt: skip
        for res in results:
            assert res.error is None, res.error
            assert res.budget.leaves == sampler.trajectories_per_task
            ends = {n.ended for t in res.trees for n in t.leaves()}
            assert ends <= {"terminated", "truncated"}, ends
        assert any(t.returns(leaf) == 1.0 for r in results for t in r.trees for leaf in t.leaves())
