"""A simulated inference engine: GPU-class timing, no model (``--policy sim:KEY=VALUE,...``).

It answers like :class:`~treegym.policies.scripted.ScriptedPolicy` — real token ids through the
template's tokenizer, ``"Thought: … Action: <command><|end|>"`` with a command drawn from the
request's admissible commands (``GenerateRequest.hints``), so the env accepts it — but it takes
the time an engine of the configured size would, so the collector can be measured against a
fast engine on a CPU (does the driver keep it fed? does the writer keep up?).

The timing model (continuous batching, decode-bound):

* at most ``batch`` requests run at once; the rest wait in arrival order for a slot;
* a running request takes ``latency`` seconds (scheduling, network) + its uncached prompt
  tokens at ``prefill`` tokens/s + its generated tokens at one token per decode step;
* a decode step gives one token to every running request and lasts ``batch / tps`` seconds
  whatever its occupancy (decode is memory-bound), so the engine makes ``tps`` tokens/s only
  with a full batch: its *occupancy* (slots in use over ``batch``, averaged over the
  wall; :meth:`SimEngine.occupancy`) is what a collector that keeps it fed drives to 1;
* with ``cache=on`` a radix-style prefix cache (16-token blocks, LRU, ``cache_tokens`` in all)
  holds every finished request's prompt and output: a prompt's leading cached blocks are
  reported as ``cached_tokens`` and cost no prefill. Requests sent together (a node's children)
  see the cache as it was before them, as SGLang reports them.

Each turn has ``tokens`` generated ids (the thought is padded with filler words to that
length, the request's ``max_new_tokens`` caps it), so token counts look like a model's.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .protocol import GenerateRequest, GenerateResult, Policy, PolicyError
from .react import ASSISTANT, ReActTemplate

BLOCK = 16
"""Prefix-cache granularity in tokens (vLLM's and SGLang's page sizes are of this order)."""
FILLER = "hmm"


@dataclass(frozen=True)
class SimConfig:
    """The simulated engine's size (see the module docstring); the spec's keys in brackets."""

    tps: float = 20_000.0
    """Decode tokens per second with a full batch (``tps``)."""
    batch: int = 256
    """Requests decoded together (``batch``)."""
    latency: float = 0.0
    """Seconds per request before its first token (``latency``)."""
    prefill: float = 400_000.0
    """Uncached prompt tokens computed per second (``prefill``)."""
    cache: bool = True
    """Prefix cache on or off (``cache=on|off``)."""
    cache_tokens: int = 4_000_000
    """Prefix-cache capacity in tokens (``cache_tokens``)."""
    tokens: int = 48
    """Generated ids per turn (``tokens``)."""

    def __post_init__(self) -> None:
        for name, low in (("tps", 0), ("prefill", 0)):
            if not getattr(self, name) > low:
                raise ValueError(f"sim {name} must be > 0, got {getattr(self, name)}")
        for name in ("batch", "tokens", "cache_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"sim {name} must be >= 1, got {getattr(self, name)}")
        if not self.latency >= 0:
            raise ValueError(f"sim latency must be >= 0 seconds, got {self.latency}")

    @classmethod
    def parse(cls, spec: str) -> SimConfig:
        """``"tps=20000,batch=256,latency=0.005,prefill=400000,cache=on,tokens=48"`` (any
        subset, any order; empty: the defaults)."""
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in spec.split(","))):
            key, eq, raw = item.partition("=")
            key = key.strip()
            if not eq or key not in types:
                raise ValueError(f"sim: {item!r} is not KEY=VALUE with KEY one of "
                                 f"{', '.join(types)}")  # fmt: skip
            values[key] = _value(key, raw.strip(), types[key])
        return cls(**values)

    @property
    def step_s(self) -> float:
        """Seconds per decode step."""
        return self.batch / self.tps


def _value(key: str, raw: str, kind: str) -> Any:
    if kind == "bool":
        if raw not in ("on", "off"):
            raise ValueError(f"sim {key} is on or off, got {raw!r}")
        return raw == "on"
    try:
        return int(raw) if kind == "int" else float(raw)
    except ValueError:
        raise ValueError(f"sim {key} takes a number, got {raw!r}") from None


class PrefixCache:
    """Which leading 16-token blocks of a sequence an engine would hold (LRU by blocks)."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = max(1, capacity_tokens // BLOCK)
        self._blocks: OrderedDict[int, None] = OrderedDict()

    @staticmethod
    def _chain(ids: Sequence[int]) -> list[int]:
        """One hash per whole block, each covering everything before it (a radix path)."""
        ids, h, out = tuple(ids), 0, []
        for i in range(0, len(ids) - BLOCK + 1, BLOCK):
            h = hash((h, ids[i : i + BLOCK]))
            out.append(h)
        return out

    def cached(self, ids: Sequence[int]) -> int:
        """Leading tokens of ``ids`` held (their blocks become most recently used)."""
        n = 0
        for h in self._chain(ids):
            if h not in self._blocks:
                break
            self._blocks.move_to_end(h)
            n += BLOCK
        return n

    def insert(self, ids: Sequence[int]) -> None:
        for h in self._chain(ids):
            self._blocks[h] = None
            self._blocks.move_to_end(h)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)


