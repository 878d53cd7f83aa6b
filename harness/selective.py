"""Selective Rollout: a divergence gate that stops groups whose early actions agree.

Paper: "Selective Rollout" (arXiv 2605.05802); reference code zhiyuanZhai20/selective-rollout
(``src/divergence.py``: ``_prefix``, ``_normalized_edit_distance``, ``divergence_at_K``;
``scripts/05_two_axis_gate.py``, ``06_gate_sweep.py``). Settings from
``../shared/ALGORITHMS.md``:

* Signal d_K: the mean, over all pairs of the group's trajectories, of the Levenshtein distance
  between their first K **actions** (each whole action string is one symbol; a trajectory that
  ended before step K is padded with an END symbol up to K), divided by K. d_K ∈ [0, 1].
* Gate: evaluated once, right after env step K. If d_K < d_L every running trajectory of the
  group stops (``ended="gated"``) and the whole group is dropped from the training batch.
  Optional OR-rule: also gate when ≥ 90 % of the group has already finished. "Finished" follows
  the reference's ``termination_fraction``: the trajectory ended in its first K − 1 steps.
* Operating points: G=8, K=10, d_L=0.12 (:meth:`GatedSampler.g8`) and G=16, K=15, d_L=0.09
  (:meth:`GatedSampler.g16`); thresholds depend on G.
* Groups whose every chain ended before step K (``ended_before_k``): the reference scripts
  disagree. ``17_grpo_static.py`` (``gate_fires``) applies the rule to the END-padded prefixes
  (so a group of identical short chains, or any such group under the OR-rule, is gated);
  ``11_grpo_train.py`` evaluates the gate inside its step loop, which ends when every
  trajectory is done, so such a group is never evaluated and trains; ``19_grpo_onpolicy.py``
  evaluates only when trajectory 0 has at least K steps, so it too keeps such groups (and, by
  the same test, any group whose first trajectory alone ended early — an order-dependent rule
  treegym does not reproduce). ``"evaluate"`` (the default) is the static script's behaviour,
  ``"pass"`` the training scripts': the record then says the gate was not evaluated (d_K is
  still computed, for auditing).

How it composes with a sampler (``chain`` or ``tree_grpo``): :class:`GatedSampler` wraps the
inner sampler and hands it a proxy of the task context. The group at the checkpoint is the
inner sampler's first chains: the G chains of ``chain``, the M initial chains of
``tree_grpo`` (its expansion rounds start after the gate, so a gated Tree-GRPO group also
skips them). The proxy holds any expansion *past* depth K until every one of those chains
has reached step K or ended (a barrier), then decides once. A gated group's trees stay in the
tree store (``nodes.parquet``) and are auditable: each root's ``info["selective_gate"]``
records the decision, d_K, the finished fraction and the reason; the gated group has no
training leaves, so it never reaches ``samples.parquet``. Groups that pass record their d_K
the same way (gate precision can be measured from a run folder).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .runner import rollout_with
from .sampler_base import Sampler, SamplerContext
from .samplers import ChainSampler, TreeGRPOSampler
from .tree import Node, Tree

END = "<END>"
"""Padding symbol for trajectories that ended before step K (never a real action)."""
INFO_KEY = "selective_gate"
"""Key of the gate's record in each root node's ``info`` (exported in ``nodes.parquet``)."""


def levenshtein(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Edit distance between two sequences of symbols (insert, delete, substitute: cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def padded_prefix(actions: Sequence[str], k: int) -> list[str]:
    """The first ``k`` actions, padded with :data:`END` if the trajectory ended earlier."""
    out = list(actions[:k])
    return out + [END] * (k - len(out))


def group_divergence(actions: Sequence[Sequence[str]], k: int) -> float:
    """d_K: mean pairwise Levenshtein distance of the padded K-prefixes, divided by K."""
    if k < 1:
        raise ValueError(f"K must be >= 1, got {k}")
    if len(actions) < 2:
        raise ValueError(f"divergence needs a group of at least 2 trajectories, got {len(actions)}")
    prefixes = [padded_prefix(a, k) for a in actions]
    pairs = list(itertools.combinations(prefixes, 2))
    return sum(levenshtein(a, b) for a, b in pairs) / len(pairs) / k


@dataclass(frozen=True)
class GateDecision:
    gated: bool
    d_k: float
    finished_fraction: float
    reason: str

    def record(self, k: int, d_l: float) -> dict[str, Any]:
        return {"gated": self.gated, "reason": self.reason, "d_k": self.d_k,
                "finished_fraction": self.finished_fraction, "k": k, "d_l": d_l}  # fmt: skip


ENDED_BEFORE_K = ("evaluate", "pass")
"""What the gate does with a group whose every chain ended before step K (module docstring)."""


def decide(
    actions: Sequence[Sequence[str]],
    finished_early: Sequence[bool],
    *,
    k: int,
    d_l: float,
    or_finished: bool = False,
    finished_threshold: float = 0.9,
) -> GateDecision:
    """The gate rule on one group: ``actions`` are each trajectory's actions (at least its first
    K), ``finished_early`` whether it ended in its first K − 1 steps."""
    d_k = group_divergence(actions, k)
    frac = sum(map(bool, finished_early)) / len(finished_early)
    if d_k < d_l:
        return GateDecision(True, d_k, frac, f"selective: d_K={d_k:.4f} < d_L={d_l} at K={k}")
    if or_finished and frac >= finished_threshold:
        return GateDecision(
            True, d_k, frac,
            f"selective: finished fraction {frac:.3f} >= {finished_threshold} at K={k}",
        )  # fmt: skip
    return GateDecision(False, d_k, frac, f"passed: d_K={d_k:.4f} >= d_L={d_l} at K={k}")


def first_chain(tree: Tree, k: int) -> list[Node]:
    """The tree's first chain (first children from the root) up to depth ``k``."""
    out, node = [], tree.root
    while node.children and node.depth < k:
        node = node.children[0]
        out.append(node)
    return out


