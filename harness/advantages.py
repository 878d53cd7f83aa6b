"""Advantage estimators: pure functions of a task's trees (its group).

Each returns an :class:`Advantages` naming its estimator, with one value per training leaf
(``per_leaf``, keyed by ``(tree index, node id)``) and, for per-turn estimators, one value per
turn of the leaf's path (``per_turn``). Formulas from ``../shared/ALGORITHMS.md``:

* ``grpo`` — chain GRPO (DeepSeekMath; verl's ``compute_grpo_outcome_advantage``):
  A_i = (R_i − mean_G R) / (std_G R + 1e-6), std unbiased; a group of one uses mean 0 and
  std 1 (so A = R), as verl and Tree-GRPO's reference code do.
* ``tree_grpo`` — Tree-GRPO (arXiv 2509.21240, AMAP-ML/Tree-GRPO): A_i = A_inter,i + A_intra,i,
  the z-score of R_i over all leaves of the task plus the z-score within its own tree.
* ``node_value`` — turn-level credit from the tree (SPO-tree / TreeRL style): V(node) = mean
  reward of the leaves below it; the advantage of a turn is V(node) − V(parent).
* ``treepo`` — TreePO's segment-level advantage (arXiv 2508.17445; reference code
  multimodal-art-projection/TreePO, ``compute_tree_reinforce_plus_plus_baseline_outcome_
  advantage``): for leaf i and each depth d, G_d(i) = training leaves sharing i's path to depth d
  (d = 0: the whole task); a_{i,d} = R_i − mean_{G_d(i)} R, used for d = 0 always and for d ≥ 1
  where |G_d(i)| > 1; A_i = mean_d a_{i,d} (``average``). Not whitened here: the paper whitens
  over the whole training batch (:func:`treegym.harness.treepo.whiten_batch`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .tree import Node, Tree

EPS = 1e-6
LeafKey = tuple[int, int]


@dataclass
class Advantages:
    estimator: str
    per_leaf: dict[LeafKey, float] = field(default_factory=dict)
    per_turn: dict[LeafKey, list[float]] = field(default_factory=dict)


def zscores(values: Sequence[float]) -> list[float]:
    """(x − mean) / (unbiased std + 1e-6); a single value keeps mean 0, std 1."""
    if len(values) <= 1:
        return [float(v) for v in values]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return [(v - mean) / (std + EPS) for v in values]


def _leaves(trees: Sequence[Tree], leaves: dict[int, list[Node]] | None) -> list[tuple[Tree, Node]]:
    """Training leaves: all leaves, or the sampler's selection (``{tree index: [leaf]}``)."""
    return [(t, leaf) for t in trees for leaf in (leaves[t.index] if leaves else t.leaves())]


def grpo(trees: Sequence[Tree], leaves: dict[int, list[Node]] | None = None) -> Advantages:
    pairs = _leaves(trees, leaves)
    scores = zscores([t.returns(leaf) for t, leaf in pairs])
    return Advantages(
        "grpo", {(t.index, leaf.id): a for (t, leaf), a in zip(pairs, scores, strict=True)}
    )


def tree_grpo(trees: Sequence[Tree], leaves: dict[int, list[Node]] | None = None) -> Advantages:
    pairs = _leaves(trees, leaves)
    inter = dict(zip(((t.index, n.id) for t, n in pairs),
                     zscores([t.returns(n) for t, n in pairs]), strict=True))  # fmt: skip
    out = Advantages("tree_grpo")
    for tree in trees:
        mine = [n for t, n in pairs if t is tree]
        if not mine:
            continue
        for node, intra in zip(mine, zscores([tree.returns(n) for n in mine]), strict=True):
            out.per_leaf[(tree.index, node.id)] = inter[(tree.index, node.id)] + intra
    return out


def node_values(tree: Tree) -> dict[int, float]:
    """V(node) = mean return of the leaves below it (a leaf's V is its own return)."""
    totals: dict[int, tuple[float, int]] = {}
    for node in reversed(tree.nodes):  # children are created after their parents
        if node.is_leaf and node.parent is not None:
            totals[node.id] = (tree.returns(node), 1)
        elif node.children:
            s = sum(totals[c.id][0] for c in node.children if c.id in totals)
            n = sum(totals[c.id][1] for c in node.children if c.id in totals)
            if n:
                totals[node.id] = (s, n)
    return {nid: s / n for nid, (s, n) in totals.items()}


def node_value(trees: Sequence[Tree], leaves: dict[int, list[Node]] | None = None) -> Advantages:
    out = Advantages("node_value")
    for tree in trees:
        values = node_values(tree)
        for t, leaf in _leaves([tree], leaves):
            turns = [values[n.id] - values[n.parent.id] for n in t.path(leaf)]
            out.per_turn[(t.index, leaf.id)] = turns
            out.per_leaf[(t.index, leaf.id)] = sum(turns)
    return out


def subgroup_advantages(
    trees: Sequence[Tree], leaves: dict[int, list[Node]] | None = None, weighting: str = "average"
) -> dict[LeafKey, float]:
    """TreePO's A_i (see the module docstring); ``weighting="group_size"`` weighs each a_{i,d}
    by |G_d(i)| (the reference's other aggregation)."""
    if weighting not in ("average", "group_size"):
        raise ValueError(f"weighting must be 'average' or 'group_size', got {weighting!r}")
    pairs = _leaves(trees, leaves)
    paths = {(t.index, leaf.id): [t.index, *(n.id for n in t.path(leaf))] for t, leaf in pairs}
    rewards = {(t.index, leaf.id): t.returns(leaf) for t, leaf in pairs}
    groups: dict[tuple[int, ...], list[float]] = {}
    for key, path in paths.items():
        for d in range(len(path)):  # prefix of length d + 1: (tree, node at depth 1..d)
            groups.setdefault((-1,) if d == 0 else tuple(path[: d + 1]), []).append(rewards[key])
    out = {}
    for key, path in paths.items():
        terms = []
        for d in range(len(path)):
            group = groups[(-1,) if d == 0 else tuple(path[: d + 1])]
            if d == 0 or len(group) > 1:
                mean = sum(group) / len(group) if len(group) > 1 else 0.0
                terms.append((rewards[key] - mean, len(group)))
        if weighting == "average":
            out[key] = sum(a for a, _ in terms) / len(terms)
        else:
            out[key] = sum(a * g for a, g in terms) / sum(g for _, g in terms)
    return out


def treepo(trees: Sequence[Tree], leaves: dict[int, list[Node]] | None = None) -> Advantages:
    return Advantages("treepo", subgroup_advantages(trees, leaves))


ESTIMATORS = {"grpo": grpo, "tree_grpo": tree_grpo, "node_value": node_value, "treepo": treepo}
