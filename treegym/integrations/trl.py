"""TRL (tested with ``trl`` 1.16.0): treegym as ``GRPOTrainer``'s ``rollout_func``, online
(:class:`TreegymRollout`: the runner grows trees with the model being trained) or offline
(:func:`trl_dataset` + :class:`ReplayRollout`: the samples of a run folder).

What each training leaf gives TRL (the keys a ``rollout_func`` returns):

* ``prompt_ids`` ← the root prompt; ``completion_ids`` ← ``response_ids`` (every turn's
  generated + closing + observation ids, in order); ``logprobs`` ← the sampling logprobs (0.0
  on env tokens); ``env_mask`` ← ``loss_mask``: TRL's field for tokens the environment wrote,
  which it multiplies into the completion mask, so observation tokens are in the forward pass
  but out of the loss (and out of TRL's completion-length metrics).
* ``env_reward`` (the leaf's return) and ``treegym_advantage`` (the sample's ``adv_<name>``)
  as extra fields, which TRL forwards to reward functions: :func:`env_reward` and
  :func:`treegym_advantage`.

What TRL cannot take, and the closest equivalent:

* **Its own advantages only.** ``GRPOTrainer`` computes advantages from rewards over groups
  of ``num_generations`` consecutive completions: ``(r − mean) / (std + 1e-4)``
  (``scale_rewards="group"``) or ``r − mean`` (``"none"``). treegym's sequence-level
  advantage reaches the loss unchanged by making it the reward: ``reward_funcs=
  treegym_advantage`` with ``scale_rewards="none"`` gives ``A − mean_group(A)``, which is
  ``A`` for ``grpo`` and ``tree_grpo`` (both sum to zero over a task's training leaves: a
  z-score over the task, plus one within each tree). ``treepo``'s advantage is not zero-mean
  per task, so it arrives shifted by the task's mean. With ``reward_funcs=env_reward`` and
  the default scaling TRL computes its own GRPO, which differs from ``adv_grpo`` only in the
  epsilon (1e-4 against 1e-6).
* **No per-token advantages.** TRL's advantage is one number per completion; the per-turn
  ``node_value`` credit (``adv_node_value_tokens``) has no field. The closest is its
  sequence-level ``adv_node_value`` (the sum of the turns' values) as the reward; per-token
  credit needs verl (``treegym.integrations.verl``) or OpenRLHF (``Experience.advantages``).
* **No tree.** A group is a flat list: Tree-GRPO's intra-tree groups reach TRL only inside
  ``adv_tree_grpo``; shared trunks are recomputed once per leaf in TRL's forward pass.
* **No sampling logprobs in the loss on the CPU.** Without vLLM, TRL takes the old policy's
  logprobs from its own forward pass (ratio 1 on the first step); ``logprobs`` feed only its
  vLLM importance-sampling correction. Offline samples are therefore trained as if on-policy.

Each group of ``num_generations`` identical prompts is one task; the task must yield exactly
``num_generations`` training leaves (Tree-GRPO: M·K), else a one-line ``ValueError``.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from treegym.harness import Runner, Task, TaskResult
from treegym.harness.export import samples_table
from treegym.harness.loaders import Run, load_run
from treegym.harness.schema import TRL_FIELDS

TESTED_VERSION = "1.16.0"
"""The ``trl`` release this module was written and tested against."""


def rollout_fields(samples: pa.Table, advantage: str) -> dict[str, list[Any]]:
    """The ``rollout_func`` keys (see the module doc) for each row of a samples table."""
    column = f"adv_{advantage}"
    if column not in samples.schema.names:
        have = sorted(n[4:] for n in samples.schema.names if n.startswith("adv_"))
        raise ValueError(f"the samples have no '{advantage}' advantages; they have {have}")
    advantages = samples.column(column).to_pylist()
    if any(a is None for a in advantages):
        raise ValueError(f"{column} has nulls: pick another advantage")
    fields = {key: samples.column(col).to_pylist() for key, col in TRL_FIELDS.items()}
    return {**fields, "treegym_advantage": advantages}


def env_reward(completions: Sequence[Any], env_reward: Sequence[float], **_: Any) -> list[float]:
    """TRL reward function: the leaf's return (TRL then computes its own GRPO advantage)."""
    return [float(r) for r in env_reward]


def treegym_advantage(
    completions: Sequence[Any], treegym_advantage: Sequence[float], **_: Any
) -> list[float]:
    """TRL reward function: treegym's advantage (use with ``scale_rewards="none"``)."""
    return [float(a) for a in treegym_advantage]


def _groups(prompts: Sequence[Any], trainer: Any) -> tuple[list[str], int]:
    """The task ids of TRL's groups of ``num_generations`` repeated prompts, and that size."""
    size = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
    if len(prompts) % size:
        raise ValueError(f"{len(prompts)} prompts are not groups of num_generations={size}")
    groups = [prompts[i : i + size] for i in range(0, len(prompts), size)]
    for group in groups:
        if any(p != group[0] for p in group):
            raise ValueError(f"a group of {size} prompts holds different prompts: {group[:2]}")
    task_ids = [str(g[0]) for g in groups]
    twice = sorted({t for t in task_ids if task_ids.count(t) > 1})
    if twice:
        raise ValueError(f"task {twice[0]!r} is twice in one generation batch (duplicate prompt)")
    return task_ids, size


