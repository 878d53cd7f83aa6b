"""A run built by hand, small enough that every figure about it is worked out on paper below.

Tests compare what the code computes (budget, node values, advantages, summary, report,
loaders) with these numbers, never with a second run of the code's own formula.

Task ``a`` — one tree, prompt ``(1, 2, 3, 4)``::

    root ─ n1 "go east"   gen (10, 11)      close (99,)  obs (20, 21, 22)  r 0
           ├─ n2 "take coin"  gen (12, 13, 14) close ()     obs (23,)   r 1.0  won
           └─ n3 "look"       gen (15,)        close (99,)  obs (24, 25) r 0    lost (truncated)
         ─ n4 "open chest" gen (16, 17)      close (99,)  obs (26,)        r 0.5 lost

n3 is grown but not kept for training (as when Tree-GRPO's K is below the leaves grown).

Task ``b`` — two one-turn trees (a chain group), prompt ``(5, 6, 7, 8, 9)``, both ``m1 "look"``
gen ``(30,)`` close ``(99,)`` obs ``(40,)`` r 0, lost: identical trajectories, zero variance.
"""

from __future__ import annotations

from treegym.harness import RunWriter, Task
from treegym.harness.advantages import ESTIMATORS
from treegym.harness.budget import task_budget
from treegym.harness.runner import TaskResult
from treegym.harness.tree import Node, NodeStats, Tree

ESTIMATOR_NAMES = ("grpo", "node_value")

# ------------------------------------------------------------------ worked out by hand
RETURNS = {("a", 0, 2): 1.0, ("a", 0, 4): 0.5, ("b", 0, 1): 0.0, ("b", 1, 1): 0.0}
"""Trajectory returns per training leaf (task, tree, leaf)."""
VALUES = {("a", 0): {0: 0.5, 1: 0.5, 2: 1.0, 3: 0.0, 4: 0.5},  # n1: (1 + 0) / 2; root: 1.5 / 3
          ("b", 0): {0: 0.0, 1: 0.0}, ("b", 1): {0: 0.0, 1: 0.0}}  # fmt: skip
"""V(node) = mean return of every leaf below it (training or not)."""
NODE_VALUE_TURNS = {("a", 0, 2): [0.0, 0.5], ("a", 0, 4): [0.0], ("b", 0, 1): [0.0],
                    ("b", 1, 1): [0.0]}  # fmt: skip
"""node_value per turn: V(turn) − V(parent), e.g. n2: [V(n1) − V(root), V(n2) − V(n1)]."""
Z = 0.25 / (0.5**0.5 / 2 + 1e-6)  # task a's returns 1, 0.5: mean 0.75, unbiased std √2 / 4
GRPO = {("a", 0, 2): Z, ("a", 0, 4): -Z, ("b", 0, 1): 0.0, ("b", 1, 1): 0.0}
RESPONSES = {  # generated ids (mask 1) then closing + observation ids (mask 0), turn by turn
    ("a", 0, 2): ([10, 11, 99, 20, 21, 22, 12, 13, 14, 23], [1, 1, 0, 0, 0, 0, 1, 1, 1, 0]),
    ("a", 0, 4): ([16, 17, 99, 26], [1, 1, 0, 0]),
    ("b", 0, 1): ([30, 99, 40], [1, 0, 0]),
    ("b", 1, 1): ([30, 99, 40], [1, 0, 0]),
}
LOGPROBS = {"n1": [-0.1, -0.2], "n2": [-0.3, -0.4, -0.5], "n3": [-0.6], "n4": [-0.7, -0.8],
            "m1": [-0.9]}  # fmt: skip
FIGURES = {
    "tasks": 2,
    "leaves (training)": 4,
    "leaves grown": 5,
    "distinct trajectories": 3,  # training leaves' action paths: a: 2; b: ("look",) twice
    "success rate": 0.25,  # only n2 won (info["won"])
    "mean reward": 0.375,  # (1 + 0.5 + 0 + 0) / 4
    "zero-variance groups": 0.5,  # b's returns are all 0; a's are not
    "tokens generated": 10,  # every node: a: 2 + 3 + 1 + 2; b: 1 + 1
    "chain-baseline estimate": 9,  # per training leaf, its path's generated ids: 5 + 2 + 1 + 1
    "generated / chain": 10 / 9,
    "prompt tokens": 38,  # a: 4 + 10 + 10 + 4; b: 5 + 5
    "prefix-cache hit rate": 25 / 38,  # cached: a 0 + 9 + 9 + 3; b 0 + 4
    "computed prompt tokens": 13,
    "failed branches": 0,
}
TRUNK_TOKENS, BRANCH_TOKENS = 7, 3  # trunks: a's n1, n2 (5); b's two m1 (2). Branches: n3, n4
UNIQUE_TOKENS = {"a": 4 + 6 + 4 + 4 + 4, "b": 2 * (5 + 3)}  # prompt + each node's turn ids once


def _tree(task: str, index: int, prompt: tuple[int, ...]) -> Tree:
    return Tree(task, index, Node(0, None, 0, observation=f"{task} start"), prompt)


def _turn(tree: Tree, parent: Node, action: str, gen, lp: str, close, obs, reward, ended, won,
          prompt_tokens: int, cached: int) -> Node:  # fmt: skip
    info = {} if won is None else {"won": won}
    return tree.add_child(parent, generated_ids=tuple(gen), logprobs=tuple(LOGPROBS[lp]),
                          closing_ids=tuple(close), observation_ids=tuple(obs), action=action,
                          observation=f"after {action}", reward=reward, ended=ended, info=info,
                          finish_reason="stop",
                          stats=NodeStats(prompt_tokens=prompt_tokens, cached_tokens=cached,
                                          env_steps=1))  # fmt: skip


def results() -> list[TaskResult]:
    """The two tasks as the runner would hand them to a writer (real budget and advantages)."""
    a = _tree("a", 0, (1, 2, 3, 4))
    n1 = _turn(a, a.root, "go east", (10, 11), "n1", (99,), (20, 21, 22), 0.0, None, None, 4, 0)
    _turn(a, n1, "take coin", (12, 13, 14), "n2", (), (23,), 1.0, "terminated", True, 10, 9)
    _turn(a, n1, "look", (15,), "n3", (99,), (24, 25), 0.0, "truncated", False, 10, 9)
    _turn(a, a.root, "open chest", (16, 17), "n4", (99,), (26,), 0.5, "terminated", False, 4, 3)
    bs = [_tree("b", i, (5, 6, 7, 8, 9)) for i in range(2)]
    for tree, cached in zip(bs, (0, 4), strict=True):
        _turn(tree, tree.root, "look", (30,), "m1", (99,), (40,), 0.0, "terminated", False, 5,
              cached)  # fmt: skip
    out = []
    for task, trees in ((Task("a", {"task": 0}, seed=0), [a]), (Task("b", {"task": 1}, 1), bs)):
        training = {t.index: [n for n in t.leaves() if (t.task_id, t.index, n.id) in RETURNS]
                    for t in trees}  # fmt: skip
        advantages = {name: ESTIMATORS[name](trees, training) for name in ESTIMATOR_NAMES}
        out.append(TaskResult(task, trees, training, advantages, task_budget(trees, training)))
    return out


def write(path) -> list[TaskResult]:
    """Write the run folder (finalized) at ``path``; return the results written."""
    res = results()
    with RunWriter(path, config={"env": "hand-built"}, estimators=list(ESTIMATOR_NAMES)) as w:
        w.write_all(res)
    return res
