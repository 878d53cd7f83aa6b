"""TRACE: allocate rollouts to tasks and turn prefixes likely to yield mixed outcomes.

Paper: TRACE (arXiv 2606.11119). No reference code is public; the formulas below come from a
secondary source and ``../shared/ALGORITHMS.md`` marks them *unconfirmed*. What treegym
implements, and the choices it makes where the source is silent:

* Node = ReAct turn. A success predictor Ṽ(prefix) ∈ [0, 1] estimates the conditional success
  probability of a prefix; it only allocates budget (it never enters an advantage).
* Stage 1 (roots): split a root budget M over tasks to maximise Σ_i 1 − v_i^m_i − (1 − v_i)^m_i
  (the probability that a group of m_i rollouts has both outcomes), v_i = Ṽ(root of task i).
  Each term is concave in m_i (its marginal gain v^m(1 − v) + (1 − v)^m v falls with m), so the
  greedy marginal-gain solver :func:`allocate_roots` is optimal.
* Stage 2 (prefixes): k continuations from a turn prefix H of a rollout with observed outcome
  r are worth 1 − [r·Ṽ(H) + (1 − r)(1 − Ṽ(H))]^k (the chance that at least one continuation
  disagrees with r); the remaining budget goes greedily by marginal gain
  (:func:`allocate_prefixes`). Prefixes are the non-final turns of the stage-1 rollouts
  (depth ≥ 1; the root belongs to stage 1); r is the rollout's return clipped to [0, 1].
  One round of stage 2 per task (choice: the source does not say whether it iterates).
* Predictor training: on the run's own tree back-ups V̂(y) = (1/n_y) Σ_children n_c V̂(c)
  (= the mean outcome of the n_y leaves below y), once a task's trees are finished, every
  node with a leaf below it is a weighted example (weight n_y).

**Stage 1 across tasks (a design choice).** The :class:`~treegym.harness.runner.Runner` grows
tasks independently and concurrently, so no single call sees every task's v_i. The sampler
owns the shared predictor and an allocator: ``plan(v_by_task)`` solves stage 1 exactly over a
known task set (total M = ``roots`` × tasks, :func:`allocate_roots`); a task without a plan
entry resets one root, predicts its v_i, and gets its share of the greedy solution over all
the tasks this sampler has started so far (each contributing ``roots`` to the budget). With
a plan the allocation is the exact greedy optimum; without one it is the same rule applied to
the population seen so far, which converges to it as tasks accumulate. Because the predictor
learns online from finished tasks, allocations depend on task completion order (as in any
online-trained allocator); set the runner's concurrency to 1 for a reproducible order.

Predictor protocol (:class:`SuccessPredictor`): ``predict(features) -> p`` and
``update(features, outcome, weight)``. Features come from ``TraceSampler.features`` (default
:func:`prefix_features`: turn index, task-id statistics, admissible-command count, policy
logprob statistics, observation length); a model-based predictor plugs in by passing its own
``features`` function (e.g. returning the prefix token ids) and a predictor that reads them.
The default :class:`LogisticPredictor` is logistic regression on the numeric features, refit
by full-batch gradient descent on its (capped) buffer of back-ups. Every prediction is checked:
NaN or a value outside [0, 1] raises :class:`PredictorError`.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .sampler_base import Sampler, SamplerContext
from .tree import Node, Tree

Features = Mapping[str, Any]


class PredictorError(ValueError):
    """A success predictor returned something that is not a probability."""


@runtime_checkable
class SuccessPredictor(Protocol):
    def predict(self, features: Features) -> float: ...

    def update(self, features: Features, outcome: float, weight: float = 1.0) -> None: ...


def checked(p: Any, where: str = "predictor") -> float:
    """``p`` as a float in [0, 1]; NaN, infinities and values outside raise PredictorError."""
    try:
        value = float(p)
    except (TypeError, ValueError) as exc:
        raise PredictorError(f"{where} returned {p!r}, not a probability") from exc
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise PredictorError(f"{where} returned {value!r}; a success probability must be in [0, 1]")
    return value


# ---------------------------------------------------------------------- stage 1
def p_mixed(v: float, m: int) -> float:
    """Probability that m independent rollouts with success probability v disagree."""
    return 1.0 - v**m - (1.0 - v) ** m


def allocate_roots(
    v: Sequence[float], budget: int, *, m_min: int = 1, m_max: int | None = None
) -> list[int]:
    """Stage 1: roots per task maximising Σ_i p_mixed(v_i, m_i) with Σ m_i = ``budget``
    (greedy marginal gain; each task gets between ``m_min`` and ``m_max``)."""
    v = [checked(x, "stage-1 v") for x in v]
    if m_min < 1:
        raise ValueError(f"m_min must be >= 1, got {m_min}")
    if m_max is not None and m_max < m_min:
        raise ValueError(f"m_max={m_max} is smaller than m_min={m_min}")
    if budget < m_min * len(v):
        raise ValueError(f"root budget {budget} cannot give {len(v)} tasks {m_min} each")
    m = [m_min] * len(v)
    heap = [(-(p_mixed(x, m_min + 1) - p_mixed(x, m_min)), i) for i, x in enumerate(v)]
    heapq.heapify(heap)
    for _ in range(budget - m_min * len(v)):
        if not heap:
            break
        _, i = heapq.heappop(heap)
        m[i] += 1
        if m_max is None or m[i] < m_max:
            heapq.heappush(heap, (-(p_mixed(v[i], m[i] + 1) - p_mixed(v[i], m[i])), i))
    return m


# ---------------------------------------------------------------------- stage 2
def continuation_value(r: float, v: float, k: int) -> float:
    """Worth of k continuations from a prefix with prediction v on a rollout with outcome r."""
    q = r * v + (1.0 - r) * (1.0 - v)
    return 1.0 - q**k


def allocate_prefixes(candidates: Sequence[tuple[float, float]], budget: int) -> list[int]:
    """Stage 2: continuations per candidate ``(r, v)`` maximising Σ continuation_value with
    Σ k = ``budget`` (greedy marginal gain; ties go to the earlier candidate)."""
    if budget < 0:
        raise ValueError(f"continuation budget must be >= 0, got {budget}")
    ks = [0] * len(candidates)
    heap = []
    for i, (r, v) in enumerate(candidates):
        checked(v, "stage-2 v")
        heap.append((-continuation_value(r, v, 1), i))
    heapq.heapify(heap)
    for _ in range(budget):
        if not heap:
            break
        _, i = heapq.heappop(heap)
        ks[i] += 1
        r, v = candidates[i]
        gain = continuation_value(r, v, ks[i] + 1) - continuation_value(r, v, ks[i])
        heapq.heappush(heap, (-gain, i))
    return ks


# ---------------------------------------------------------------------- predictor
class TaskStats:
    """Outcome statistics per task id (root back-ups seen by the predictor so far)."""

    def __init__(self) -> None:
        self._sums: dict[str, tuple[float, float]] = {}

    def add(self, task_id: str, outcome: float, n: float) -> None:
        s, c = self._sums.get(task_id, (0.0, 0.0))
        self._sums[task_id] = (s + outcome * n, c + n)

    def get(self, task_id: str) -> tuple[float, float]:
        """(Beta(1, 1)-smoothed mean, count)."""
        s, c = self._sums.get(task_id, (0.0, 0.0))
        return (s + 1.0) / (c + 2.0), c


def prefix_features(tree: Tree, node: Node, stats: TaskStats) -> dict[str, float]:
    """Default prefix features: turn index, task statistics, admissible-command count, policy
    logprob statistics (this turn and the whole path), observation length."""
    path = tree.path(node)
    lps = [x for n in path for x in n.logprobs]
    mean, count = stats.get(tree.task_id)
    return {
        "turn": float(node.depth),
        "task_mean": mean,
        "task_count": math.log1p(count),
        "admissible": math.log1p(len(node.info.get("admissible_commands") or ())),
        "turn_logprob_mean": float(np.mean(node.logprobs)) if node.logprobs else 0.0,
        "turn_logprob_min": float(min(node.logprobs)) if node.logprobs else 0.0,
        "path_logprob_mean": float(np.mean(lps)) if lps else 0.0,
        "obs_len": math.log1p(len(node.observation_ids) or len(node.observation)),
    }


class PrefixFeatures:
    """:func:`prefix_features` as an object with a stable ``repr`` (part of a run's identity)."""

    def __call__(self, tree: Tree, node: Node, stats: TaskStats) -> dict[str, float]:
        return prefix_features(tree, node, stats)

    def __repr__(self) -> str:
        return "prefix_features"


class LogisticPredictor:
    """Logistic regression on numeric features, fit online on back-ups (soft targets).

    ``update`` appends to a buffer (the newest ``capacity`` examples are kept); ``predict``
    refits (standardised features, L2 ``l2``, ``steps`` gradient steps warm-started from the
    last fit) when new examples arrived. With no data it predicts ``prior``.
    """

    def __init__(self, *, l2: float = 1e-3, lr: float = 0.5, steps: int = 200,
                 capacity: int = 20000, prior: float = 0.5) -> None:  # fmt: skip
        self.l2, self.lr, self.steps, self.capacity = l2, lr, steps, capacity
        self.prior = checked(prior, "prior")
        self.keys: list[str] | None = None
        self._x: list[list[float]] = []
        self._y: list[float] = []
        self._w: list[float] = []
        self._coef: np.ndarray | None = None
        self._mu = self._sd = None
        self._dirty = False
        self.stats = TaskStats()

    def __repr__(self) -> str:  # stable: part of a run's identity
        return f"LogisticPredictor(l2={self.l2}, lr={self.lr}, steps={self.steps})"

    def _row(self, features: Features) -> list[float]:
        if self.keys is None:
            self.keys = sorted(k for k, v in features.items() if isinstance(v, (int, float)))
        try:
            return [float(features[k]) for k in self.keys]
        except KeyError as exc:
            raise PredictorError(f"features lack {exc.args[0]!r} (has {sorted(features)})") from exc

    def update(self, features: Features, outcome: float, weight: float = 1.0) -> None:
        self._x.append(self._row(features))
        self._y.append(checked(outcome, "back-up outcome"))
        self._w.append(float(weight))
        if len(self._x) > self.capacity:
            del self._x[0], self._y[0], self._w[0]
        self._dirty = True

    def _fit(self) -> None:
        x, y, w = np.asarray(self._x), np.asarray(self._y), np.asarray(self._w)
        self._mu, self._sd = x.mean(0), x.std(0) + 1e-8
        z = np.hstack([np.ones((len(x), 1)), (x - self._mu) / self._sd])
        coef = self._coef if self._coef is not None and len(self._coef) == z.shape[1] else None
        if coef is None:
            base = float(np.clip(np.average(y, weights=w), 1e-3, 1 - 1e-3))
            coef = np.zeros(z.shape[1])
            coef[0] = math.log(base / (1 - base))
        w = w / w.sum()
        for _ in range(self.steps):
            p = 1.0 / (1.0 + np.exp(-np.clip(z @ coef, -30, 30)))
            grad = z.T @ (w * (p - y)) + self.l2 * np.r_[0.0, coef[1:]]
            coef = coef - self.lr * grad
        self._coef, self._dirty = coef, False

    def predict(self, features: Features) -> float:
        if not self._x:
            return self.prior
        if self._dirty:
            self._fit()
        z = (np.asarray(self._row(features)) - self._mu) / self._sd
        logit = float(self._coef[0] + z @ self._coef[1:])
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, logit))))