def _concat(parts: Sequence[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    return {k: [v for part in parts for v in part[k]] for k in parts[0]}


def _checked(task_id: str, fields: dict[str, list[Any]], size: int) -> dict[str, list[Any]]:
    got = len(fields["sample_id"])
    if got != size:
        raise ValueError(
            f"task {task_id!r} has {got} training samples but GRPOConfig.num_generations is "
            f"{size}: make them equal (Tree-GRPO: M·K per task)"
        )
    return fields


def trl_dataset(run: Run | str | Path, advantage: str = "grpo") -> Any:
    """A run folder's samples as a ``datasets.Dataset`` of TRL rollouts: one row per sample,
    ``prompt`` (its task id, the GRPO group) plus the :func:`rollout_fields` keys."""
    import datasets

    run = run if isinstance(run, Run) else load_run(run)
    fields = rollout_fields(run.samples_table, advantage)
    prompt = run.samples_table.column("group_id").to_pylist()
    return datasets.Dataset.from_dict({"prompt": prompt, **fields})


def prompts_dataset(task_ids: Sequence[str]) -> Any:
    """``GRPOTrainer``'s ``train_dataset``: one ``prompt`` per task id, first-seen order."""
    import datasets

    return datasets.Dataset.from_dict({"prompt": list(dict.fromkeys(task_ids))})


class ReplayRollout:
    """``rollout_func`` that answers each task id with that task's samples from a
    :func:`trl_dataset` (offline training on a run folder)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.rows: dict[str, list[int]] = {}
        for i, prompt in enumerate(dataset["prompt"]):
            self.rows.setdefault(prompt, []).append(i)

    def __call__(self, prompts: Sequence[Any], trainer: Any) -> dict[str, list[Any]]:
        task_ids, size = _groups(prompts, trainer)
        parts = []
        for task_id in task_ids:
            if task_id not in self.rows:
                raise ValueError(f"prompt {task_id!r} is not a task of the replayed run")
            rows = self.dataset.select(self.rows[task_id]).remove_columns("prompt").to_dict()
            parts.append(_checked(task_id, rows, size))
        return _concat(parts)


class TreegymRollout:
    """``rollout_func`` that grows each task's trees with ``runner`` (its sampler, env and
    policy) and returns the training leaves. Before a step's rollouts, the policy gets the
    trainer's current weights (``Policy.load_weights`` from a folder this object owns, as
    SGLang's ``/update_weights_from_disk``), so the rollouts are on-policy; a policy without
    ``load_weights`` (scripted) keeps its own behaviour."""

    def __init__(
        self, runner: Runner, tasks: Sequence[Task] | Mapping[str, Task], advantage: str = "grpo"
    ) -> None:
        if advantage not in runner.sampler.estimators:
            raise ValueError(f"the sampler computes {list(runner.sampler.estimators)}, "
                             f"not {advantage!r}")  # fmt: skip
        self.runner, self.advantage = runner, advantage
        self.tasks = dict(tasks) if isinstance(tasks, Mapping) else {t.task_id: t for t in tasks}
        self.results: list[TaskResult] = []
        """Every task result of the last call (trees included), for inspection or export."""
        self._weights = tempfile.TemporaryDirectory(prefix="treegym-trl-weights-")
        self._synced_step: int | None = None
        # one loop for every call: executors and policies may hold loop-bound state (pipes)
        self._loop = asyncio.new_event_loop()

    def __call__(self, prompts: Sequence[Any], trainer: Any) -> dict[str, list[Any]]:
        task_ids, size = _groups(prompts, trainer)
        unknown = [t for t in task_ids if t not in self.tasks]
        if unknown:
            raise ValueError(f"prompt {unknown[0]!r} is not one of the rollout's task ids")
        self._sync_weights(trainer)
        self.results = self._loop.run_until_complete(self._grow([self.tasks[t] for t in task_ids]))
        estimators = list(self.runner.sampler.estimators)
        return _concat([
            _checked(r.task.task_id, rollout_fields(samples_table(r, "trl", estimators),
                                                    self.advantage), size)
            for r in self.results
        ])  # fmt: skip

    async def _grow(self, tasks: list[Task]) -> list[TaskResult]:
        """Results in the prompts' order (the runner yields them as they finish)."""
        done = {}
        async for result in self.runner.run(tasks):
            if result.error:
                raise RuntimeError(f"task {result.task.task_id!r} failed: {result.error}")
            done[id(result.task)] = result
        return [done[id(t)] for t in tasks]

    def close(self) -> None:
        """Close the runner's executor and policy, then the rollout's event loop."""
        self._loop.run_until_complete(self.runner.executor.close())
        self._loop.run_until_complete(self.runner.policy.aclose())
        self._loop.close()

    def _sync_weights(self, trainer: Any) -> None:
        step = trainer.state.global_step
        load = getattr(self.runner.policy, "load_weights", None)
        if load is None or step == self._synced_step:
            return
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(self._weights.name)
        self._loop.run_until_complete(load(self._weights.name, weight_version=f"trl-step-{step}"))
        self._synced_step = step