class SimEngine:
    """The clock of the simulated engine: slots, queueing and how long a request runs."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.running = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.requests = self.generated_tokens = self.computed_prompt_tokens = 0
        self.queue_s = 0.0
        """Seconds requests waited for a slot (summed)."""
        self.peak = 0
        """Most requests that ran at once (never above ``batch``)."""
        self._area, self._since = 0.0, None
        """Slot-seconds in use up to ``_since`` (the integral of ``running`` over time)."""

    def _advance(self, now: float) -> None:
        if self._since is not None:
            self._area += self.running * (now - self._since)
        self._since = now

    def slot_seconds(self, now: float) -> float:
        """Slot-seconds used so far (``now``: the event loop's clock)."""
        self._advance(now)
        return self._area

    def occupancy(self, start: tuple[float, float], end: tuple[float, float]) -> float:
        """Share of the engine's capacity used between two ``(loop time, slot_seconds)``
        marks: slots in use over ``batch`` slots, averaged over the window."""
        return (end[1] - start[1]) / (self.config.batch * (end[0] - start[0]))

    async def run(self, uncached: int, new_tokens: int) -> None:
        """Hold a slot for as long as the request runs (waiting for one first if full)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        if self.running < self.config.batch:
            self._advance(t0)
            self.running += 1
            self.peak = max(self.peak, self.running)
        else:
            slot = loop.create_future()
            self._waiting.append(slot)
            await slot  # a finishing request hands its slot over
        self.queue_s += loop.time() - t0
        c = self.config
        duration = c.latency + uncached / c.prefill + new_tokens * c.step_s
        try:
            await asyncio.sleep(duration)
        finally:
            self._advance(loop.time())
            self.requests += 1
            self.generated_tokens += new_tokens
            self.computed_prompt_tokens += uncached
            while self._waiting and self._waiting[0].done():  # cancelled waiters
                self._waiting.popleft()
            if self._waiting:
                self._waiting.popleft().set_result(None)
            else:
                self.running -= 1


class SimPolicy(Policy):
    """A simulated engine answering with admissible commands (see the module docstring)."""

    def __init__(self, template: ReActTemplate, config: SimConfig | None = None,
                 seed: int = 0) -> None:  # fmt: skip
        self.template, self.config, self.seed = template, config or SimConfig(), seed
        self.engine = SimEngine(self.config)
        self.cache = PrefixCache(self.config.cache_tokens) if self.config.cache else None
        self._rng = random.Random(seed)
        self._assistant = int(template.tokenizer.convert_tokens_to_ids(ASSISTANT))
        self._end = template.end_id

    def identity(self) -> dict[str, Any]:
        return {"policy": "sim", "seed": self.seed,
                **{f.name: getattr(self.config, f.name) for f in fields(SimConfig)}}  # fmt: skip

    @functools.lru_cache(maxsize=8192)  # noqa: B019 - one policy per run, bounded
    def turn_ids(self, action: str, target: int) -> tuple[int, ...]:
        """The ids of a turn taking ``action``, its thought padded to about ``target`` ids."""
        ids = self._encode(0, action)
        if len(ids) >= target:
            return ids
        per_word = max(1, (len(self._encode(8, action)) - len(ids)) // 8)
        words = (target - len(ids)) // per_word
        while words > 0 and len(ids := self._encode(words, action)) > target:
            words -= 1
        return ids if words > 0 else self._encode(0, action)

    def _encode(self, words: int, action: str) -> tuple[int, ...]:
        thought = " ".join([FILLER] * words) or "go"
        return tuple(self.template.encode(self.template.assistant_text(thought, action)))

    def _answer(self, req: GenerateRequest) -> tuple[tuple[int, ...], float]:
        """``(new ids, logprob of the first)``: a uniform pick among the admissible commands
        (among those whose turn extends the ids of a cut turn the prompt ends in)."""
        hints: Mapping[str, Any] = req.hints or {}
        commands = list(dict.fromkeys(hints.get("admissible_commands") or ()))
        if not commands:
            raise PolicyError("sim policy needs hints with admissible_commands")
        limit = req.sampling.max_new_tokens
        done = self._turn_so_far(req.input_ids)
        turns = [self.turn_ids(c, self.config.tokens) for c in commands]
        if done:
            turns = [t for t in turns if len(t) > len(done) and t[: len(done)] == done]
            if not turns:
                raise PolicyError("sim policy cannot continue a turn it did not write")
        seed = req.sampling.seed
        pick = seed % len(turns) if seed is not None else self._rng.randrange(len(turns))
        return turns[pick][len(done) :][:limit], -math.log(len(turns))

    def _turn_so_far(self, input_ids: Sequence[int]) -> tuple[int, ...]:
        for i in range(len(input_ids) - 1, -1, -1):
            if input_ids[i] == self._assistant:
                return tuple(input_ids[i + 1 :])
        return ()

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        answers = [self._answer(req) for req in requests]
        seen: dict[tuple[int, ...], int] = {}  # requests sent together share one lookup
        for req in requests:
            if req.input_ids not in seen:
                seen[req.input_ids] = self.cache.cached(req.input_ids) if self.cache else 0
        first = {p: True for p in seen}  # the engine prefills a shared prompt once
        runs = []
        for req, (ids, _) in zip(requests, answers, strict=True):
            uncached = (len(req.input_ids) - seen[req.input_ids]) if first[req.input_ids] else 0
            first[req.input_ids] = False
            runs.append(self.engine.run(uncached, len(ids)))
        await asyncio.gather(*runs)
        if self.cache is not None:
            for req, (ids, _) in zip(requests, answers, strict=True):
                self.cache.insert(tuple(req.input_ids) + ids)
        latency = loop.time() - t0
        return [
            GenerateResult(
                output_ids=ids,
                logprobs=(lp,) + (0.0,) * (len(ids) - 1),
                finish_reason="stop" if ids[-1:] == (self._end,) else "length",
                prompt_tokens=len(req.input_ids),
                cached_tokens=seen[req.input_ids],
                latency_s=latency,
                rid=req.rid,
            )
            for req, (ids, lp) in zip(requests, answers, strict=True)
        ]
