"""The tree-rollout harness: tree model, samplers, runner, env executors, advantages, budgets.

Dependencies point one way: the harness uses ``treegym.envs`` and ``treegym.policies`` through
their public interfaces; neither knows about trees.
"""

from .advantages import ESTIMATORS, Advantages, grpo, node_value, node_values, tree_grpo
from .budget import Budget, task_budget
from .episode import EpisodeResult, play_episode
from .executor import EnvExecutor, EnvWorkerError, InProcessExecutor, ProcessExecutor, StateHandle
from .runner import PrefixDriftError, Runner, Task, TaskContext, TaskResult
from .samplers import SAMPLERS, ChainSampler, Sampler, TreeGRPOSampler
from .tree import Node, NodeStats, Tree

__all__ = [
    "ESTIMATORS",
    "SAMPLERS",
    "Advantages",
    "Budget",
    "ChainSampler",
    "EnvExecutor",
    "EnvWorkerError",
    "EpisodeResult",
    "InProcessExecutor",
    "Node",
    "NodeStats",
    "PrefixDriftError",
    "ProcessExecutor",
    "Runner",
    "Sampler",
    "StateHandle",
    "Task",
    "TaskContext",
    "TaskResult",
    "Tree",
    "TreeGRPOSampler",
    "grpo",
    "node_value",
    "node_values",
    "play_episode",
    "task_budget",
    "tree_grpo",
]
