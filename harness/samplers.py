"""Samplers decide what to grow for one task: how many trees, which nodes to expand, when to stop.

* ``chain`` — G independent trajectories per task: the GRPO baseline.
* ``tree_grpo`` — Tree-GRPO (Ji et al., "Tree Search for LLM Agent Reinforcement Learning",
  arXiv 2509.21240; reference code AMAP-ML/Tree-GRPO): M trees per task, one full chain from
  each root; then L rounds in which every tree draws N nodes uniformly *with replacement* from
  {root} ∪ {non-leaf nodes} and grows a new branch from each to the end; optionally K leaves
  per tree are kept (at random) for training. Leaves per tree = 1 + N·L; trajectories per task
  = M·K. The reference code (``search_r1/llm_agent/generation_ts.py``,
  ``GenerationTreeSearchConfig``) defaults to m=4, n=2, l=1, k=4, but with n=2, l=1 a tree has
  3 leaves and its own ``sample_leaf`` asserts ``k <= leaves``, so that default cannot run;
  treegym's default (``reference()``) keeps M=4, N=2, L=1 and caps K at the 3 leaves. Every
  published script (``train_*_tree_search.sh``) uses M=2, N=2, L=1, K=3: ``published()``.
  Expansion candidates and sampling with replacement follow ``TreeNode.get_expand_node``.

Samplers work only through a :class:`~treegym.harness.sampler_base.SamplerContext`; they never
touch envs. Adaptive samplers (TreePO, TRACE, Selective Rollout) implement the same interface;
:mod:`~treegym.harness.sampler_registry` names them all.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .sampler_base import Sampler, SamplerContext, trainable
from .tree import Node, Tree


@dataclass
class ChainSampler(Sampler):
    """G independent trajectories from the task's reset state."""

    group_size: int = 4
    name: str = "chain"

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"chain group_size must be >= 1, got {self.group_size}")

    @property
    def trajectories_per_task(self) -> int:
        return self.group_size

    async def grow(self, ctx: SamplerContext) -> None:
        trees = [await ctx.new_tree() for _ in range(self.group_size)]
        await asyncio.gather(*(ctx.rollout(t, t.root) for t in trees))


@dataclass
class TreeGRPOSampler(Sampler):
    """Tree-GRPO's M/N/L/K tree growth (see the module docstring)."""

    m: int = 4
    n: int = 2
    l: int = 1  # noqa: E741 - the paper's name
    k: int | None = 3
    name: str = "tree_grpo"
    estimators: tuple[str, ...] = ("tree_grpo", "grpo", "node_value")

    def __post_init__(self) -> None:
        for label, value, low in (("M", self.m, 1), ("N", self.n, 1), ("L", self.l, 0)):
            if value < low:
                raise ValueError(f"tree_grpo {label} must be >= {low}, got {value}")
        leaves = 1 + self.n * self.l
        if self.k is not None and not 1 <= self.k <= leaves:
            raise ValueError(
                f"tree_grpo K={self.k} must be between 1 and the leaves per tree 1 + N·L = {leaves}"
            )

    @classmethod
    def reference(cls) -> TreeGRPOSampler:
        """The reference code's M=4, N=2, L=1 with K capped at the 3 leaves per tree."""
        return cls(m=4, n=2, l=1, k=3)

    @classmethod
    def published(cls) -> TreeGRPOSampler:
        """The setting of every published Tree-GRPO script: M=2, N=2, L=1, K=3."""
        return cls(m=2, n=2, l=1, k=3)

    @property
    def trajectories_per_task(self) -> int:
        return self.m * (self.k if self.k is not None else 1 + self.n * self.l)

    async def grow(self, ctx: SamplerContext) -> None:
        trees = [await ctx.new_tree() for _ in range(self.m)]
        await asyncio.gather(*(ctx.rollout(t, t.root) for t in trees))
        for _ in range(self.l):
            jobs = []
            for tree in trees:
                candidates = [n for n in tree.nodes if n.children and ctx.expandable(n)]
                candidates = candidates or [tree.root]
                picks = Counter(ctx.rng.choice(candidates).id for _ in range(self.n))
                # A node drawn twice grows both branches in one request batch (shared trunk).
                jobs += [
                    self._branch(ctx, tree, tree.nodes[i], count) for i, count in picks.items()
                ]
            await asyncio.gather(*jobs)

    @staticmethod
    async def _branch(ctx: SamplerContext, tree: Tree, node: Node, count: int) -> None:
        children = await ctx.expand(tree, node, count)
        await asyncio.gather(*(ctx.rollout(tree, c) for c in children if c.ended is None))

    def select_leaves(self, trees: Sequence[Tree], rng: random.Random) -> dict[int, list[Node]]:
        out = {}
        for tree in trees:
            leaves = trainable(tree)
            out[tree.index] = (
                leaves if self.k is None or len(leaves) <= self.k else rng.sample(leaves, self.k)
            )
        return out
