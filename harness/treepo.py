"""TreePO: segment-wise tree sampling with a fixed target of finished trajectories per task.

Paper: "TreePO: Bridging the Gap of Policy Optimization and Efficacy and Inference Efficiency
with Heuristic Tree-based Modeling" (arXiv 2508.17445); reference code
multimodal-art-projection/TreePO (``recipe/treepo/vllm_rollout_tree.py``,
``generate_sequences_tree_deepth_first_vanilla_mode``; the advantage in
``verl/trainer/ppo/core_algos.py``). Settings from ``../shared/ALGORITHMS.md``:

* **Segments.** A segment is one generation of at most ``segment_len`` tokens; every tree node
  of a ``treepo`` tree is one segment. treegym is multi-turn, so a segment also ends where its
  turn ends (the end token, or the turn's ``max_new_tokens``): the env must answer before the
  model generates again, just as the reference's segment ends at EOS. A boundary therefore
  falls either *inside* a turn — the node is ``partial``: no env step, its children continue
  the same unfinished generation from the same env state — or at a turn end — the whole turn's
  ids are parsed, and the env is stepped from the turn's start state once per child (a restore
  in place: a fork). See :meth:`TaskContext.expand_segment
  <treegym.harness.runner.TaskContext.expand_segment>`. Every node's ids are only its own
  segment, so ids along a path are the exact sequence and the loss mask is 1 exactly on
  generated ids, as for any other sampler.
* **Steps.** Step 1 branches the root ``div`` ways; each later step expands every active path
  (all of the task's in one concurrent round, each node's children in one request batch).
* **Divergence** (:func:`divergence_total`, :func:`fixed_divergence`,
  :func:`logprob_divergence`): remaining = max(max_width − finished, 0); total = min(remaining,
  div·(finished this step) + div·(#active)); total = max(total, #active). ``fixed_avg`` splits
  it evenly, the remainder to the last path (as the reference); ``logprob_weighted`` gives each
  path one and the rest by largest remainder with weights softmax(−(L − min L)/T) over the
  paths' cumulative logprobs L (less likely paths get more branches, the reference's
  ``logprob_weighted_div``).
* **Early stop** of a path (``Node.ended``), checked in the reference's order after each
  segment: end of episode (the multi-turn EOS: the env terminated or truncated), ``max_length``
  (generated tokens along the path; requests never exceed it), ``max_depth`` (segments), and
  ``repetition`` (:func:`has_repetition`: a 32-char substring ≥ 8 times in the generated
  text). Stopped paths are finished trajectories and train like any other. The repetition
  scope is the current *turn* by default (its ids across all its segments): the reference
  checks each step's response, and in multi-turn play the whole trajectory's text repeats by
  design — with the embedded model on TextWorld, ``<|end|>Thought: the plan says go `` recurs
  every turn, so ``repetition_scope="trajectory"`` stopped every path at turn 9 of 20.
* **Fallback** when the task has no active path and fewer than ``max_width`` finished: finished
  trajectories in random order are cut back to a random earlier segment boundary (a node on
  their path, the root — the prompt — included, the only choice for a one-segment path) and
  branched ``div`` ways (fewer if less remains) until the remaining width is used.
* **Advantage** ``treepo`` (:func:`treegym.harness.advantages.treepo`): sub-group means per
  depth, ``average`` aggregation; :func:`whiten_batch` whitens it over a batch of task results
  (token-weighted, as verl's ``masked_whiten``). The run folder stores it unwhitened.

Defaults are sized for treegym's short turns (``segment_len=32``); :meth:`TreePOSampler.
published` is the paper's setting (512-token segments, depth 6, 16 trajectories, div 2).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .advantages import subgroup_advantages, treepo
from .sampler_base import Sampler, SamplerContext
from .tree import Node, Tree, open_turn

if TYPE_CHECKING:
    from .runner import TaskResult

__all__ = [
    "TreePOSampler",
    "divergence_total",
    "fixed_divergence",
    "has_repetition",
    "logprob_divergence",
    "subgroup_advantages",
    "treepo",
    "whiten",
    "whiten_batch",
]

POLICIES = ("fixed_avg", "logprob_weighted")


def has_repetition(text: str, length: int = 32, count: int = 8) -> bool:
    """Whether some ``length``-char substring occurs ``count`` times (overlaps count)."""
    seen: dict[str, int] = {}
    for i in range(len(text) - length + 1):
        sub = text[i : i + length]
        seen[sub] = seen.get(sub, 0) + 1
        if seen[sub] >= count:
            return True
    return False


def divergence_total(
    *, active: int, finished: int, finished_this_step: int, max_width: int, div: int
) -> int:
    """Branches for the next step over ``active`` paths (module docstring)."""
    remaining = max(max_width - finished, 0)
    total = min(remaining, div * finished_this_step + div * active)
    return max(total, active)


def fixed_divergence(active: int, total: int) -> list[int]:
    """``fixed_avg``: ``total`` split evenly over ``active`` paths, remainder to the last, ≥ 1."""
    if active < 1:
        return []
    base, rest = divmod(total, active)
    out = [base] * active
    out[-1] += rest
    return [max(1, k) for k in out]


def logprob_divergence(
    cum_logprobs: Sequence[float], total: int, temperature: float = 1.0
) -> list[int]:
    """``logprob_weighted``: one branch each, the rest by largest remainder with weights
    softmax(−(L − min L)/T): the less likely a path so far, the more branches."""
    n = len(cum_logprobs)
    if n == 0:
        return []
    if total < n:
        raise ValueError(f"divergence total {total} is less than the {n} active paths")
    if not temperature > 0:
        raise ValueError(f"logprob temperature must be > 0, got {temperature}")
    low = min(cum_logprobs)
    exps = [math.exp(-(lp - low) / temperature) for lp in cum_logprobs]
    weights = [e / sum(exps) for e in exps]
    rest = total - n
    raw = [w * rest for w in weights]
    out = [math.floor(x) for x in raw]
    by_fraction = sorted(range(n), key=lambda i: -(raw[i] - out[i]))
    for i in by_fraction[: rest - sum(out)]:
        out[i] += 1
    return [1 + k for k in out]


def whiten(values: Sequence[float], weights: Sequence[float] | None = None) -> list[float]:
    """(x − mean) / sqrt(var + 1e-8), both weighted (verl's ``masked_whiten`` over tokens)."""
    if not values:
        return []
    w = list(weights) if weights is not None else [1.0] * len(values)
    total = sum(w)
    mean = sum(x * wi for x, wi in zip(values, w, strict=True)) / total
    var = sum(wi * (x - mean) ** 2 for x, wi in zip(values, w, strict=True)) / total
    # masked_whiten uses the unbiased variance
    n = sum(1 for wi in w if wi > 0)
    if total > 1 and n > 1:
        var *= total / (total - 1)
    return [(x - mean) / math.sqrt(var + 1e-8) for x in values]


def whiten_batch(results: Sequence[TaskResult], estimator: str = "treepo") -> None:
    """Whiten ``estimator``'s per-leaf advantages over all ``results`` (a training batch), in
    place, each sample weighted by its generated tokens (its loss-mask ones)."""
    entries = []
    for res in results:
        adv = res.advantages.get(estimator)
        if adv is None:
            continue
        trees = {t.index: t for t in res.trees}
        for key, value in adv.per_leaf.items():
            tree = trees[key[0]]
            tokens = sum(len(n.generated_ids) for n in tree.path(tree.nodes[key[1]]))
            entries.append((adv, key, value, tokens))
    out = whiten([e[2] for e in entries], [max(e[3], 1) for e in entries])
    for (adv, key, _, _), value in zip(entries, out, strict=True):
        adv.per_leaf[key] = value


def _generated(tree: Tree, node: Node) -> list[int]:
    return [i for n in tree.path(node) for i in n.generated_ids]


@dataclass
class TreePOSampler(Sampler):
    """TreePO's segment tree (see the module docstring)."""

    segment_len: int = 32
    max_depth: int = 64
    max_width: int = 8
    div: int = 2
    divergence: str = "fixed_avg"
    temperature: float = 1.0
    """Softmax temperature of ``logprob_weighted`` divergence."""
    max_length: int | None = None
    """Cap on a trajectory's generated tokens (``None``: only the context guard)."""
    repetition_len: int = 32
    repetition_count: int = 8
    repetition_scope: str = "turn"
    """``turn`` (the current turn's generated text) or ``trajectory`` (the whole path's)."""
    fallback: bool = True
    name: str = "treepo"
    estimators: tuple[str, ...] = ("treepo", "grpo", "node_value")

    def __post_init__(self) -> None:
        for label, value in (("segment_len", self.segment_len), ("max_depth", self.max_depth),
                             ("max_width", self.max_width), ("divergence div", self.div),
                             ("repetition_len", self.repetition_len),
                             ("repetition_count", self.repetition_count)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"treepo {label} must be an integer >= 1, got {value!r}")
        if self.divergence not in POLICIES:
            raise ValueError(
                f"treepo divergence must be one of {POLICIES}, got {self.divergence!r}"
            )
        if self.repetition_scope not in ("turn", "trajectory"):
            raise ValueError(
                f"treepo repetition_scope must be 'turn' or 'trajectory', "
                f"got {self.repetition_scope!r}"
            )
        if not self.temperature > 0:
            raise ValueError(f"treepo temperature must be > 0, got {self.temperature}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"treepo max_length must be >= 1, got {self.max_length}")

    @classmethod
    def published(cls) -> TreePOSampler:
        """The paper's defaults: 512-token segments, depth 6, 16 trajectories, div 2."""
        return cls(segment_len=512, max_depth=6, max_width=16, div=2)

    @property
    def trajectories_per_task(self) -> int:
        return self.max_width

    # ------------------------------------------------------------------ growth
    async def grow(self, ctx: SamplerContext) -> None:
        tree = await ctx.new_tree()
        plan: list[tuple[Node, int]] = [(tree.root, min(self.div, self.max_width))]
        fallbacks = 0
        while plan:
            before = self._finished(tree)
            grown = await asyncio.gather(*(self._segment(ctx, tree, n, k) for n, k in plan))
            children = [c for batch in grown for c in batch]
            active = [c for c in children if c.ended is None]
            finished = self._finished(tree)
            if active:
                plan = self._diverge(tree, active, finished, finished - before)
            elif finished < self.max_width and self.fallback and (children or fallbacks == 0):
                fallbacks += 1
                plan = self._fallback(ctx, tree, self.max_width - finished)
            else:
                plan = []
        record = {"fallbacks": fallbacks, "finished": self._finished(tree)}
        tree.root.info = {**tree.root.info, "treepo": record}

    @staticmethod
    def _finished(tree: Tree) -> int:
        return sum(1 for leaf in tree.leaves() if leaf.ended is not None)

    async def _segment(self, ctx: SamplerContext, tree: Tree, node: Node, n: int) -> list[Node]:
        max_tokens = self.segment_len
        if self.max_length is not None:
            left = self.max_length - len(_generated(tree, node))
            if left < 1:
                if node.is_leaf:
                    node.ended = "max_length"
                return []
            max_tokens = min(max_tokens, left)
        children = await ctx.expand_segment(tree, node, n, max_tokens)
        for child in children:
            self._early_stop(ctx, tree, child)
        return children

    def _early_stop(self, ctx: SamplerContext, tree: Tree, node: Node) -> None:
        if node.ended is not None:  # end of episode (the multi-turn EOS) or a failed branch
            return
        generated = _generated(tree, node)
        if self.max_length is not None and len(generated) >= self.max_length:
            node.ended = "max_length"
        elif node.depth >= self.max_depth:
            node.ended = "max_depth"
        elif has_repetition(ctx.template.decode(self._scope(node, generated)),
                            self.repetition_len, self.repetition_count):  # fmt: skip
            node.ended = "repetition"

    def _scope(self, node: Node, generated: list[int]) -> Sequence[int]:
        """The ids the repetition rule reads: the path's, or only the current turn's."""
        if self.repetition_scope == "trajectory":
            return generated
        if node.partial:
            return open_turn(node)[1]
        return open_turn(node.parent)[1] + node.generated_ids

    def _diverge(
        self, tree: Tree, active: list[Node], finished: int, finished_this_step: int
    ) -> list[tuple[Node, int]]:
        total = divergence_total(active=len(active), finished=finished,
                                 finished_this_step=finished_this_step,
                                 max_width=self.max_width, div=self.div)  # fmt: skip
        if self.divergence == "fixed_avg":
            counts = fixed_divergence(len(active), total)
        else:
            cum = [sum(lp for n in tree.path(a) for lp in n.logprobs) for a in active]
            counts = logprob_divergence(cum, total, self.temperature)
        return list(zip(active, counts, strict=True))

    def _fallback(self, ctx: SamplerContext, tree: Tree, remaining: int) -> list[tuple[Node, int]]:
        """Cut finished trajectories back to a random earlier boundary; branch ``div`` ways."""
        leaves = [leaf for leaf in tree.leaves() if leaf.ended is not None]
        ctx.rng.shuffle(leaves)
        leaves.sort(key=lambda leaf: leaf.ended == "failed")  # a failed branch last
        plan: dict[int, list] = {}
        for leaf in leaves:
            if remaining <= 0:
                break
            cuts = [n for n in [tree.root, *tree.path(leaf)[:-1]] if ctx.expandable(n)]
            if not cuts:
                continue
            at = ctx.rng.choice(cuts)
            k = min(self.div, remaining)
            plan.setdefault(at.id, [at, 0])[1] += k
            remaining -= k
        if not plan and remaining > 0:  # nothing finished to cut: restart from the prompt
            plan[tree.root.id] = [tree.root, min(self.div, remaining)]
        return [(node, k) for node, k in plan.values()]
