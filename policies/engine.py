"""A small continuous-batching engine for a transformers causal LM (the engine of ``HFPolicy``).

One scheduler thread owns the model and the KV memory. Between decode steps it admits waiting
requests: each looks up the longest cached prefix of its prompt in the :class:`RadixCache`
(token level, wherever earlier prompts diverged), prefills only the rest (in chunks), and joins
the running batch. Every decode step feeds one token per running request — all tasks, all
groups, every caller (the runner, the HTTP server) in one forward — writes the new keys and
values into the :class:`TokenKVPool` and attends over each row's slots, gathered by index. KV
is never copied between requests: a prefix shared by many requests is the same slots.

Memory: a request is admitted only when its uncached prompt and its ``max_new_tokens`` fit in
the free slots plus the evictable cache, minus what running requests have reserved, so a
running request never waits for memory (no preemption). A finished request gives its prompt +
generation to the radix tree (the next turn's prompt extends it); unreferenced prefixes are
evicted least recently used when slots are needed.

Accounting follows SGLang: ``cached_tokens`` is the matched prefix, at most ``prompt − 1``
(the last prompt token always runs, to give the first logits); the stop token is kept in the
output. Requests admitted together share work SGLang's default ``fcfs`` schedule does not
share: the first of a node's children is prefilled and put in the tree before the next is
matched, so the rest find the whole prompt cached, while SGLang matches every request of a
prefill batch before any of them runs. ``cache_report = "sglang"`` (what ``treegym serve``
sets) reports what SGLang would — the prefix cached when the request's admission round began —
while the engine still computes the shared prompt once; ``"engine"`` (the default) reports the
reuse this engine achieved.

Determinism rule: a request's tokens depend on its seed and its own logits only (one draw per
step from ``random.Random(seed)``, see ``sampling.py``). A row's logits can differ in the last
float bits with the batch's shape (matrix-multiply blocking), so tokens are identical across
batch compositions unless a draw lands within that tolerance of a CDF boundary, and logprobs
agree to 1e-4 (both tested).

Constrained choice (``GenerateRequest.constraint``): a request's logits row is masked to the
tokens that can still spell one of its choices (``constraint.py``) before sampling, so its
tokens and logprobs are those of the masked distribution; it stops when a choice is complete.

Control work (weight updates, cache flushes) runs in the engine thread too, once no request is
running; admission pauses while such work is pending, so it never sees a half-done batch.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import inspect
import itertools
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .constraint import ChoiceCursor, mask_logits
from .kv_pool import TokenKVPool
from .protocol import GenerateRequest, GenerateResult, PolicyError
from .radix_cache import RadixCache, RadixNode
from .sampling import sample_batch


class _PagedView:
    """The cache object handed to a transformers forward: ``update`` writes the step's keys
    and values into the pool and returns every row's context gathered from its slots."""

    def __init__(self, pool: TokenKVPool, new_slots: torch.Tensor, index: torch.Tensor):
        self.pool, self.new_slots, self.index = pool, new_slots, index

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *_, **__):
        h, d = keys.shape[1], keys.shape[3]
        self.pool.write(
            layer_idx,
            self.new_slots,
            keys.transpose(1, 2).reshape(-1, h, d),
            values.transpose(1, 2).reshape(-1, h, d),
        )
        return self.pool.gather(layer_idx, self.index)


@dataclass(eq=False)
class _Sequence:
    """A request in flight: its slots, its place in the radix tree, what it generated."""

    req: GenerateRequest
    future: concurrent.futures.Future
    max_new: int
    rng: random.Random
    t0: float
    slots: torch.Tensor
    """Slot of every token whose KV is in the pool: ``slots[:n_ctx]`` (capacity prompt+new)."""
    n_ctx: int = 0
    tree_len: int = 0  # leading slots owned by the radix tree (locked through ``node``)
    node: RadixNode | None = None
    next_token: int = 0
    cached: int = 0
    round_cached: int = 0  # cached when its admission round began (SGLang's fcfs figure)
    reserved: int = 0  # slots promised to this request and not yet taken
    output: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    choice: ChoiceCursor | None = None
    """Where a constrained request (``req.constraint``) is in its choices' trie."""

    def push(self, slots: torch.Tensor) -> None:
        self.slots[self.n_ctx : self.n_ctx + len(slots)] = slots
        self.n_ctx += len(slots)


