"""Measure the embedded model's reward contrast on held-out tasks, per env and per family.

For each env of the embedded mix (``treegym.envs.embedded_mix``: TextWorld and ALFWorld) it
plays ``--tasks`` held-out tasks (seeds never used in training or checkpoint choice)
``--episodes`` times each at temperature 1 — a chain G=episodes group per task — through the
ordinary runner and ``HFPolicy``, and records: success, the share of tasks with mixed outcomes
(what gives GRPO a non-zero advantage), the distribution of per-task win rates, malformed
turns, and the engine's throughput. It writes ``eval.json`` beside the weights.

Usage: ``python scripts/eval_embedded_model.py [--model data/embedded] [--tasks 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from treegym.envs.embedded_mix import ENVS, EVAL_SEEDS, MAX_EPISODE_STEPS
from treegym.harness.evaluate import TaskOutcome, evaluate_mix
from treegym.policies import ReActTemplate
from treegym.policies.actions import parse_action_format
from treegym.policies.hf import HFPolicy


def print_outcome(o: TaskOutcome) -> None:
    print(f"  {o.task_id}: {o.wins}/{o.episodes} won", flush=True)


async def evaluate_model(
    model: Path,
    n_tasks: int,
    episodes: int,
    temperature: float,
    action_format: str = "action",
    envs: tuple[str, ...] = ENVS,
) -> dict:
    policy = HFPolicy(model)
    fmt = parse_action_format(action_format)
    template = ReActTemplate.for_model(policy.tokenizer, model, fmt)
    record: dict = {
        "model_sha256": policy.identity()["model_sha256"],
        "parameters": policy.identity()["parameters"],
        "temperature": temperature,
        "episodes_per_task": episodes,
        "eval_seeds_from": EVAL_SEEDS.start,
        "action_format": fmt.spec,
        "device": "cpu",
    }
    for env in envs:
        tokens0, t0 = policy.engine.decode_tokens, time.perf_counter()
        report = await evaluate_mix(policy, template, env, EVAL_SEEDS[:n_tasks],
                                    episodes=episodes, temperature=temperature,
                                    progress=print_outcome)  # fmt: skip
        wall = time.perf_counter() - t0
        record[env] = {
            **report.to_json(),
            "max_episode_steps": MAX_EPISODE_STEPS[env],
            "wall_s": round(wall, 1),
            "generated_tokens_per_s": round((policy.engine.decode_tokens - tokens0) / wall, 1),
        }
        print(f"{env}: {json.dumps(report.summary())}", flush=True)
    await policy.aclose()
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--model", type=Path, default=Path("data/embedded"))
    ap.add_argument("--tasks", type=int, default=30, help="held-out tasks per env")
    ap.add_argument("--episodes", type=int, default=8, help="episodes per task (>= 8)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--action-format", default="action",
                    help="action (the model's own line) or react-choice (its Action: constrained "
                         "to the admissible commands)")  # fmt: skip
    ap.add_argument("--env", choices=ENVS, nargs="+", default=list(ENVS))
    ap.add_argument("--out", type=Path, default=None, help="default: MODEL/eval.json")
    args = ap.parse_args()
    record = asyncio.run(evaluate_model(args.model, args.tasks, args.episodes, args.temperature,
                                        args.action_format, tuple(args.env)))  # fmt: skip
    out = args.out or args.model / "eval.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({env: record[env]["summary"] for env in args.env}, indent=2))


if __name__ == "__main__":
    main()
