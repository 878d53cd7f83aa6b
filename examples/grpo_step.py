"""Proof that a trainer can use a run folder: logprob alignment, then one GRPO/PPO-clip step.

    python examples/grpo_step.py RUN [--model PATH] [--advantage grpo] [--lr 1e-4]

1. Reads ``RUN`` with :func:`treegym.load_run` and batches the samples with the torch loader.
2. Recomputes the policy's logprob of every ``response_ids`` token with the same model (one
   forward over ``prompt_ids ++ response_ids``, log-softmax at the run's sampling temperature,
   which is what ``HFPolicy`` reports) and prints the max abs difference to the exported
   ``logprobs`` over ``loss_mask == 1``. Any token misalignment (an id shifted, an observation
   token counted as generated, a logprob from the wrong position) shows up here as a large
   number; fp32 on CPU agrees to ~1e-6. Exit status 1 if it is not below ``--tolerance``.
3. Takes one real PPO-clip step (ratio = exp(new − old), clip 0.2, token-mean over the loss
   mask, advantages from an exported ``adv_<name>`` column) with AdamW and prints the loss,
   the gradient norm and the loss on the same batch after the step.

The model defaults to the manifest's ``policy.model_path``; its weights digest must match the
manifest's ``model_sha256`` (otherwise the logprobs are from another model).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from treegym.harness import TorchRunDataset, load_run


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--model", type=Path, default=None, help="default: the manifest's model")
    ap.add_argument("--advantage", default="grpo", help="estimator whose column to use")
    ap.add_argument("--token-level", action="store_true", help="use adv_<name>_tokens")
    ap.add_argument("--clip", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    return ap.parse_args(argv)


def token_logprobs(
    model: Any, batch: dict[str, Any], temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token logprobs of ``input_ids[:, 1:]`` (aligned like the batch's columns shifted by
    one) and the shifted loss mask."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        use_cache=False,
    )
    logits = out.logits[:, :-1].float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    new = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return new, batch["loss_mask"][:, 1:].float()


def ppo_clip_loss(
    new: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clip: float
) -> torch.Tensor:
    """Sum over masked tokens of PPO's clipped surrogate (caller divides by the token count)."""
    ratio = torch.exp(new - old)
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
    return (loss * mask).sum()


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    from treegym.policies import HFPolicy

    args = parse_args(argv)
    run = load_run(args.run)
    ident = run.manifest.get("policy") or {}
    model_path = args.model or ident.get("model_path")
    if not model_path:
        raise SystemExit(f"{args.run}: the manifest names no model_path; pass --model")
    policy = HFPolicy(model_path)
    if ident.get("model_sha256") and policy.identity()["model_sha256"] != ident["model_sha256"]:
        raise SystemExit(
            f"{model_path}: weights digest {policy.identity()['model_sha256']} is not the run's "
            f"{ident['model_sha256']}: logprobs would not match"
        )
    sampling = (run.manifest.get("config") or {}).get("sampling") or {}
    temperature = float(sampling.get("temperature", 1.0))
    temperature = 1.0 if temperature < 1e-6 else temperature  # greedy: untempered logprobs

    model = policy.model
    model.eval()  # no dropout: the recomputed logprobs must be the sampling ones
    ds = TorchRunDataset(run, args.advantage, token_level=args.token_level or None)
    micro = [
        ds.collate([ds[i] for i in range(s, min(len(ds), s + args.micro_batch))])
        for s in range(0, len(ds), args.micro_batch)
    ]
    tokens = sum(float(b["loss_mask"].sum()) for b in micro)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    optimizer.zero_grad()
    max_diff, loss_total = 0.0, 0.0
    for batch in micro:
        new, mask = token_logprobs(model, batch, temperature)
        old, adv = batch["logprobs"][:, 1:], batch["advantages"][:, 1:]
        diff = ((new.detach() - old).abs() * mask).max().item()
        max_diff = max(max_diff, diff)
        loss = ppo_clip_loss(new, old, adv, mask, args.clip) / tokens
        loss.backward()
        loss_total += loss.item()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0))
    optimizer.step()
    with torch.no_grad():
        after = 0.0
        for batch in micro:
            new, mask = token_logprobs(model, batch, temperature)
            old, adv = batch["logprobs"][:, 1:], batch["advantages"][:, 1:]
            after += ppo_clip_loss(new, old, adv, mask, args.clip).item() / tokens
    report = {
        "samples": float(len(ds)),
        "trained_tokens": tokens,
        "max_abs_logprob_diff": max_diff,
        "loss": loss_total,
        "grad_norm": grad_norm,
        "loss_after_step": after,
    }
    print(f"samples {len(ds)}, trained tokens {int(tokens)}, temperature {temperature}")
    print(f"max abs logprob diff over loss_mask: {max_diff:.3e} (tolerance {args.tolerance:g})")
    print(f"PPO-clip loss {loss_total:.6f}, grad norm {grad_norm:.6f}, "
          f"loss after one AdamW step {after:.6f}")  # fmt: skip
    return report


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result["max_abs_logprob_diff"] < parse_args().tolerance else 1)
