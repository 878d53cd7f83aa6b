"""``HFPolicy``: a local transformers causal LM (CPU or CUDA) with a prefix KV cache.

Requests are grouped by identical prompt (the children of one tree node): the group's prompt is
prefilled once — from the longest cached prefix on — its KV is expanded to the group's size, and
the continuations are decoded together, one sampled token per row and step, each row with its
own seeded generator. The KV of every prompt and of every finished generation goes into the
:class:`PrefixKVCache`, so the next turn (prompt + generation + observation) only computes the
observation's tokens. ``cached_tokens`` reports the prompt tokens a request did not compute:
the cache hit for the first request of a group, the whole prompt for its siblings.

Generation runs in a worker thread (one at a time: the model is not re-entrant) so the event
loop keeps serving env steps and other requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .prefix_cache import KV, PrefixKVCache
from .protocol import GenerateRequest, GenerateResult, Policy, PolicyError, SamplingParams


def _model_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def sample_token(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator
) -> tuple[int, float]:
    """Sample one id from a ``[vocab]`` logit row; return it with its logprob.

    The logprob is under the temperature-scaled distribution before top-k/top-p truncation
    (greedy: the untempered distribution).
    """
    logits = logits.float()
    if params.greedy:
        logp = torch.log_softmax(logits, dim=-1)
        token = int(torch.argmax(logits))
        return token, float(logp[token])
    logp = torch.log_softmax(logits / params.temperature, dim=-1)
    probs = logp.exp()
    if params.top_k > 0:
        kth = torch.topk(probs, min(params.top_k, probs.numel())).values[-1]
        probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < params.top_p
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask[order[keep]] = True
        probs = torch.where(mask, probs, torch.zeros_like(probs))
    token = int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
    return token, float(logp[token])


class HFPolicy(Policy):
    """Local transformers policy. ``cache_bytes=0`` disables the prefix cache."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        cache_bytes: int = 256 << 20,
        seed: int = 0,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = Path(model_path)
        if not (self.model_path / "config.json").is_file():
            raise PolicyError(f"no Hugging Face model at {self.model_path} (config.json missing)")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype).to(device)
        self.model.eval()
        self.device = device
        self.cache = PrefixKVCache(cache_bytes)
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._digest = _model_digest(self.model_path)

    def identity(self) -> dict[str, Any]:
        return {
            "policy": "hf",
            "model_path": str(self.model_path),
            "model_sha256": self._digest,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return await asyncio.to_thread(self.generate_sync, requests)

    def generate_sync(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Blocking form of :meth:`generate` (used by the HTTP server's worker thread)."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, req in enumerate(requests):
            if not req.input_ids:
                raise PolicyError(f"request {i} has an empty prompt")
            groups.setdefault(tuple(req.input_ids), []).append(i)
        results: list[GenerateResult | None] = [None] * len(requests)
        with self._lock, torch.inference_mode():
            for prompt, members in groups.items():
                for i, res in zip(
                    members,
                    self._generate_group(prompt, [requests[i] for i in members]),
                    strict=True,
                ):
                    results[i] = res
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ internals
    def _generate_group(
        self, prompt: tuple[int, ...], reqs: list[GenerateRequest]
    ) -> list[GenerateResult]:
        t0 = time.perf_counter()
        n_prompt = len(prompt)
        max_new = max(r.sampling.max_new_tokens for r in reqs)
        if n_prompt + 1 > self.context_length:
            raise PolicyError(
                f"prompt of {n_prompt} tokens does not fit the model's context "
                f"of {self.context_length}"
            )
        max_new = min(max_new, self.context_length - n_prompt)
        cached, kv = self.cache.lookup(prompt)
        if kv is not None and cached >= n_prompt:  # the last token must run to give logits
            cached = n_prompt - 1
            kv = tuple((k[:, :, :cached], v[:, :, :cached]) for k, v in kv) if cached else None
        logits, kv = self._forward(prompt[cached:], kv)
        self.cache.insert(prompt, kv)
        n = len(reqs)
        gens = [
            torch.Generator().manual_seed(
                r.sampling.seed if r.sampling.seed is not None else self._rng.randrange(2**31)
            )
            for r in reqs
        ]
        kv = tuple((k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv)
        last = logits[-1:].expand(n, -1)
        out: list[list[int]] = [[] for _ in reqs]
        lps: list[list[float]] = [[] for _ in reqs]
        done = [False] * n
        finish = ["length"] * n
        feeds = 0  # decode steps run: row b's first min(len(out[b]), feeds) tokens are in kv
        pad = self.tokenizer.pad_token_id or 0
        for _ in range(max_new):
            feed = []
            for row, req in enumerate(reqs):
                if done[row]:
                    feed.append(pad)
                    continue
                token, lp = sample_token(last[row], req.sampling, gens[row])
                out[row].append(token)
                lps[row].append(lp)
                if token in req.sampling.stop_token_ids or token == self.tokenizer.eos_token_id:
                    done[row], finish[row] = True, "stop"
                elif len(out[row]) >= min(req.sampling.max_new_tokens, max_new):
                    done[row] = True
                feed.append(token)
            if all(done):
                break
            last, kv = self._forward_batch(feed, kv)
            feeds += 1
        for row in range(n):
            fed = min(len(out[row]), feeds)
            length = n_prompt + fed
            row_kv = tuple(
                (k[row : row + 1, :, :length].clone(), v[row : row + 1, :, :length].clone())
                for k, v in kv
            )
            self.cache.insert(prompt + tuple(out[row][:fed]), row_kv)
        latency = time.perf_counter() - t0
        return [
            GenerateResult(
                output_ids=tuple(out[row]),
                logprobs=tuple(lps[row]),
                finish_reason=finish[row],
                prompt_tokens=n_prompt,
                # The group's prompt is computed once: the first row pays for it, the others
                # reuse it entirely (what SGLang reports for batched siblings too).
                cached_tokens=cached if row == 0 else n_prompt,
                latency_s=latency,
                rid=req.rid,
            )
            for row, req in enumerate(reqs)
        ]

    def _forward(self, ids: Sequence[int], kv: KV | None) -> tuple[torch.Tensor, KV]:
        """Run ``ids`` (batch 1) after ``kv``; return per-position logits ``[len, vocab]``."""
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=kv) if kv is not None else DynamicCache()
        x = torch.tensor([list(ids)], device=self.device)
        out = self.model(input_ids=x, past_key_values=cache, use_cache=True)
        return out.logits[0], _kv_of(out.past_key_values)

    def _forward_batch(self, tokens: list[int], kv: KV) -> tuple[torch.Tensor, KV]:
        from transformers import DynamicCache

        x = torch.tensor(tokens, device=self.device).unsqueeze(1)
        out = self.model(
            input_ids=x, past_key_values=DynamicCache(ddp_cache_data=kv), use_cache=True
        )
        return out.logits[:, -1], _kv_of(out.past_key_values)


def _kv_of(cache: Any) -> KV:
    return tuple((layer.keys, layer.values) for layer in cache.layers)
