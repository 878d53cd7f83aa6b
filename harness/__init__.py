"""The tree-rollout harness: tree model, samplers, runner, env executors, advantages, budgets.

Dependencies point one way: the harness uses ``treegym.envs`` and ``treegym.policies`` through
their public interfaces; neither knows about trees.
"""

from .advantages import (
    ESTIMATORS,
    Advantages,
    grpo,
    node_value,
    node_values,
    tree_grpo,
    treepo,
)
from .budget import Budget, task_budget
from .episode import EpisodeResult, play_episode
from .executor import EnvExecutor, EnvWorkerError, InProcessExecutor, ProcessExecutor, StateHandle
from .export import ExportError, RunMismatchError, RunWriter
from .loaders import (
    NotARunError,
    Run,
    RunLoadError,
    SchemaVersionError,
    TorchRunDataset,
    collate,
    load_run,
    to_hf_dataset,
    verl_batch,
    verl_batches,
)
from .runner import PrefixDriftError, Runner, Task, TaskContext, TaskResult
from .sampler_base import Sampler, SamplerContext
from .sampler_registry import SAMPLERS
from .samplers import ChainSampler, TreeGRPOSampler
from .schema import SCHEMA_VERSION
from .selective import GatedSampler
from .trace import LogisticPredictor, PredictorError, SuccessPredictor, TraceSampler
from .tree import Node, NodeStats, Tree, open_turn
from .treepo import TreePOSampler, whiten_batch

__all__ = [
    "ESTIMATORS",
    "SAMPLERS",
    "SCHEMA_VERSION",
    "Advantages",
    "Budget",
    "ChainSampler",
    "EnvExecutor",
    "EnvWorkerError",
    "EpisodeResult",
    "ExportError",
    "GatedSampler",
    "InProcessExecutor",
    "LogisticPredictor",
    "Node",
    "NodeStats",
    "NotARunError",
    "PredictorError",
    "PrefixDriftError",
    "ProcessExecutor",
    "Run",
    "RunLoadError",
    "RunMismatchError",
    "RunWriter",
    "Runner",
    "Sampler",
    "SamplerContext",
    "SchemaVersionError",
    "StateHandle",
    "SuccessPredictor",
    "Task",
    "TaskContext",
    "TaskResult",
    "TorchRunDataset",
    "TraceSampler",
    "Tree",
    "TreeGRPOSampler",
    "TreePOSampler",
    "collate",
    "grpo",
    "load_run",
    "node_value",
    "node_values",
    "open_turn",
    "play_episode",
    "task_budget",
    "to_hf_dataset",
    "tree_grpo",
    "treepo",
    "verl_batch",
    "verl_batches",
    "whiten_batch",
]