# ---------------------------------------------------------------------- the sampler
def outcome(tree: Tree, leaf: Node) -> float:
    """A rollout's outcome for TRACE: its return clipped to [0, 1]."""
    return min(1.0, max(0.0, tree.returns(leaf)))


def backups(tree: Tree) -> dict[int, tuple[float, int]]:
    """V̂(y) and n_y for every node with a non-failed leaf below it (returns clipped to [0, 1];
    V̂(y) = (1/n_y) Σ_children n_c V̂(c) is the mean outcome of the leaves below)."""
    sums: dict[int, tuple[float, int]] = {}
    for node in reversed(tree.nodes):
        if node.is_leaf:
            if node.parent is not None and node.ended != "failed":
                sums[node.id] = (outcome(tree, node), 1)
        else:
            kids = [sums[c.id] for c in node.children if c.id in sums]
            if kids:
                sums[node.id] = (sum(s for s, _ in kids), sum(n for _, n in kids))
    return {i: (s / n, n) for i, (s, n) in sums.items()}


@dataclass
class TraceSampler(Sampler):
    """TRACE's two-stage allocation (see the module docstring)."""

    roots: int = 4
    """Stage-1 budget per task (M = roots × tasks)."""
    continuations: int = 4
    """Stage-2 budget per task: continuation branches, each rolled out to its end."""
    m_min: int = 1
    m_max: int | None = None
    predictor: Any = field(default_factory=LogisticPredictor)
    features: Callable[[Tree, Node, TaskStats], Features] = field(
        default_factory=lambda: PrefixFeatures()
    )
    learn: bool = True
    name: str = "trace"
    estimators: tuple[str, ...] = ("tree_grpo", "grpo", "node_value")

    def __post_init__(self) -> None:
        if self.roots < 1:
            raise ValueError(f"trace roots must be >= 1, got {self.roots}")
        if self.continuations < 0:
            raise ValueError(f"trace continuations must be >= 0, got {self.continuations}")
        if not 1 <= self.m_min <= self.roots:
            raise ValueError(f"trace m_min must be in [1, roots={self.roots}], got {self.m_min}")
        if self.m_max is not None and self.m_max < self.roots:
            raise ValueError(f"trace m_max={self.m_max} is smaller than roots={self.roots}")
        if not isinstance(self.predictor, SuccessPredictor):
            raise TypeError("predictor must have predict(features) and update(features, outcome)")
        self._plan: dict[str, int] = {}
        self._seen: dict[str, float] = {}
        self.stats: TaskStats = getattr(self.predictor, "stats", None) or TaskStats()
        self.allocations: dict[str, dict[str, Any]] = {}
        """Per task: v, roots given, stage-2 choices (for reports and tests)."""

    @property
    def trajectories_per_task(self) -> int:
        return self.roots + self.continuations

    def predict(self, tree: Tree, node: Node) -> float:
        feats = self.features(tree, node, self.stats)
        return checked(self.predictor.predict(feats), type(self.predictor).__name__)

    def plan(self, v_by_task: Mapping[str, float]) -> dict[str, int]:
        """Solve stage 1 exactly over a known task set (M = roots × tasks)."""
        ids = list(v_by_task)
        m = allocate_roots([v_by_task[i] for i in ids], self.roots * len(ids),
                           m_min=self.m_min, m_max=self._m_max)  # fmt: skip
        self._plan.update(zip(ids, m, strict=True))
        return dict(zip(ids, m, strict=True))

    @property
    def _m_max(self) -> int:
        return self.m_max if self.m_max is not None else 4 * self.roots

    def _roots_for(self, task_id: str, v: float) -> int:
        if task_id in self._plan:
            return self._plan[task_id]
        self._seen[task_id] = v
        ids = list(self._seen)
        m = allocate_roots([self._seen[i] for i in ids], self.roots * len(ids),
                           m_min=self.m_min, m_max=self._m_max)  # fmt: skip
        return m[ids.index(task_id)]

    async def grow(self, ctx: SamplerContext) -> None:
        first = await ctx.new_tree()
        v = self.predict(first, first.root)
        m = self._roots_for(ctx.task_id, v)
        trees = [first] + [await ctx.new_tree() for _ in range(m - 1)]
        await asyncio.gather(*(ctx.rollout(t, t.root) for t in trees))
        # Stage 2: prefixes of the finished rollouts, valued against their observed outcome.
        cands: list[tuple[Tree, Node, float, float]] = []
        for tree in trees:
            for leaf in tree.leaves():
                if leaf.ended == "failed":
                    continue
                r = outcome(tree, leaf)
                for node in tree.path(leaf)[:-1]:
                    if ctx.expandable(node):
                        cands.append((tree, node, r, self.predict(tree, node)))
        ks = allocate_prefixes([(r, p) for _, _, r, p in cands], self.continuations)
        self.allocations[ctx.task_id] = {
            "v": v, "roots": m,
            "stage2": [(t.index, n.id, r, p, k) for (t, n, r, p), k in zip(cands, ks, strict=True)
                       if k],
        }  # fmt: skip
        chosen = [(t, n, k) for (t, n, _, _), k in zip(cands, ks, strict=True) if k]
        await asyncio.gather(*(self._branch(ctx, t, n, k) for t, n, k in chosen))
        if self.learn:
            self.observe(ctx.trees)

    @staticmethod
    async def _branch(ctx: SamplerContext, tree: Tree, node: Node, k: int) -> None:
        children = await ctx.expand(tree, node, k)
        await asyncio.gather(*(ctx.rollout(tree, c) for c in children if c.ended is None))

    def observe(self, trees: Sequence[Tree]) -> None:
        """Train the predictor on the finished trees' back-ups (every node with leaves below)."""
        examples = []
        for tree in trees:
            for node_id, (value, n) in sorted(backups(tree).items()):
                node = tree.nodes[node_id]
                if node.is_leaf:
                    continue  # a finished trajectory is no prefix to allocate from
                examples.append((self.features(tree, node, self.stats), value, n))
        for feats, value, n in examples:
            self.predictor.update(feats, value, float(n))
        for tree in trees:  # task statistics after the examples (so they saw the prior state)
            root = backups(tree).get(0)
            if root is not None:
                self.stats.add(tree.task_id, root[0], root[1])


__all__ = [
    "LogisticPredictor",
    "PredictorError",
    "PrefixFeatures",
    "SuccessPredictor",
    "TaskStats",
    "TraceSampler",
    "allocate_prefixes",
    "allocate_roots",
    "backups",
    "checked",
    "continuation_value",
    "p_mixed",
    "prefix_features",
]
