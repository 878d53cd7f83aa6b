"""Scripted policies: no model, mixed rewards, same token path as a model.

``expert`` follows the env's expert plan with probability ``1 − epsilon`` and otherwise picks a
uniformly random admissible command; ``random`` always picks a random admissible command. They
read the plan and the commands from ``GenerateRequest.hints`` (never from the prompt) and answer
with the ids of ``"Thought: … Action: …<|end|>"`` through the template's tokenizer, so a
scripted transcript is token-for-token what a model's would be.

Logprobs are exact for the scripted distribution: the whole choice probability is put on the
first generated token (the rest of the text is a deterministic function of the choice).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from typing import Any

from .protocol import GenerateRequest, GenerateResult, Policy, PolicyError
from .react import ReActTemplate


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

    def identity(self) -> dict[str, Any]:
        return {"policy": f"scripted:{self.mode}", "epsilon": self.epsilon, "seed": self.seed}

    def choose(self, hints: dict[str, Any], rng: random.Random) -> tuple[str, float, str]:
        """``(action, probability, thought)`` for one request."""
        admissible: Sequence[str] = hints.get("admissible_commands") or []
        plan: Sequence[str] = hints.get("expert_plan") or []
        if not admissible and not plan:
            raise PolicyError("scripted policy needs hints with admissible_commands or expert_plan")
        eps = 1.0 if self.mode == "random" or not plan else self.epsilon
        pool = list(admissible) or list(plan[:1])
        if plan and rng.random() >= eps:
            action, thought = plan[0], f"the plan says {plan[0]}"
        else:
            action, thought = rng.choice(pool), "let me try something"
        prob = eps * pool.count(action) / len(pool) + (1 - eps) * (bool(plan) and action == plan[0])
        return action, prob, thought

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = []
        for req in requests:
            t = time.perf_counter()
            rng = random.Random(req.sampling.seed) if req.sampling.seed is not None else self._rng
            action, prob, thought = self.choose(dict(req.hints or {}), rng)
            ids = self.template.encode(self.template.assistant_text(thought, action))
            ids = ids[: req.sampling.max_new_tokens]
            logprobs = [math.log(prob)] + [0.0] * (len(ids) - 1)
            finished = ids[-1] == self.template.end_id
            results.append(
                GenerateResult(
                    output_ids=tuple(ids),
                    logprobs=tuple(logprobs),
                    finish_reason="stop" if finished else "length",
                    prompt_tokens=len(req.input_ids),
                    cached_tokens=0,
                    latency_s=time.perf_counter() - t,
                    rid=req.rid,
                )
            )
        return results