def group_size_of(inner: Sampler) -> int:
    """How many chains the inner sampler grows from the reset state before anything else."""
    if isinstance(inner, ChainSampler):
        return inner.group_size
    if isinstance(inner, TreeGRPOSampler):
        return inner.m
    raise TypeError(
        f"the selective gate composes with chain and tree_grpo samplers, not {type(inner).__name__}"
    )


@dataclass
class GatedSampler(Sampler):
    """Wrap ``inner`` (chain or tree_grpo) with the Selective Rollout gate (module docstring)."""

    inner: Sampler = field(default_factory=lambda: ChainSampler(8))
    k: int = 10
    d_l: float = 0.12
    or_finished: bool = False
    finished_threshold: float = 0.9
    ended_before_k: str = "evaluate"
    """A group whose every chain ended before step K: ``evaluate`` the rule on the padded
    prefixes (``17_grpo_static.py``) or let it ``pass`` ungated (``11_grpo_train.py``,
    ``19_grpo_onpolicy.py``); see the module docstring."""
    horizon: int | None = None
    """The env's step limit, if known: K beyond it could never be reached (an error)."""
    name: str = "selective"
    estimators: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.inner, Sampler):
            raise TypeError(f"inner must be a Sampler, got {type(self.inner).__name__}")
        g = group_size_of(self.inner)
        if g < 2:
            raise ValueError(f"the selective gate needs a group of at least 2 chains, got {g}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"selective K must be an integer >= 1, got {self.k!r}")
        if self.horizon is not None and self.k > self.horizon:
            raise ValueError(f"selective K={self.k} is larger than the horizon {self.horizon}")
        if not 0.0 <= self.d_l <= 1.0:  # also rejects NaN
            raise ValueError(f"selective d_L must be in [0, 1], got {self.d_l}")
        if not 0.0 < self.finished_threshold <= 1.0:
            raise ValueError(
                f"selective finished_threshold must be in (0, 1], got {self.finished_threshold}"
            )
        if self.ended_before_k not in ENDED_BEFORE_K:
            raise ValueError(
                f"selective ended_before_k must be one of {', '.join(ENDED_BEFORE_K)}, "
                f"got {self.ended_before_k!r}"
            )
        if not self.estimators:
            self.estimators = tuple(self.inner.estimators)

    @classmethod
    def g8(cls, inner: Sampler | None = None, **kw: Any) -> GatedSampler:
        """The paper's G=8 operating point: K=10, d_L=0.12."""
        return cls(inner or ChainSampler(8), k=10, d_l=0.12, **kw)

    @classmethod
    def g16(cls, inner: Sampler | None = None, **kw: Any) -> GatedSampler:
        """The paper's G=16 operating point: K=15, d_L=0.09."""
        return cls(inner or ChainSampler(16), k=15, d_l=0.09, **kw)

    @property
    def group_size(self) -> int:
        return group_size_of(self.inner)

    @property
    def trajectories_per_task(self) -> int:
        return self.inner.trajectories_per_task

    async def grow(self, ctx: SamplerContext) -> None:
        await self.inner.grow(_GatedContext(ctx, self))  # type: ignore[arg-type]

    def select_leaves(self, trees: Sequence[Tree], rng: random.Random) -> dict[int, list[Node]]:
        if is_gated(trees):
            return {t.index: [] for t in trees}
        return self.inner.select_leaves(trees, rng)


def is_gated(trees: Sequence[Tree]) -> bool:
    """Whether the group was stopped by the gate (recorded on the roots)."""
    return any(t.root.info.get(INFO_KEY, {}).get("gated") for t in trees)


class _GatedContext:
    """A task context whose expansions past depth K wait for the group's gate decision."""

    def __init__(self, ctx: SamplerContext, gate: GatedSampler) -> None:
        self._ctx, self._gate = ctx, gate
        self._group = gate.group_size
        self._decided = asyncio.Event()
        self.decision: GateDecision | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    async def expand(self, tree: Tree, node: Node, n: int = 1) -> list[Node]:
        if self.decision is None and node.depth >= self._gate.k:
            self._check()
            await self._decided.wait()
        if self.decision is not None and self.decision.gated:
            return []
        children = await self._ctx.expand(tree, node, n)
        self._check()
        return children

    async def rollout(self, tree: Tree, node: Node) -> Node:
        """Same as :meth:`TaskContext.rollout`, through the gated ``expand``."""
        return await rollout_with(self.expand, tree, node)

    def _arrived(self, tree: Tree) -> bool:
        k = self._gate.k
        chain = first_chain(tree, k)
        last = chain[-1] if chain else tree.root
        return last.depth >= k or last.ended is not None

    def _check(self) -> None:
        trees = self._ctx.trees[: self._group]
        if self.decision is not None or len(trees) < self._group:
            return
        if not all(self._arrived(t) for t in trees):
            return
        g, k = self._gate, self._gate.k
        chains = [first_chain(t, k) for t in trees]
        actions = [[n.action for n in c] for c in chains]
        early = [bool(c) and c[-1].ended is not None and c[-1].depth < k for c in chains]
        early = [e or not c for e, c in zip(early, chains, strict=True)]  # no turn at all
        self.decision = decide(actions, early, k=k, d_l=g.d_l, or_finished=g.or_finished,
                               finished_threshold=g.finished_threshold)  # fmt: skip
        if all(early) and g.ended_before_k == "pass":
            self.decision = GateDecision(
                False, self.decision.d_k, 1.0,
                f"not evaluated: every chain ended before step K={k} (ended_before_k='pass')",
            )  # fmt: skip
        record = self.decision.record(k, g.d_l)
        for tree in self._ctx.trees:
            tree.root.info = {**tree.root.info, INFO_KEY: record}
            if self.decision.gated:
                for leaf in tree.nodes:
                    if leaf.is_leaf and leaf.ended is None and leaf.parent is not None:
                        leaf.ended = "gated"
        self._decided.set()
