"""The sampler interface: what a sampler is, and what it may do with one task.

Its own module so that the runner (which calls samplers) and the samplers (which call the task
context the runner implements) both depend on it and not on each other: :class:`SamplerContext`
describes the context as a protocol, :class:`~treegym.harness.runner.TaskContext` implements it.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from .tree import Node, Tree

if TYPE_CHECKING:
    from treegym.policies.template import Template


class SamplerContext(Protocol):
    """What a sampler may do with one task (see :mod:`treegym.harness.runner` for how each
    call is carried out). A sampler never touches envs or the policy directly."""

    trees: list[Tree]
    """The task's trees, in the order :meth:`new_tree` made them."""
    rng: random.Random
    """The task's own random stream (seeded by the run seed and the task)."""

    @property
    def task_id(self) -> str: ...

    @property
    def template(self) -> Template:
        """The run's template (to read generated ids as text)."""

    @property
    def budget_left(self) -> int | None:
        """Generated tokens this task may still use (``None``: no limit)."""

    def expandable(self, node: Node) -> bool: ...

    async def new_tree(self) -> Tree: ...

    async def expand(self, tree: Tree, node: Node, n: int = 1) -> list[Node]: ...

    async def expand_segment(
        self, tree: Tree, node: Node, n: int, max_tokens: int
    ) -> list[Node]: ...

    async def rollout(self, tree: Tree, node: Node) -> Node: ...


def trainable(tree: Tree) -> list[Node]:
    return [leaf for leaf in tree.leaves() if leaf.ended != "failed"]


class Sampler(abc.ABC):
    """Interface: ``grow`` the task's trees; ``select_leaves`` for training."""

    name: str
    estimators: tuple[str, ...] = ("grpo", "node_value")

    @abc.abstractmethod
    async def grow(self, ctx: SamplerContext) -> None: ...

    @property
    @abc.abstractmethod
    def trajectories_per_task(self) -> int:
        """Training trajectories per task when nothing stops early (for progress and budgets)."""

    def select_leaves(self, trees: Sequence[Tree], rng: random.Random) -> dict[int, list[Node]]:
        """Training leaves per tree: every leaf whose branch did not fail (a failed branch's
        reward is not an outcome of the task, so it must not enter a group's statistics)."""
        return {t.index: trainable(t) for t in trees}
