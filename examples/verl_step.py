"""verl's own code on a run folder: ``DataProto``, GRPO and Tree-GRPO advantages, PPO loss.

    .venv-trainers/verl/bin/python examples/verl_step.py RUN [--model PATH] [--json]

Runs in verl's environment (``bash scripts/setup_trainers.sh verl``; verl pins transformers
<5.11, so it cannot share treegym's):

1. ``treegym.integrations.verl.to_dataproto(RUN)``: verl's ``DataProto`` with ``uid``,
   ``tree_uid`` and ``sample_id`` in its non-tensor batch.
2. verl's ``compute_grpo_outcome_advantage`` over ``uid`` (treegym's ``adv_grpo``), and over
   ``uid`` plus over ``tree_uid`` (treegym's ``adv_tree_grpo``).
3. The model recomputes every response token's logprob (verl's ``logprobs_from_logits`` at the
   run's temperature); verl's ``compute_policy_loss`` (clip 0.2, token-mean) on the batch's
   ``old_log_probs`` and the Tree-GRPO advantages, verl's ``agg_loss`` of ``-advantages`` per
   mode, one backward.

Prints a report (``--json``: one JSON object) with each sample's advantages (the value on its
first generated token, and the largest value off the response mask), the loss and its parts,
the gradient norm and the largest logprob difference over the mask.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import verl.utils.torch_functional as verl_F
from transformers import AutoModelForCausalLM
from verl.trainer.ppo import core_algos

from treegym.harness.loaders import load_run
from treegym.integrations.verl import grpo_advantage, to_dataproto, tree_grpo_advantage

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--model", type=Path, default=None, help="default: the manifest's model")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    return ap.parse_args(argv)


def per_sample(advantages: torch.Tensor, mask: torch.Tensor) -> dict[str, list[float]]:
    """Each row's value on its first generated token, and its largest |value| off the mask."""
    first = mask.float().argmax(dim=1)
    return {
        "value": advantages.gather(1, first[:, None]).squeeze(1).tolist(),
        "off_mask_max": (advantages * (1 - mask)).abs().amax(dim=1).tolist(),
    }


def response_logprobs(model: Any, data: Any) -> torch.Tensor:
    """log π(response token | everything before it) for every response position."""
    b = data.batch
    prompt_len = b["prompts"].shape[1]
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                   position_ids=b["position_ids"], use_cache=False).logits  # fmt: skip
    logits = logits[:, prompt_len - 1 : -1].float() / data.meta_info["temperature"]
    return verl_F.logprobs_from_logits(logits, b["responses"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    run = load_run(args.run)
    model_path = args.model or (run.manifest.get("policy") or {}).get("model_path")
    if not model_path:
        raise SystemExit(f"{args.run}: the manifest names no model_path; pass --model")
    data = to_dataproto(run, advantage="tree_grpo")
    mask = data.batch["response_mask"]
    grpo, tree = grpo_advantage(data), tree_grpo_advantage(data)

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.eval()  # no dropout: the recomputed logprobs must be the sampling ones
    log_prob = response_logprobs(model, data)
    old = data.batch["old_log_probs"]
    pg_loss, clipfrac, ppo_kl, _ = core_algos.compute_policy_loss(
        old_log_prob=old, log_prob=log_prob, advantages=tree, response_mask=mask, cliprange=0.2,
        loss_agg_mode="token-mean",
    )  # fmt: skip
    pg_loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    report = {
        "sample_id": data.non_tensor_batch["sample_id"].tolist(),
        "grpo": per_sample(grpo, mask),
        "tree_grpo": per_sample(tree, mask),
        "exported_tree_grpo": per_sample(data.batch["advantages"], mask),
        "loss": pg_loss.item(),
        "pg_clipfrac": float(clipfrac),
        "ppo_kl": float(ppo_kl),
        "agg_loss": {m: core_algos.agg_loss(-tree, mask, m).item() for m in AGG_MODES},
        "grad_norm": float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))),
        "params_with_grad": len(grads),
        "max_abs_logprob_diff": float(((log_prob.detach() - old).abs() * mask).max()),
        "trained_tokens": int(mask.sum()),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key in ("loss", "pg_clipfrac", "ppo_kl", "agg_loss", "grad_norm",
                    "max_abs_logprob_diff", "trained_tokens"):  # fmt: skip
            print(f"{key}: {report[key]}")
    return report


if __name__ == "__main__":
    main()
