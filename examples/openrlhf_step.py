"""OpenRLHF's own code on a run folder: ``Experience`` batches, its replay-buffer steps, its
``PolicyLoss``.

    .venv-trainers/openrlhf/bin/python examples/openrlhf_step.py RUN [--model PATH] [--json]

Runs in OpenRLHF's environment (``bash scripts/setup_trainers.sh openrlhf``: openrlhf 0.11.2
``--no-deps`` with the parts that install on a CPU; see ``treegym.integrations.openrlhf``):

1. One ``Experience`` per sample in OpenRLHF's multi-turn agent layout, merged by
   ``Experience.concat_experiences``, then what ``NaiveReplayBuffer.append`` and its
   ``collate_fn`` do (``split_experience_batch``, ``remove_padding_in_sequences``,
   ``make_experience_batch``; the buffer class itself needs CUDA).
2. ``Actor.forward``'s logprob path (position ids from the attention mask, OpenRLHF's
   ``log_probs_from_logits`` on the rolled sequences at the run's temperature) with the model;
   the no-grad pass fills ``action_log_probs`` as OpenRLHF's experience maker does.
3. ``PolicyLoss`` (clip 0.2, token-level), plain and with token-level importance correction
   against ``rollout_log_probs``; one backward.

Prints a report (``--json``: one JSON object): each sample's tokens, action count and
advantage, the largest |action_log_probs − rollout_log_probs| over the action mask, the losses,
the gradient norm, and whether ``openrlhf.models`` imports here (and flash-attn's status).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from openrlhf.trainer.ppo_utils.experience import (
    Experience,
    make_experience_batch,
    remove_padding_in_sequences,
    split_experience_batch,
)
from transformers import AutoModelForCausalLM

from treegym.harness.loaders import load_run
from treegym.integrations.openrlhf import experiences, policy_loss_class

FLASH_ATTN_STATUS = Path(__file__).resolve().parents[1] / ".venv-trainers" / "flash-attn.status"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--model", type=Path, default=None, help="default: the manifest's model")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    return ap.parse_args(argv)


def action_log_probs(model: Any, exp: Experience, temperature: float) -> torch.Tensor:
    """``Actor.forward(sequences, action_mask, attention_mask)`` without its ring-attention and
    packing branches (the module that holds it imports flash-attn): OpenRLHF's own
    ``log_probs_from_logits``."""
    from openrlhf.models.utils import log_probs_from_logits

    mask = exp.attention_mask
    position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    logits = model(exp.sequences, attention_mask=mask, position_ids=position_ids).logits
    rolled = torch.roll(exp.sequences, shifts=-1, dims=1)
    log_probs = log_probs_from_logits(logits.float(), rolled, temperature=temperature)[:, :-1]
    return log_probs[:, -exp.action_mask.shape[1] :] * exp.action_mask.float()


def models_import() -> str:
    try:
        import openrlhf.models  # noqa: F401 - the check is the import
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    run = load_run(args.run)
    model_path = args.model or (run.manifest.get("policy") or {}).get("model_path")
    if not model_path:
        raise SystemExit(f"{args.run}: the manifest names no model_path; pass --model")
    models_status = models_import()  # before policy_loss_class puts its package object there
    PolicyLoss = policy_loss_class()  # also makes openrlhf.models.utils importable
    merged = Experience.concat_experiences(experiences(run, advantage="tree_grpo"),
                                           run.pad_token_id)  # fmt: skip
    items = remove_padding_in_sequences(split_experience_batch(merged))  # the buffer's append
    exp = make_experience_batch(items)  # the buffer's collate_fn

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.eval()  # no dropout: the recomputed logprobs must be the sampling ones
    with torch.no_grad():
        exp.action_log_probs = action_log_probs(model, exp, run.temperature)
    log_probs = action_log_probs(model, exp, run.temperature)
    loss, clip_ratio, ppo_kl, _, _ = PolicyLoss(clip_eps_low=0.2, clip_eps_high=0.2)(
        log_probs, exp.action_log_probs, exp.advantages, action_mask=exp.action_mask,
        rollout_log_probs=exp.rollout_log_probs,
    )  # fmt: skip
    corrected, *_ = PolicyLoss(is_correction_level="token")(
        log_probs.detach(), exp.action_log_probs, exp.advantages, action_mask=exp.action_mask,
        rollout_log_probs=exp.rollout_log_probs,
    )  # fmt: skip
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    mask = exp.action_mask
    first = mask.float().argmax(dim=1, keepdim=True)
    seqs, gap = exp.sequences, exp.action_log_probs - exp.rollout_log_probs
    report = {
        "sample_id": exp.labels,
        "tokens": [s[m.bool()].tolist() for s, m in zip(seqs, exp.attention_mask, strict=True)],
        "actions": mask.sum(dim=1).tolist(),
        "advantage": exp.advantages.gather(1, first).squeeze(1).tolist(),
        "advantage_off_mask_max": float((exp.advantages * ~mask).abs().max()),
        "rewards": exp.rewards.tolist(),
        "prompts": exp.prompts,
        "max_abs_logprob_diff": float((gap.abs() * mask).max()),
        "loss": loss.item(),
        "loss_is_corrected": corrected.item(),
        "clip_ratio": float(clip_ratio),
        "ppo_kl": float(ppo_kl),
        "grad_norm": float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))),
        "params_with_grad": len(grads),
        "policy_loss_module": PolicyLoss.__module__,
        "openrlhf_models_import": models_status,
        "flash_attn": FLASH_ATTN_STATUS.read_text().strip() if FLASH_ATTN_STATUS.is_file() else "",
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key in ("loss", "loss_is_corrected", "clip_ratio", "ppo_kl", "grad_norm",
                    "max_abs_logprob_diff", "openrlhf_models_import", "flash_attn"):  # fmt: skip
            print(f"{key}: {report[key]}")
    return report


if __name__ == "__main__":
    main()
