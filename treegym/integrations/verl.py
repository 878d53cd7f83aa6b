"""verl (tested with ``verl`` 0.9.1, no GPU extras): a run folder as verl's own ``DataProto``,
and Tree-GRPO's advantage from verl's own GRPO.

What verl takes from a tree: everything a sample row holds, token for token
(:func:`treegym.verl_batch`'s layout: left-padded ``prompts``, right-padded ``responses``,
``response_mask`` ← ``loss_mask`` so observation tokens are out of the loss, ``old_log_probs``
← the sampling logprobs, ``advantages`` per token — per-turn ``node_value`` credit included —
and ``token_level_rewards`` with the return on the last response token), plus the groups as
non-tensor columns: ``uid`` (the task) and ``tree_uid`` (the tree within it).

``compute_grpo_outcome_advantage`` over ``uid`` is treegym's ``grpo`` (same unbiased std,
epsilon 1e-6, a group of one keeps its reward). Tree-GRPO is that function twice, over ``uid``
and over ``tree_uid``, summed (:func:`tree_grpo_advantage`). verl's own trainer passes only
``uid`` to a registered estimator (``compute_advantage`` in ``ray_trainer``), so inside it a
run's Tree-GRPO comes either from :func:`tree_grpo_advantage` in a custom step or from the
exported ``advantages`` (``advantage="tree_grpo"``) with verl's advantage step skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from verl import DataProto
from verl.trainer.ppo import core_algos

from treegym.harness.loaders import Run, load_run, verl_batch

TESTED_VERSION = "0.9.1"
"""The ``verl`` release this module was written and tested against."""


def to_dataproto(run: Run | str | Path, **kwargs: Any) -> DataProto:
    """The run's samples as verl's ``DataProto`` (``kwargs`` as :func:`treegym.verl_batch`:
    ``indices``, ``advantage``, ...), ``meta_info["temperature"]`` the run's sampling
    temperature (what verl divides logits by when it recomputes logprobs)."""
    run = run if isinstance(run, Run) else load_run(run)
    return DataProto.from_single_dict(verl_batch(run, **kwargs),
                                      meta_info={"temperature": run.temperature})  # fmt: skip


def grpo_advantage(data: DataProto, index_key: str = "uid", epsilon: float = 1e-6) -> torch.Tensor:
    """verl's ``compute_grpo_outcome_advantage`` on ``data``, grouped by ``index_key``."""
    advantages, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=data.batch["token_level_rewards"],
        response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch[index_key],
        epsilon=epsilon,
    )
    return advantages


def tree_grpo_advantage(data: DataProto, epsilon: float = 1e-6) -> torch.Tensor:
    """Tree-GRPO (inter-tree + intra-tree) from verl's own GRPO: over ``uid``, plus over
    ``tree_uid``. Every training sample of a task must be in ``data`` (the groups are the
    batch's rows)."""
    return grpo_advantage(data, "uid", epsilon) + grpo_advantage(data, "tree_uid", epsilon)
