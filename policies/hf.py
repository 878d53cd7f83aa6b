"""``HFPolicy``: a local transformers causal LM (CPU or CUDA) behind a continuous-batching engine.

Every ``generate`` call — from any task, any group, any thread — goes to one
:class:`~treegym.policies.engine.BatchEngine`, which decodes all in-flight requests together
and serves shared prefixes from a token-level radix cache over one KV pool (see
``engine.py``). ``generate`` only queues requests and awaits their futures, so the event loop
keeps serving env steps while the model runs.

``load_weights(path)`` swaps in a checkpoint of the same architecture between decode steps:
the prefix cache is flushed (stale KV is never reused) and the weight version bumps; a
checkpoint of another shape is refused and the old weights keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .engine import BatchEngine
from .kv_pool import TokenKVPool
from .protocol import GenerateRequest, GenerateResult, Policy, PolicyError


def model_digest(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of a checkpoint folder's weights (its identity)."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a Hugging Face checkpoint folder (safetensors), with a clear error for a
    folder without weights or a corrupt file."""
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise PolicyError(f"no *.safetensors weights in {path}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(f))
        except Exception as exc:  # safetensors raises its own types for truncated files
            raise PolicyError(f"cannot read weights {f}: {exc}") from exc
    return state


class HFPolicy(Policy):
    """Local transformers policy.

    ``cache_bytes`` is the KV pool's size: running requests and cached prefixes share it
    (at least four full contexts are always allocated); ``cache_bytes=0`` disables prefix
    caching (every prompt is computed in full: the control arm of cache benchmarks).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        cache_bytes: int = 256 << 20,
        max_batch: int = 64,
        seed: int = 0,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = Path(model_path)
        if not (self.model_path / "config.json").is_file():
            raise PolicyError(f"no Hugging Face model at {self.model_path} (config.json missing)")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        try:
            with _quiet_loading():
                self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
        except Exception as exc:
            load_state_dict(self.model_path)  # names the unreadable file if that is the cause
            raise PolicyError(f"cannot load the model in {self.model_path}: {exc}") from exc
        self.model.to(device)
        self.model.eval()
        _check_vocab(self.model, self.tokenizer, self.model_path)
        self.device = device
        cfg = self.model.config
        self.context_length = int(getattr(cfg, "max_position_embeddings", 2048))
        heads = cfg.num_attention_heads
        per_token = TokenKVPool.bytes_per_token(
            cfg.num_hidden_layers,
            getattr(cfg, "num_key_value_heads", None) or heads,
            getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
            dtype,
        )
        self.kv_bytes_per_token = per_token
        self.engine = BatchEngine(
            self.model,
            kv_tokens=max(cache_bytes // per_token, 4 * self.context_length) + 1,
            prefix_cache=cache_bytes > 0,
            max_batch=max_batch,
            eos_token_id=self.tokenizer.eos_token_id,
            seed=seed,
        )
        self._digest = model_digest(self.model_path)
        self._updates = 0

    def identity(self) -> dict[str, Any]:
        return {
            "policy": "hf",
            "model_path": str(self.model_path),
            "model_sha256": self._digest,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "weight_version": self.engine.weight_version,
        }

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        futures = self.engine.submit(requests)
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    def generate_sync(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Blocking form of :meth:`generate` (for callers without an event loop)."""
        return [f.result() for f in self.engine.submit(requests)]

    async def load_weights(self, path: str | Path, weight_version: str | None = None) -> str:
        """Swap in the weights at ``path`` once running requests finish; flush the prefix
        cache; return the new weight version. Another architecture or shape is refused with a
        :class:`PolicyError` and the current weights keep serving."""
        path = Path(path)
        state = await asyncio.to_thread(load_state_dict, path)
        fut = self.engine.when_idle(lambda: self._swap(state, path, weight_version))
        return await asyncio.wrap_future(fut)

    def _swap(self, state: dict[str, torch.Tensor], path: Path, version: str | None) -> str:
        current = self.model.state_dict()
        tied = {k for k in current if k not in state and k.endswith("lm_head.weight")}
        missing = sorted(set(current) - set(state) - tied)
        unexpected = sorted(set(state) - set(current))
        bad = [k for k in state if k in current and state[k].shape != current[k].shape]
        if missing or unexpected or bad:
            what = (
                f"shape of {bad[0]} is {tuple(state[bad[0]].shape)}, "
                f"expected {tuple(current[bad[0]].shape)}"
                if bad
                else f"missing {missing[:3]}"
                if missing
                else f"unexpected {unexpected[:3]}"
            )
            raise PolicyError(f"checkpoint {path} does not fit the served model: {what}")
        with torch.no_grad():
            for k, v in state.items():
                current[k].copy_(v)
        self.engine.flush_cache()
        self._updates += 1
        self.engine.weight_version = version or str(self._updates)
        self.model_path, self._digest = path, model_digest(path)
        return self.engine.weight_version

    async def aclose(self) -> None:
        await asyncio.to_thread(self.engine.close)

    def __del__(self) -> None:  # the engine thread holds the model, not the policy
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


@contextlib.contextmanager
def _quiet_loading():
    """No 'Loading weights' progress bar in treegym's output (a run prints its own progress)."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def _check_vocab(model: Any, tokenizer: Any, path: Path) -> None:
    """A tokenizer with ids the model has no embedding for would index out of range later."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise PolicyError(
            f"the tokenizer in {path} has {len(tokenizer)} tokens but the model's embedding "
            f"has {rows} rows: tokenizer and weights do not match"
        )
