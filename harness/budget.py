"""Budget accounting: every figure a report shows comes from these counters.

Per node the counts live in :class:`~treegym.harness.tree.NodeStats`; :func:`task_budget`
sums a task's trees, and :class:`Budget` adds up across tasks. ``computed_prompt_tokens`` is
what an engine had to run (prompt minus prefix-cache hits); ``unique_tokens`` is the tree's own
size, the lower bound any engine must compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from .tree import Tree


@dataclass
class Budget:
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    env_steps: int = 0
    resets: int = 0
    restores: int = 0
    restore_s: float = 0.0
    snapshot_s: float = 0.0
    env_s: float = 0.0
    policy_s: float = 0.0
    wall_s: float = 0.0
    leaves: int = 0
    distinct_leaves: int = 0
    groups: int = 0
    zero_variance_groups: int = 0
    unique_tokens: int = 0
    failed_branches: int = 0

    @property
    def computed_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def cache_hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def policy_busy(self) -> float:
        return self.policy_s / self.wall_s if self.wall_s else 0.0

    def __iadd__(self, other: Budget) -> Budget:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def as_dict(self) -> dict[str, float]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(computed_prompt_tokens=self.computed_prompt_tokens,
                   cache_hit_rate=round(self.cache_hit_rate, 4))  # fmt: skip
        return out


def task_budget(trees: Sequence[Tree], training: dict[int, list] | None = None) -> Budget:
    """Counters of one task (one group); ``training`` are the leaves kept for training."""
    b = Budget(groups=1)
    returns, paths = [], set()
    for tree in trees:
        b.resets += 1
        b.unique_tokens += tree.unique_tokens()
        b.env_s += tree.root.stats.env_s
        b.snapshot_s += tree.root.stats.snapshot_s
        for node in tree.nodes[1:]:
            s = node.stats
            b.generated_tokens += len(node.generated_ids)
            b.prompt_tokens += s.prompt_tokens
            b.cached_tokens += s.cached_tokens
            b.policy_s += s.policy_s
            b.env_s += s.env_s
            b.restores += s.restores
            b.restore_s += s.restore_s
            b.snapshot_s += s.snapshot_s
            b.env_steps += s.env_steps
            b.failed_branches += node.ended == "failed"
        leaves = training[tree.index] if training else tree.leaves()
        for leaf in leaves:
            returns.append(tree.returns(leaf))
            paths.add(tree.actions(leaf))
    b.leaves = len(returns)
    b.distinct_leaves = len(paths)
    b.zero_variance_groups = int(len(set(returns)) <= 1)
    return b
