"""OpenRLHF (tested with ``openrlhf`` 0.11.2, installed ``--no-deps`` on a CPU): a run folder
as OpenRLHF's own ``Experience`` batches, and its own ``PolicyLoss``.

Layout: OpenRLHF's multi-turn agent samples (``SamplesGenerator.
_process_response_into_experience``): ``sequences`` = ``prompt_ids ++ response_ids`` (one
row, no prompt padding), ``action_mask`` = the token mask shifted by one (entry t says
whether token t + 1 is an action: ``loss_mask`` on the response, 0 on the prompt), and the
per-step fields aligned with it: ``rollout_log_probs`` ← the sampling logprobs,
``advantages`` ← ``adv_<name>`` on generated tokens (or per token for ``node_value``).
``rewards``/``scores`` ← the return; ``truncated`` ← the env did not end the trajectory
(``ended`` is not ``terminated``); ``prompts`` ← the task (the group), ``labels`` ← the sample
id. ``Experience.concat_experiences`` then right-pads them into a batch, as OpenRLHF's
generator does.

What does not run on a CPU, and why (measured with 0.11.2):

* ``openrlhf.models`` (``Actor``, and so the package import of ``PolicyLoss``): its
  ``__init__`` imports ``Actor``, whose ``ring_attn_utils`` imports ``flash_attn`` at module
  level, and ``flash-attn==2.8.3`` builds only with CUDA's ``nvcc``. :func:`policy_loss_class`
  loads ``openrlhf/models/loss.py`` (and its ``models/utils.py``, which needs ``deepspeed``:
  that installs and imports on the CPU) from OpenRLHF's own files without that ``__init__``.
* ``RemoteExperienceMaker`` (OpenRLHF's advantage estimators, ``group_norm`` included) and
  ``SamplesGenerator``: they import Ray actors built on ``Actor`` and vLLM. treegym's own
  advantages go into ``Experience.advantages`` instead.
* ``NaiveReplayBuffer``: its ``__init__`` calls ``torch.cuda.current_device()``. Its steps
  (``split_experience_batch``, ``remove_padding_in_sequences``, ``make_experience_batch``)
  are plain functions and run.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

import torch
from openrlhf.trainer.ppo_utils.experience import Experience

from treegym.harness.loaders import Run, TorchRunDataset, load_run

TESTED_VERSION = "0.11.2"
"""The ``openrlhf`` release this module was written and tested against."""


def experience(item: dict[str, Any], task_id: str, truncated: bool) -> Experience:
    """One sample (a :class:`~treegym.harness.loaders.TorchRunDataset` item) as a one-row
    ``Experience`` in OpenRLHF's agent layout (see the module doc)."""
    prompt = item["prompt_ids"]
    tokens = torch.cat([prompt, item["response_ids"]])
    zeros = torch.zeros(len(prompt))
    mask = torch.cat([zeros, item["loss_mask"].float()])[1:]
    ones = mask.nonzero().flatten()
    reward = item["reward"].reshape(1)
    return Experience(
        sequences=tokens[None],
        attention_mask=torch.ones_like(tokens)[None],
        action_mask=mask.bool()[None],
        rollout_log_probs=torch.cat([zeros, item["logprobs"]])[1:][None],
        advantages=torch.cat([zeros, item["advantages"]])[1:][None],
        rewards=reward,
        scores=reward,
        response_length=torch.tensor([int(ones[-1] - ones[0] + 1) if len(ones) else 0]),
        truncated=torch.tensor([truncated]),
        total_length=torch.tensor([float(len(tokens))]),
        prompts=[task_id],
        labels=[item["sample_id"]],
        info={"reward": reward},
    )


def experiences(run: Run | str | Path, advantage: str = "grpo", token_level: bool | None = None
                ) -> list[Experience]:  # fmt: skip
    """Every sample of the run as a one-row ``Experience``, in ``samples.parquet`` order."""
    run = run if isinstance(run, Run) else load_run(run)
    ds = TorchRunDataset(run, advantage, token_level)
    cols = run.samples_table.select(["task_id", "ended"]).to_pydict()
    return [experience(ds[i], cols["task_id"][i], cols["ended"][i] != "terminated")
            for i in range(len(ds))]  # fmt: skip


def experience_batch(run: Run | str | Path, **kwargs: Any) -> Experience:
    """:func:`experiences` merged by OpenRLHF's ``Experience.concat_experiences`` (right-padded;
    ``sequences`` with the run's pad id)."""
    run = run if isinstance(run, Run) else load_run(run)
    return Experience.concat_experiences(experiences(run, **kwargs), run.pad_token_id)


def policy_loss_class() -> type:
    """OpenRLHF's ``PolicyLoss``: from ``openrlhf.models`` where it imports, else from its
    ``loss.py`` under a package object that skips ``openrlhf/models/__init__.py`` (which needs
    flash-attn; see the module doc). Either way it is OpenRLHF's own code."""
    try:
        from openrlhf.models import PolicyLoss
    except ImportError:
        if "openrlhf.models" not in sys.modules:  # a failed import is not left there
            import openrlhf

            package = types.ModuleType("openrlhf.models")
            package.__path__ = [str(Path(openrlhf.__file__).parent / "models")]
            sys.modules["openrlhf.models"] = package
        PolicyLoss = importlib.import_module("openrlhf.models.loss").PolicyLoss
    return PolicyLoss
