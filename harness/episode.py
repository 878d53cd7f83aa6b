"""One ReAct episode: env ↔ policy through the token-level transcript (a chain rollout).

The tree harness builds on the same steps; this function is the reference loop used to make
training data for the embedded model, to evaluate policies, and by end-to-end tests. Env steps
run in a worker thread so the event loop keeps serving other episodes' policy calls.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from treegym.envs import TextEnv
from treegym.policies.protocol import GenerateRequest, Policy, SamplingParams
from treegym.policies.react import Transcript
from treegym.policies.template import Template


@dataclass
class EpisodeResult:
    """A finished episode and how it ended."""

    transcript: Transcript
    rewards: list[float] = field(default_factory=list)
    won: bool = False
    end: str = "running"
    """``terminated``, ``truncated`` (env step limit), ``context`` (context-length guard)."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    policy_s: float = 0.0

    @property
    def total_reward(self) -> float:
        return sum(self.rewards)


def turn_seed(episode_seed: int, turn: int) -> int:
    """Sampling seed of one turn: reproducible, and different across turns and episodes."""
    digest = hashlib.sha256(f"{episode_seed}:{turn}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


async def play_episode(
    env: TextEnv,
    policy: Policy,
    template: Template,
    *,
    seed: int,
    options: dict[str, Any] | None = None,
    sampling: SamplingParams | None = None,
    context_length: int = 2048,
) -> EpisodeResult:
    """Play one episode; the transcript's ids are exactly what the policy saw at each turn."""
    sampling = sampling or SamplingParams(max_new_tokens=48)
    sampling = replace(sampling, stop_token_ids=tuple({*sampling.stop_token_ids, template.end_id}))
    obs, info = await asyncio.to_thread(env.reset, seed=seed, options=options)
    transcript = Transcript(template.prompt_ids(obs, info.get("admissible_commands")))
    result = EpisodeResult(transcript)
    for turn in range(10**9):
        if len(transcript.ids) + sampling.max_new_tokens > context_length:
            result.end = "context"
            break
        request = GenerateRequest(
            input_ids=tuple(transcript.ids),
            sampling=replace(sampling, seed=turn_seed(seed, turn)),
            hints=info,
            constraint=template.constraint(info.get("admissible_commands")),
        )
        (generated,) = await policy.generate([request])
        result.prompt_tokens += generated.prompt_tokens
        result.cached_tokens += generated.cached_tokens
        result.policy_s += generated.latency_s
        reading = template.read(generated)
        obs, reward, terminated, truncated, info = await asyncio.to_thread(env.step, reading.action)
        transcript.add_turn(reading, template.observation_ids(obs, info.get("admissible_commands")))
        result.rewards.append(reward)
        if terminated or truncated:
            result.end = "terminated" if terminated else "truncated"
            result.won = bool(info.get("won"))
            break
    return result