class BatchEngine:
    """Continuous batching over a preallocated KV pool with a radix prefix cache."""

    def __init__(
        self,
        model: Any,
        *,
        kv_tokens: int,
        prefix_cache: bool = True,
        max_batch: int = 64,
        prefill_chunk: int = 512,
        eos_token_id: int | None = None,
        seed: int = 0,
    ) -> None:
        cfg = model.config
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        param = next(model.parameters())
        self.model = model
        self.pool = TokenKVPool(kv_tokens, cfg.num_hidden_layers, kv_heads, head_dim,
                                dtype=param.dtype, device=str(param.device))  # fmt: skip
        self.radix = RadixCache(self.pool)
        self.prefix_cache = prefix_cache
        self.max_batch, self.prefill_chunk = max_batch, prefill_chunk
        self.eos_token_id = eos_token_id
        self.context_length = int(getattr(cfg, "max_position_embeddings", 2048))
        self.device = str(param.device)
        self.weight_version = "0"
        self.cache_report = "engine"  # or "sglang": see the module docstring
        self.forward_steps = self.prefill_tokens = self.decode_tokens = 0
        self._cache_arg = _cache_argument(model)
        self._rng = random.Random(seed)
        self._inbox: list[_Sequence] = []
        self._controls: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._reserved = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="treegym-engine", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    # ------------------------------------------------------------------ public
    def submit(self, requests: Sequence[GenerateRequest]) -> list[concurrent.futures.Future]:
        """Queue requests (never blocks on the model); each future gives a result."""
        seqs = [self._new_sequence(i, req) for i, req in enumerate(requests)]
        with self._cond:
            if self._stopped:
                raise PolicyError("the engine is closed")
            self._inbox.extend(seqs)
            self._cond.notify()
        return [s.future for s in seqs]

    def when_idle(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``fn`` in the engine thread once no request is running (admission pauses
        until then); the future gives its result."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._stopped:
                raise PolicyError("the engine is closed")
            self._controls.append((fn, fut))
            self._cond.notify()
        return fut

    def flush_cache(self) -> None:
        """Forget every cached prefix (call from the engine thread, e.g. via :meth:`when_idle`)."""
        self.radix.reset()

    def stats(self) -> dict[str, Any]:
        return {
            "running": len(self._running),
            "waiting": len(self._waiting) + len(self._inbox),
            "kv_capacity_tokens": self.pool.capacity - 1,
            "kv_free_tokens": self.pool.free_slots,
            "cached_tokens": self.radix.total_size,
            "forward_steps": self.forward_steps,
            "prefill_tokens": self.prefill_tokens,
            "decode_tokens": self.decode_tokens,
            "weight_version": self.weight_version,
        }

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ admission
    def _new_sequence(self, i: int, req: GenerateRequest) -> _Sequence:
        n = len(req.input_ids)
        if n == 0:
            raise PolicyError(f"request {i} has an empty prompt")
        if n + 1 > self.context_length:
            raise PolicyError(
                f"prompt of {n} tokens does not fit the model's context of {self.context_length}"
            )
        max_new = min(req.sampling.max_new_tokens, self.context_length - n)
        if n + max_new > self.pool.capacity - 1:
            raise PolicyError(
                f"prompt of {n} tokens + {max_new} new tokens does not fit the KV pool of "
                f"{self.pool.capacity - 1} tokens (raise the KV budget)"
            )
        seed = req.sampling.seed
        rng = random.Random(seed if seed is not None else self._rng.randrange(2**63))
        slots = torch.zeros(n + max_new, dtype=torch.long)
        choice = ChoiceCursor(req.constraint) if req.constraint is not None else None
        return _Sequence(req, concurrent.futures.Future(), max_new, rng, time.perf_counter(),
                         slots, choice=choice)  # fmt: skip

    def _admit(self) -> None:
        """Move waiting requests into the batch while their memory is guaranteed."""
        self._match_round()
        while self._waiting and len(self._running) < self.max_batch and not self._controls:
            seq = self._waiting[0]
            prompt = seq.req.input_ids
            if self.prefix_cache:
                prefix, node = self.radix.match_prefix(prompt[:-1])
            else:
                prefix, node = torch.empty(0, dtype=torch.long), self.radix.root
            self.radix.inc_lock_ref(node)
            need = len(prompt) - len(prefix) - 1 + seq.max_new
            if need > self.pool.free_slots + self.radix.evictable_size - self._reserved:
                self.radix.dec_lock_ref(node)
                return  # wait for running requests to finish and unlock their prefixes
            self._waiting.popleft()
            seq.push(prefix)
            seq.node, seq.tree_len, seq.cached, seq.reserved = node, len(prefix), len(prefix), need
            self._reserved += need
            try:
                self._prefill(seq, prompt[len(prefix) : -1])
            except Exception as exc:  # a failing forward fails this request only
                self._finish(seq, error=exc)
                continue
            seq.next_token = prompt[-1]
            self._running.append(seq)

    def _match_round(self) -> None:
        """SGLang's fcfs figure for the requests this round may admit: each one's prefix in the
        tree before any of them is prefilled (SGLang 0.5.23 ``managers/scheduler.py``
        4203-4274 matches a whole prefill batch first; its prompts enter the tree after the
        batch ran, ``scheduler_components/batch_result_processor.py`` 394)."""
        if not self.prefix_cache or self.cache_report != "sglang":
            return
        room = max(0, self.max_batch - len(self._running))
        for seq in itertools.islice(self._waiting, room):
            seq.round_cached = len(self.radix.match_prefix(seq.req.input_ids[:-1])[0])

    def _prefill(self, seq: _Sequence, tokens: Sequence[int]) -> None:
        for start in range(0, len(tokens), self.prefill_chunk):
            chunk = tokens[start : start + self.prefill_chunk]
            new = self._take_slots(seq, len(chunk))
            index = torch.cat([seq.slots[: seq.n_ctx], new])[None, :]
            q = torch.arange(len(chunk))[:, None]
            mask = (torch.arange(index.shape[1])[None, :] <= seq.n_ctx + q)[None, None]
            positions = torch.arange(seq.n_ctx, seq.n_ctx + len(chunk))[None, :]
            self._forward(torch.tensor([list(chunk)]), positions, mask, new, index)
            seq.push(new)
            self.prefill_tokens += len(chunk)
        if self.prefix_cache and tokens:
            self._give_to_tree(seq, seq.req.input_ids[: seq.n_ctx])

    def _take_slots(self, seq: _Sequence, n: int) -> torch.Tensor:
        short = n - self.pool.free_slots
        if short > 0:
            self.radix.evict(short)
        seq.reserved -= n
        self._reserved -= n
        return self.pool.alloc(n)

    def _give_to_tree(self, seq: _Sequence, key: Sequence[int]) -> None:
        """Insert ``key`` (the sequence's first ``len(key)`` tokens) into the radix tree, free
        the duplicate slots, and lock the node where ``key`` ends instead of the old one."""
        present = self.radix.insert(key, seq.slots[: len(key)])
        if present > seq.tree_len:
            self.pool.free(seq.slots[seq.tree_len : present])
        tree_slots, node = self.radix.match_prefix(key)
        self.radix.inc_lock_ref(node)
        self.radix.dec_lock_ref(seq.node)
        seq.slots[: len(key)] = tree_slots
        seq.node, seq.tree_len = node, len(key)

    # ------------------------------------------------------------------ decode
    def _decode_step(self) -> None:
        rows = self._running
        new = torch.cat([self._take_slots(s, 1) for s in rows])
        lengths = torch.tensor([s.n_ctx + 1 for s in rows])
        width = int(lengths.max())
        index = torch.zeros(len(rows), width, dtype=torch.long)
        for b, s in enumerate(rows):
            s.push(new[b : b + 1])
            index[b, : s.n_ctx] = s.slots[: s.n_ctx]
        mask = (torch.arange(width)[None, :] < lengths[:, None])[:, None, None, :]
        tokens = torch.tensor([[s.next_token] for s in rows])
        logits = self._forward(tokens, (lengths - 1)[:, None], mask, new, index)
        self.decode_tokens += len(rows)
        # Constrained rows sample from, and report logprobs under, the masked distribution.
        logits = mask_logits(logits, [s.choice for s in rows])
        picked, logps = sample_batch(
            logits, [s.req.sampling for s in rows], [s.rng.random() for s in rows]
        )
        still, done = [], []
        for s, token, lp in zip(rows, picked, logps, strict=True):
            s.output.append(token)
            s.logprobs.append(lp)
            sp = s.req.sampling
            stop = token in sp.stop_token_ids or (token == self.eos_token_id and not sp.ignore_eos)
            if s.choice is not None:
                s.choice.advance(token)
                stop = stop or s.choice.complete
            if stop or len(s.output) >= s.max_new:
                done.append((s, "stop" if stop else "length"))
            else:
                s.next_token = token
                still.append(s)
        self._running = still  # before any result is out: stats() never counts a finished one
        for s, reason in done:
            self._finish(s, reason=reason)

    def _forward(self, tokens, positions, mask, new_slots, index) -> torch.Tensor:
        out = self.model(
            input_ids=tokens.to(self.device),
            position_ids=positions.to(self.device),
            attention_mask=mask.to(self.device),
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_arg: _PagedView(self.pool, new_slots, index)},
        )
        self.forward_steps += 1
        return out.logits[:, -1]

    def _finish(self, seq: _Sequence, *, reason: str = "", error: Exception | None = None):
        self._reserved -= seq.reserved
        seq.reserved = 0
        if error is None and self.prefix_cache:
            # The last sampled token was never fed, so its KV does not exist: n_ctx stops short.
            self._give_to_tree(seq, (*seq.req.input_ids, *seq.output)[: seq.n_ctx])
        self.pool.free(seq.slots[seq.tree_len : seq.n_ctx])
        self.radix.dec_lock_ref(seq.node)
        if error is not None:
            seq.future.set_exception(PolicyError(f"generation failed: {error}"))
            return
        seq.future.set_result(
            GenerateResult(
                output_ids=tuple(seq.output),
                logprobs=tuple(seq.logprobs),
                finish_reason=reason,
                prompt_tokens=len(seq.req.input_ids),
                cached_tokens=self._reported_cached(seq),
                latency_s=time.perf_counter() - seq.t0,
                rid=seq.req.rid,
                weight_version=self.weight_version,
            )
        )

    def _reported_cached(self, seq: _Sequence) -> int:
        if self.cache_report == "sglang":  # eviction within the round can only shorten it
            return min(seq.round_cached, seq.cached)
        return seq.cached

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        with torch.inference_mode():
            while self._next_batch():
                try:
                    self._run_controls()
                    self._admit()
                    if self._running:
                        self._decode_step()
                except Exception as exc:  # never leave callers waiting on a dead loop
                    self._fail_all(exc)

    def _next_batch(self) -> bool:
        """Wait for work; move new requests in. False when the engine is closed."""
        with self._cond:
            while not (self._stopped or self._running or self._inbox or self._controls
                       or (self._waiting and not self._controls)):  # fmt: skip
                self._cond.wait()
            if self._stopped:
                self._fail_all(PolicyError("the engine was closed"))
                for _, fut in self._controls:
                    fut.set_exception(PolicyError("the engine was closed"))
                return False
            self._waiting.extend(self._inbox)
            self._inbox.clear()
            return True

    def _run_controls(self) -> None:
        while self._controls and not self._running:
            with self._cond:
                fn, fut = self._controls.popleft()
            try:
                fut.set_result(fn())
            except Exception as exc:
                fut.set_exception(exc)

    def _fail_all(self, exc: Exception) -> None:
        err = exc if isinstance(exc, PolicyError) else PolicyError(f"engine error: {exc}")
        for seq in [*self._running, *self._waiting, *self._inbox]:
            if not seq.future.done():
                seq.future.set_exception(err)
        self._running, self._reserved = [], 0
        self._waiting.clear()
        self._inbox.clear()
        self.pool.reset()
        self.radix = RadixCache(self.pool)  # the failed requests' locks go with the old tree


_LIVE: weakref.WeakSet[BatchEngine] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Stop engine threads before the interpreter tears torch down under them."""
    for engine in list(_LIVE):
        engine.close()


def _cache_argument(model: Any) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.24 warns on the old name)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
