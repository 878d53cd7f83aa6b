"""Scripted policies: no model, mixed rewards, same token path as a model.

``expert`` follows the env's expert plan with probability ``1 − epsilon`` and otherwise picks a
uniformly random admissible command; ``random`` always picks a random admissible command. They
read the plan and the commands from ``GenerateRequest.hints`` (never from the prompt) and answer
with the ids of ``"Thought: … Action: …<|end|>"`` through the template's tokenizer, so a
scripted transcript is token-for-token what a model's would be.

A request whose prompt ends inside an unfinished assistant turn (a TreePO segment boundary: ids
after the last ``<|assistant|>``) is a *continuation*: the policy finishes a turn whose text
extends those ids, drawing among the actions that could have written them, instead of starting
the text again (which would never end the turn).

Logprobs are exact for the scripted distribution over actions: a whole turn puts the action's
probability (:meth:`ScriptedPolicy.probability`) on its first generated token (the rest of the
text is a deterministic function of the choice). A turn written in segments puts, on each
segment's first token, log P(actions consistent with the turn so far, after the segment) −
log P(… before it), so a turn's logprobs add up to its action's probability however it is cut.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .protocol import GenerateRequest, GenerateResult, Policy, PolicyError
from .react import ASSISTANT, ReActTemplate

RANDOM_THOUGHT = "let me try something"


def plan_thought(step: str) -> str:
    """The thought of an expert-plan step: it names the step, which only the plan knows."""
    return f"the plan says {step}"


class ScriptedPolicy(Policy):
    """``mode`` is ``"expert"`` (noisy expert) or ``"random"`` (random admissible)."""

    def __init__(
        self, template: ReActTemplate, mode: str = "expert", epsilon: float = 0.2, seed: int = 0
    ) -> None:
        if mode not in ("expert", "random"):
            raise ValueError(f"scripted policy mode must be 'expert' or 'random', got {mode!r}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.template, self.mode, self.epsilon, self.seed = template, mode, epsilon, seed
        self._rng = random.Random(seed)
        # A handful of distinct turn texts recur all run long: tokenize each once.
        self._encode = functools.lru_cache(4096)(lambda text: tuple(template.encode(text)))
        # token lookups cost more than a scripted turn; a text-only template (no tokenizer:
        # choose() alone, as the embedded model's data script uses it) has no end id
        text_only = template.tokenizer is None
        self._end = None if text_only else template.end_id
        self._assistant = (
            None if text_only else int(template.tokenizer.convert_tokens_to_ids(ASSISTANT))
        )

    def identity(self) -> dict[str, Any]:
        return {"policy": f"scripted:{self.mode}", "epsilon": self.epsilon, "seed": self.seed}

    def _setting(self, hints: Mapping[str, Any]) -> tuple[list[str], list[str], float]:
        """``(plan, pool of random picks, epsilon)`` for ``hints``."""
        admissible: Sequence[str] = hints.get("admissible_commands") or []
        plan: Sequence[str] = hints.get("expert_plan") or []
        if not admissible and not plan:
            raise PolicyError("scripted policy needs hints with admissible_commands or expert_plan")
        eps = 1.0 if self.mode == "random" or not plan else self.epsilon
        return list(plan), list(admissible) or list(plan[:1]), eps

    def probability(self, hints: Mapping[str, Any], action: str) -> float:
        """Probability that a turn for ``hints`` takes ``action``."""
        plan, pool, eps = self._setting(hints)
        return eps * pool.count(action) / len(pool) + (1 - eps) * (bool(plan) and action == plan[0])

    def choose(self, hints: dict[str, Any], rng: random.Random) -> tuple[str, float, str]:
        """``(action, probability, thought)`` for one request."""
        plan, pool, eps = self._setting(hints)
        if plan and rng.random() >= eps:
            action, thought = plan[0], plan_thought(plan[0])
        else:
            action, thought = rng.choice(pool), RANDOM_THOUGHT
        return action, self.probability(hints, action), thought

    def _turns(self, hints: Mapping[str, Any]) -> list[tuple[str, tuple[int, ...], float]]:
        """``(action, ids, probability)`` of every turn text the policy can write for ``hints``
        (the plan's action has two texts when a random pick can also take it)."""
        plan, pool, eps = self._setting(hints)
        texts = [(a, RANDOM_THOUGHT, eps * pool.count(a) / len(pool))
                 for a in dict.fromkeys(pool)] if eps > 0 else []  # fmt: skip
        if plan and eps < 1:
            texts.append((plan[0], plan_thought(plan[0]), 1 - eps))
        encode, text = self._encode, self.template.assistant_text
        return [(a, encode(text(t, a)), w) for a, t, w in texts]

    def _mass(self, hints: Mapping[str, Any], turns: list, prefix: Sequence[int]) -> float:
        """Probability of the actions with a turn text that extends ``prefix``."""
        n = len(prefix)
        actions = {a for a, ids, _ in turns if ids[:n] == tuple(prefix)}
        return sum(self.probability(hints, a) for a in actions)

    def _turn_so_far(self, input_ids: Sequence[int]) -> tuple[int, ...]:
        """Ids generated since the prompt's last ``<|assistant|>`` (empty at a turn's start)."""
        assistant = self._assistant
        ids = tuple(input_ids)
        for i in range(len(ids) - 1, -1, -1):
            if ids[i] == assistant:
                return ids[i + 1 :]
        return ()

    def _answer(self, req: GenerateRequest, rng: random.Random) -> tuple[tuple[int, ...], float]:
        """``(new ids, logprob of the first one)`` for one request (module docstring)."""
        hints = dict(req.hints or {})
        done = self._turn_so_far(req.input_ids)
        limit = req.sampling.max_new_tokens
        if not done:
            action, prob, thought = self.choose(hints, rng)
            ids = self._encode(self.template.assistant_text(thought, action))
            if len(ids) <= limit:  # a whole turn: the action's probability
                return ids, math.log(prob)
            turns, before, new = self._turns(hints), 1.0, ids[:limit]
        else:
            turns = self._turns(hints)
            texts = [t for t in turns if len(t[1]) > len(done) and t[1][: len(done)] == done]
            if not texts:
                raise PolicyError("scripted policy cannot continue a turn it did not write")
            actions = list(dict.fromkeys(a for a, _, _ in texts))
            probs = [self.probability(hints, a) for a in actions]
            action = rng.choices(actions, weights=probs)[0]
            mine = [t for t in texts if t[0] == action]
            _, ids, _ = rng.choices(mine, weights=[w for _, _, w in mine])[0]
            before, new = sum(probs), ids[len(done) :][:limit]
        return new, math.log(self._mass(hints, turns, done + new) / before)

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = []
        for req in requests:
            t = time.perf_counter()
            rng = random.Random(req.sampling.seed) if req.sampling.seed is not None else self._rng
            ids, first = self._answer(req, rng)
            finished = ids[-1] == self._end
            results.append(
                GenerateResult(
                    output_ids=ids,
                    logprobs=(first,) + (0.0,) * (len(ids) - 1),
                    finish_reason="stop" if finished else "length",
                    prompt_tokens=len(req.input_ids),
                    cached_tokens=0,
                    latency_s=time.perf_counter() - t,
                    rid=req.rid,
                )
            )
        return results
