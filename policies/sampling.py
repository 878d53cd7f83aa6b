"""Vectorised sampling for a batch of rows, each with its own parameters and seeded draws.

Every row of a decode batch may have its own temperature, top-k, top-p and seed. The
randomness is one uniform draw per row and step from the row's own ``random.Random(seed)``,
turned into a token by inverse-CDF lookup in that row's (truncated) distribution. So a row's
tokens depend only on its seed and its logits — not on which other rows share the batch, nor
on their count — which is the engine's determinism rule (see ``engine.py``).

Logprobs are under the temperature-scaled distribution before top-k/top-p truncation (greedy:
the untempered distribution), as SGLang reports them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .protocol import SamplingParams


def sample_batch(
    logits: torch.Tensor, params: Sequence[SamplingParams], draws: Sequence[float]
) -> tuple[list[int], list[float]]:
    """Tokens and their logprobs for ``[batch, vocab]`` logits, one draw in [0, 1) per row."""
    logits = logits.float()
    vocab = logits.shape[1]
    greedy = torch.tensor([p.greedy for p in params])
    temps = torch.tensor([1.0 if p.greedy else p.temperature for p in params])
    logp = torch.log_softmax(logits / temps[:, None], dim=-1)
    probs = logp.exp()
    top_k = [p.top_k for p in params]
    top_p = [p.top_p for p in params]
    if any(0 < k < vocab for k in top_k) or any(p < 1.0 for p in top_p):
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        k = torch.tensor([k if 0 < k < vocab else vocab for k in top_k])
        keep = torch.arange(vocab)[None, :] < k[:, None]
        keep &= (torch.cumsum(sorted_p, -1) - sorted_p) < torch.tensor(top_p)[:, None]
        sorted_p = sorted_p * keep
    else:
        sorted_p, order = probs, None
    cdf = torch.cumsum(sorted_p, dim=-1)
    target = torch.tensor(draws, dtype=cdf.dtype)[:, None] * cdf[:, -1:]
    pick = torch.searchsorted(cdf, target, right=True).clamp_(max=vocab - 1).squeeze(1)
    tokens = order.gather(1, pick[:, None]).squeeze(1) if order is not None else pick
    tokens = torch.where(greedy, logits.argmax(-1), tokens)
    chosen = logp.gather(1, tokens[:, None]).squeeze(1)
    return tokens.tolist(), chosen.tolist()
