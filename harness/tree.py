"""The tree model: nodes are ReAct turns, leaves are trajectories, trees are grouped by task.

The root of a tree is the reset state: it holds the prompt ids (system prompt + first
observation) and no generation. Every other node is one turn — the policy's generated ids
(with their logprobs), the end token the template closed a cut generation with, the env's
answer as observation ids, the reward, whether the episode ended there — plus a handle to the
env state *after* the turn, so the node can be expanded again without replaying its path.

A node stores only its own turn; the full token sequence of a node is the concatenation along
its path (:meth:`Tree.input_ids`), so the shared trunk is stored once however many leaves hang
below it. Nodes use ``__slots__`` and plain tuples: thousands per task stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class NodeStats:
    """What one node cost (all counts are for this node alone)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    env_steps: int = 0
    policy_s: float = 0.0
    env_s: float = 0.0
    restores: int = 0
    restore_s: float = 0.0
    snapshot_s: float = 0.0


@dataclass(eq=False, slots=True)
class Node:
    """One ReAct turn (or the root: the reset state)."""

    id: int
    parent: Node | None
    depth: int
    """Nodes from the root (root = 0): turns, or TreePO segments in a ``treepo`` tree."""
    generated_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    closing_ids: tuple[int, ...] = ()
    observation_ids: tuple[int, ...] = ()
    action: str = ""
    """What the env received (the parsed action, or the malformed-action marker)."""
    parse_error: str | None = None
    finish_reason: str = ""
    policy_version: str | None = None
    """Weight version of the policy that generated this node (``GenerateResult.weight_version``)."""
    observation: str = ""
    """The env's text answer (for reading trees; the ids above are what the model saw)."""
    info: dict[str, Any] = field(default_factory=dict)
    reward: float = 0.0
    ended: str | None = None
    """Why the trajectory stops here: ``terminated``, ``truncated`` (env step limit),
    ``context`` (context-length guard), ``budget`` (token budget), ``failed`` (error),
    ``gated`` (stopped by a sampler's gate, e.g. Selective Rollout)."""
    error: str | None = None
    """The exception text when this branch failed (env or policy error)."""
    state: Any = None
    """Env-state handle after this turn (owned by the executor that made it)."""
    stats: NodeStats = field(default_factory=NodeStats)
    children: list[Node] = field(default_factory=list)
    partial: bool = False
    """The node holds a segment of a turn whose generation is not finished (TreePO): only
    generated ids, no closing or observation ids, no env step; the env state is that of its
    nearest non-partial ancestor (:func:`open_turn`), and its children continue the turn."""

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def turn_ids(self) -> tuple[int, ...]:
        """The ids this node adds to its parent's sequence."""
        return self.generated_ids + self.closing_ids + self.observation_ids


def open_turn(node: Node) -> tuple[Node, tuple[int, ...], tuple[float, ...]]:
    """Where ``node``'s unfinished turn started: the nearest non-partial ancestor-or-self (its
    env state and info are the turn's) and the ids and logprobs generated since then."""
    ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    while node.partial and node.parent is not None:
        ids, logprobs = node.generated_ids + ids, node.logprobs + logprobs
        node = node.parent
    return node, ids, logprobs


@dataclass(eq=False)
class Tree:
    """All turns grown from one reset of one task."""

    task_id: str
    index: int
    """Which tree of the task (Tree-GRPO grows M per task)."""
    root: Node
    prompt_ids: tuple[int, ...]
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes = [self.root]

    def add_child(self, parent: Node, **turn: Any) -> Node:
        node = Node(id=len(self.nodes), parent=parent, depth=parent.depth + 1, **turn)
        parent.children.append(node)
        self.nodes.append(node)
        return node

    def path(self, node: Node) -> list[Node]:
        """Nodes from the root's first child down to ``node`` (the turns of its trajectory)."""
        out = []
        while node.parent is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def input_ids(self, node: Node) -> list[int]:
        """The full token sequence up to and including ``node``'s observation."""
        ids = list(self.prompt_ids)
        for turn in self.path(node):
            ids += turn.turn_ids
        return ids

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if n.is_leaf and n.parent is not None]

    def returns(self, leaf: Node) -> float:
        """A trajectory's reward: the sum of its turns' rewards."""
        return sum(n.reward for n in self.path(leaf))

    def walk(self) -> Iterator[Node]:
        """Depth-first, children in creation order."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def unique_tokens(self) -> int:
        """Tokens stored once per node: the lower bound on what any engine must compute."""
        return len(self.prompt_ids) + sum(len(n.turn_ids) for n in self.nodes)

    def actions(self, node: Node) -> tuple[str, ...]:
        return tuple(n.action for n in self.path(node) if not n.partial)
