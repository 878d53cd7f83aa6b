"""The clipped policy-gradient objective of GRPO-style training, on a run folder's batches.

PPO-clip (Schulman et al. 2017, arXiv 1707.06347) as GRPO uses it (Shao et al. 2024,
arXiv 2402.03300, eq. 3): per generated token t of a sample with advantage A_t,

    ratio_t = exp(logp_new(t) - logp_old(t))
    loss_t  = max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps_low, 1 + eps_high))

``logp_old`` is the sampling policy's logprob exported in the run folder (the engine's, at the
run's temperature), so the first step's ratio is 1 up to float noise: :func:`token_logprobs`
recomputes it under the same temperature. ``eps_high > eps_low`` is DAPO's clip-higher
(arXiv 2503.14476). Aggregation over tokens follows verl's ``agg_loss`` modes:
``token-mean`` (every generated token of the batch weighs the same; DAPO),
``seq-mean-token-mean`` (each sample weighs the same; GRPO's 1/|o_i| form) and
``seq-mean-token-sum`` (Dr. GRPO's, without length normalisation). The KL penalty to a
reference policy is GRPO's unbiased k3 estimator, ``exp(ref - new) - (ref - new) - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def token_logprobs(model: Any, batch: dict[str, Any], temperature: float) -> torch.Tensor:
    """Logprob of every ``input_ids`` token given the ones before it, ``[B, T]`` aligned with
    the batch's columns (position 0, which nothing predicts, is 0). ``temperature`` below
    1e-6 (greedy sampling) means the untempered distribution, as the engines report it."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        use_cache=False,
    )
    temp = 1.0 if temperature < 1e-6 else temperature
    logp = torch.log_softmax(out.logits[:, :-1].float() / temp, dim=-1)
    picked = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return torch.nn.functional.pad(picked, (1, 0))


@dataclass
class LossParts:
    """The loss and what a training log shows about it (all detached except ``loss``)."""

    loss: torch.Tensor
    clip_fraction: float
    kl: float
    ratio_max_dev: float
    """max |ratio − 1| over the batch's tokens: ≈ 0 on the first step means the logprobs in
    the run folder are the ones this model computes (no misalignment, same temperature)."""
    tokens: int


def clipped_loss(
    new: torch.Tensor,
    batch: dict[str, Any],
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    loss_agg: str = "token-mean",
    kl_coef: float = 0.0,
    ref: torch.Tensor | None = None,
    normaliser: float | None = None,
) -> LossParts:
    """PPO-clip loss of one micro-batch given the new logprobs ``new`` (``[B, T]``).

    ``normaliser`` is :func:`step_normaliser` of every micro-batch the optimizer step
    accumulates, so summing the micro-batches' losses gives exactly the step's aggregate
    (default: this batch alone)."""
    if loss_agg not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss aggregation {loss_agg!r}; choose one of {LOSS_AGG_MODES}")
    mask = batch["loss_mask"].float()
    old, adv = batch["logprobs"], batch["advantages"]
    ratio = torch.exp(new - old)
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high)
    per_token = torch.maximum(-adv * ratio, -adv * clipped)
    kl = torch.zeros_like(new)
    if kl_coef and ref is not None:
        delta = ref - new
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + kl_coef * kl
    norm = normaliser if normaliser is not None else step_normaliser([batch], loss_agg)
    loss = _summed(per_token, mask, loss_agg) / max(norm, 1.0)
    n = float(mask.sum())
    with torch.no_grad():
        hit = ((ratio < 1 - clip_low) | (ratio > 1 + clip_high)).float()
        return LossParts(
            loss=loss,
            clip_fraction=float((hit * mask).sum() / max(n, 1.0)),
            kl=float((kl * mask).sum() / max(n, 1.0)),
            ratio_max_dev=float(((ratio - 1).abs() * mask).max()) if n else 0.0,
            tokens=int(n),
        )


def step_normaliser(batches: list[dict[str, Any]], loss_agg: str) -> float:
    """What an optimizer step's summed loss is divided by: its generated tokens
    (``token-mean``) or its samples with any generated token (the ``seq-mean`` modes)."""
    if loss_agg == "token-mean":
        return float(sum(b["loss_mask"].sum() for b in batches))
    return float(sum((b["loss_mask"].sum(-1) > 0).sum() for b in batches))


def _summed(per_token: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """The batch's share of the step's aggregate, before dividing by the normaliser."""
    if mode == "token-mean":
        return (per_token * mask).sum()
    per_seq = (per_token * mask).sum(-1)
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / mask.sum(-1).clamp(min=1.0)
    return per_seq.sum()
