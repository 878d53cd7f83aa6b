"""TRACE: stage-1/stage-2 allocation arithmetic, the default predictor, runs, bad input."""

from __future__ import annotations

import asyncio
import math
import random

import pytest
from transformers import AutoTokenizer

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.harness import (
    SAMPLERS,
    InProcessExecutor,
    LogisticPredictor,
    PredictorError,
    Runner,
    RunWriter,
    Task,
    TraceSampler,
    load_run,
)
from treegym.harness.trace import (
    allocate_prefixes,
    allocate_roots,
    backups,
    checked,
    continuation_value,
    p_mixed,
)
from treegym.harness.tree import Node, Tree
from treegym.policies import ReActTemplate, ScriptedPolicy


class Fixed:
    """A synthetic predictor: a function of the features; ignores updates."""

    def __init__(self, fn):
        self.fn, self.updates = fn, 0

    def predict(self, features):
        return self.fn(features)

    def update(self, features, outcome, weight=1.0):
        self.updates += 1

    def __repr__(self):
        return "Fixed"


# ---------------------------------------------------------------- arithmetic
def test_p_mixed_and_continuation_value_hand_computed():
    assert p_mixed(0.5, 2) == pytest.approx(0.5)
    assert p_mixed(0.2, 3) == pytest.approx(1 - 0.008 - 0.512)
    assert p_mixed(0.0, 5) == 0.0 and p_mixed(1.0, 5) == 0.0
    # a success (r=1) from a prefix predicted at 0.3: each continuation fails w.p. 0.7
    assert continuation_value(1.0, 0.3, 2) == pytest.approx(1 - 0.3**2)
    assert continuation_value(0.0, 0.3, 2) == pytest.approx(1 - 0.7**2)


def test_stage1_budget_goes_to_uncertain_tasks():
    v = [0.0, 0.02, 0.5, 0.98, 1.0, 0.45]
    m = allocate_roots(v, 24, m_min=1)
    assert sum(m) == 24
    assert m[0] == 1 and m[4] == 1  # certain tasks: no gain beyond the minimum
    assert m[2] > m[1] and m[2] > m[3] and m[5] > m[1] and m[5] > m[3]
    # greedy is optimal for these concave gains: compare with brute force on a small case
    v3, budget = [0.1, 0.5, 0.8], 7
    best = max(
        ((a, b, budget - a - b) for a in range(1, 6) for b in range(1, 6) if budget - a - b >= 1),
        key=lambda ms: sum(p_mixed(x, k) for x, k in zip(v3, ms, strict=True)),
    )
    got = allocate_roots(v3, budget)
    total = sum(p_mixed(x, k) for x, k in zip(v3, got, strict=True))
    assert total == pytest.approx(sum(p_mixed(x, k) for x, k in zip(v3, best, strict=True)))
    assert allocate_roots([0.5, 0.5], 10, m_max=3) == [3, 3]  # the cap holds


