"""Measure the embedded model: success rate on held-out games at temperature 1, and speed.

Plays ``--games`` held-out tw-cooking games (seeds never used in training) ``--episodes`` times
each with ``HFPolicy`` and writes ``eval.json`` beside the weights. The model is meant to be a
real but weak agent: success between 20% and 80%, so groups of rollouts get mixed rewards.

Usage: ``python scripts/eval_embedded_model.py [--model data/embedded] [--games 40]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from treegym.envs.textworld_env import TextWorldEnv
from treegym.envs.textworld_games import make_game
from treegym.harness.episode import play_episode
from treegym.policies import ReActTemplate, SamplingParams
from treegym.policies.embedded import EVAL_SEEDS
from treegym.policies.embedded import embedded_game_spec as game_spec
from treegym.policies.hf import HFPolicy


async def evaluate(model: Path, games: int, episodes: int, temperature: float) -> dict:
    policy = HFPolicy(model)
    template = ReActTemplate(policy.tokenizer)
    sampling = SamplingParams(max_new_tokens=48, temperature=temperature)
    wins, total, generated, policy_s, prompt, cached, malformed, turns = 0, 0, 0, 0.0, 0, 0, 0, 0
    t0 = time.perf_counter()
    for seed in EVAL_SEEDS[:games]:
        env = TextWorldEnv(str(make_game(game_spec(seed))), max_episode_steps=20)
        for ep in range(episodes):
            result = await play_episode(
                env, policy, template, seed=seed * 100 + ep, sampling=sampling, context_length=2048
            )
            total += 1
            wins += result.won
            generated += sum(result.transcript.loss_mask)
            policy_s += result.policy_s
            prompt += result.prompt_tokens
            cached += result.cached_tokens
            turns += len(result.transcript.turns)
            malformed += sum(t.parse_error is not None for t in result.transcript.turns)
        env.close()
    return {
        "model_sha256": policy.identity()["model_sha256"],
        "parameters": policy.identity()["parameters"],
        "held_out_games": games,
        "episodes": total,
        "temperature": temperature,
        "success_rate": round(wins / total, 3),
        "malformed_turn_rate": round(malformed / max(1, turns), 3),
        "mean_turns": round(turns / total, 2),
        "generated_tokens_per_s": round(generated / policy_s, 1),
        "prefix_cache_hit_rate": round(cached / max(1, prompt), 3),
        "wall_s": round(time.perf_counter() - t0, 1),
        "device": "cpu",
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, default=Path("data/embedded"))
    ap.add_argument("--games", type=int, default=40)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=None, help="default: MODEL/eval.json")
    args = ap.parse_args()
    record = asyncio.run(evaluate(args.model, args.games, args.episodes, args.temperature))
    out = args.out or args.model / "eval.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