def test_stage2_budget_goes_to_prefixes_that_disagree_with_their_outcome():
    # (r, V(H)): a success predicted unlikely and a failure predicted likely are surprising
    cands = [(1.0, 0.95), (1.0, 0.1), (0.0, 0.05), (0.0, 0.9), (1.0, 0.5)]
    ks = allocate_prefixes(cands, 4)
    # marginal gains q^(k-1)(1-q): 0.9 for both surprises, then 0.5, 0.25 for the coin flip,
    # before 0.09 for a second surprise continuation; 0.05 for the agreeing prefixes
    assert ks == [0, 1, 0, 1, 2]
    assert allocate_prefixes(cands[:4], 4) == [0, 2, 0, 2]
    assert allocate_prefixes(cands, 0) == [0] * 5


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5, "x", None])
def test_predictor_values_are_checked(bad):
    with pytest.raises(PredictorError, match="predictor"):
        checked(bad, "predictor")
    with pytest.raises(PredictorError):
        allocate_roots([0.5, bad], 4)
    with pytest.raises(PredictorError):
        allocate_prefixes([(1.0, bad)], 2)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"roots": 0}, "roots must be >= 1"),
        ({"continuations": -1}, "continuations must be >= 0"),
        ({"m_min": 5, "roots": 4}, "m_min"),
        ({"m_max": 2, "roots": 4}, "m_max"),
        ({"predictor": object()}, "predict"),
    ],
)
def test_bad_parameters(kw, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TraceSampler(**kw)


def test_backups_are_leaf_weighted_means():
    tree = Tree("t", 0, Node(0, None, 0), (1,))
    a = tree.add_child(tree.root, ended=None)
    tree.add_child(a, reward=1.0, ended="terminated")
    b = tree.add_child(a, ended=None)
    tree.add_child(b, reward=0.0, ended="terminated")
    tree.add_child(b, reward=1.0, ended="terminated")
    tree.add_child(tree.root, reward=0.0, ended="terminated")
    v = backups(tree)
    # V̂(b) = 1/2 over 2 leaves; V̂(a) = (1·1 + 2·0.5)/3; V̂(root) = (3·2/3 + 1·0)/4
    assert v[b.id] == (0.5, 2) and v[a.id] == (pytest.approx(2 / 3), 3)
    assert v[0] == (pytest.approx(0.5), 4)


# ---------------------------------------------------------------- the default predictor
def _synthetic(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        f = {"turn": float(rng.randint(0, 12)), "admissible": math.log1p(rng.randint(1, 20)),
             "turn_logprob_mean": -rng.random() * 2, "noise": rng.random()}  # fmt: skip
        logit = 2.0 - 0.4 * f["turn"] + 1.5 * f["turn_logprob_mean"] + 0.8 * f["admissible"]
        out.append((f, float(rng.random() < 1 / (1 + math.exp(-logit)))))
    return out


def _log_loss(pairs, predict):
    eps = 1e-6
    return -sum(y * math.log(max(predict(f), eps)) + (1 - y) * math.log(max(1 - predict(f), eps))
                for f, y in pairs) / len(pairs)  # fmt: skip


def test_default_predictor_learns_a_synthetic_task_family():
    train, test = _synthetic(1500, 0), _synthetic(500, 1)
    pred = LogisticPredictor()
    assert pred.predict(train[0][0]) == 0.5  # no data yet: the prior
    for f, y in train:
        pred.update(f, y)
    base = sum(y for _, y in train) / len(train)
    learned, constant = _log_loss(test, pred.predict), _log_loss(test, lambda f: base)
    assert learned < constant - 0.05, (learned, constant)
    assert all(0.0 <= pred.predict(f) <= 1.0 for f, _ in test)
    with pytest.raises(PredictorError, match="features lack"):
        pred.predict({"turn": 1.0})


# ---------------------------------------------------------------- runs
@pytest.fixture
def template(tiny_model):  # noqa: F811
    return ReActTemplate(AutoTokenizer.from_pretrained(tiny_model))


TASKS = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(3)]


def _run(template, sampler, tasks=TASKS, concurrency=4):
    policy = ScriptedPolicy(template, "expert", epsilon=0.5, seed=3)

    async def go():
        ex = InProcessExecutor("treegym/ToyRooms-v0")
        runner = Runner(policy=policy, template=template, executor=ex, sampler=sampler,
                        concurrency=concurrency)  # fmt: skip
        try:
            return sorted([r async for r in runner.run(tasks)], key=lambda r: r.task.task_id)
        finally:
            await ex.close()

    return asyncio.run(go())


def test_planned_stage1_and_stage2_in_a_run(template):
    sampler = TraceSampler(roots=3, continuations=3, predictor=Fixed(lambda f: 0.5), learn=False)
    plan = sampler.plan({"toy-0": 0.01, "toy-1": 0.5, "toy-2": 0.99})
    assert sum(plan.values()) == 9 and plan["toy-1"] > plan["toy-0"]
    for res in _run(template, sampler):
        assert res.error is None
        assert len(res.trees) == plan[res.task.task_id]
        alloc = sampler.allocations[res.task.task_id]
        assert sum(k for *_, k in alloc["stage2"]) <= 3
        grown = sum(len(t.leaves()) for t in res.trees)
        assert grown == len(res.trees) + sum(k for *_, k in alloc["stage2"])
        assert set(res.advantages) == {"tree_grpo", "grpo", "node_value"}


def test_unplanned_stage1_uses_the_tasks_seen_so_far(template):
    # v depends on nothing but the task (through the admissible count at the root): the first
    # task alone gets `roots`; each later one its share of the greedy over all seen so far.
    sampler = TraceSampler(roots=2, continuations=0, predictor=Fixed(lambda f: 0.5), learn=False)
    results = _run(template, sampler, concurrency=1)
    assert [len(r.trees) for r in results] == [2, 2, 2]  # equal v: equal shares
    assert all(sampler.allocations[t.task_id]["v"] == 0.5 for t in TASKS)


def test_default_predictor_trains_online_and_the_run_exports(template, tmp_path):
    """One task at a time: the first task's stage-1 prediction is the prior; later tasks are
    predicted from the back-ups of the tasks before them, which moves their prediction toward
    the outcomes seen and changes their root allocation. A twin run that does not learn keeps
    the prior and the allocation everywhere."""
    sampler = TraceSampler(roots=2, continuations=2)
    results = _run(template, sampler, concurrency=1)
    assert all(r.error is None for r in results)
    frozen = TraceSampler(roots=2, continuations=2, learn=False)
    control = _run(template, frozen, concurrency=1)
    v = {t.task_id: sampler.allocations[t.task_id]["v"] for t in TASKS}
    assert v["toy-0"] == 0.5 and all(frozen.allocations[t]["v"] == 0.5 for t in v)
    seen = [backups(t)[0][0] for t in results[0].trees]  # toy-0's root back-ups (outcomes)
    observed = sum(seen) / len(seen)
    for task in ("toy-1", "toy-2"):
        assert abs(v[task] - observed) < abs(0.5 - observed), (v, observed)
    roots = [len(r.trees) for r in results]
    assert [len(r.trees) for r in control] == [2, 2, 2] and roots != [2, 2, 2], roots
    assert SAMPLERS["trace"] is TraceSampler
    with RunWriter(tmp_path / "run", sampler=sampler, tokenizer=template.tokenizer) as w:
        w.write_all(results)
    run = load_run(tmp_path / "run")
    assert len(run.samples) == sum(len(v) for r in results for v in r.training.values())


@pytest.mark.parametrize("bad", [float("nan"), 1.5])
def test_a_bad_predictor_fails_the_task_with_a_clear_error(template, bad):
    sampler = TraceSampler(roots=2, continuations=1, predictor=Fixed(lambda f: bad))
    results = _run(template, sampler, TASKS[:1])
    assert "PredictorError" in results[0].error and "[0, 1]" in results[0].error
