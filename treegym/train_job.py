"""What ``treegym train`` does once its options are parsed: wire a collect config and the update
knobs into a :class:`~treegym.harness.train.TrainPlan` and run it.

Tasks: each round collects ``n_tasks`` new tasks. With ``--tasks embedded`` they come from the
embedded mix's RL seeds (training-distribution seeds the model never saw in its supervised data,
``treegym.envs.embedded_mix.RL_SEEDS``); a pattern with ``{seed}`` advances ``task_seed`` by
``n_tasks`` per round. Held-out evaluation plays the mix's evaluation seeds (never trained on),
greedy (one episode per task) and at T=1 (``eval_episodes`` per task).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from treegym.config import (
    CollectConfig,
    ConfigError,
    build_executor,
    build_policy,
    prepare_tasks,
    task_list,
)


@dataclass
class TrainOptions:
    """``treegym train``'s own knobs (the collect config holds the rest)."""

    rounds: int = 10
    update: dict[str, Any] = field(default_factory=dict)
    """:class:`~treegym.harness.trainer.UpdateConfig` fields."""
    eval_every: int = 2
    eval_tasks: int = 16
    eval_episodes: int = 4
    out: Path = Path("train")
    model: Path | None = None
    """Initial weights for a remote engine (``--policy vllm:URL``); default: the policy's."""
    engine_token_budget: int | None = None
    """Stop once the rounds have cost this many engine tokens (``rounds`` stays the cap)."""


def round_config(cfg: CollectConfig, r: int) -> CollectConfig:
    """The collect config of round ``r``: its own tasks and its own sampling seed."""
    n = cfg.resolved_n_tasks or 1
    tasks = "embedded-rl" if cfg.task_source == "embedded" else cfg.tasks
    return dataclasses.replace(cfg, tasks=tasks, task_seed=cfg.task_seed + r * n,
                               seed=cfg.seed + r)  # fmt: skip


def build_plan(cfg: CollectConfig, opts: TrainOptions) -> Any:
    from treegym.envs.embedded_mix import EVAL_SEEDS, env_of
    from treegym.harness import Runner, Task
    from treegym.harness.evaluate import evaluate_mix
    from treegym.harness.train import TrainPlan
    from treegym.harness.trainer import TrainError, UpdateConfig
    from treegym.policies import SamplingParams

    try:
        update = UpdateConfig(**opts.update)
    except (TypeError, TrainError) as exc:
        raise ConfigError(str(exc)) from None
    policy, template = build_policy(cfg)
    initial = opts.model or getattr(policy, "model_path", None)
    if initial is None:
        raise ConfigError(f"{cfg.policy}: give the served model's weights with --model PATH")
    sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)

    def make_runner(r: int) -> Runner:
        rc = round_config(cfg, r)
        return Runner(policy=policy, template=template, executor=build_executor(rc),
                      sampler=rc.build_sampler(), sampling=sampling,
                      context_length=rc.context_length, token_budget=rc.token_budget,
                      concurrency=rc.concurrency, seed=rc.seed)  # fmt: skip

    def round_tasks(r: int) -> list[Task]:
        rc = round_config(cfg, r)
        specs = prepare_tasks(rc, task_list(rc))
        return [Task(task_id, {"task": task}, seed=s) for task_id, task, s in specs]

    mix = env_of(cfg.env)

    async def held_out() -> dict[str, float]:
        seeds = EVAL_SEEDS[: opts.eval_tasks]
        greedy = await evaluate_mix(policy, template, mix, seeds, episodes=1, temperature=0.0)
        sampled = await evaluate_mix(policy, template, mix, seeds, episodes=opts.eval_episodes)
        g, s = greedy.summary(), sampled.summary()
        return {"eval_greedy_success": g["success_rate"], "eval_t1_success": s["success_rate"],
                "eval_t1_mixed_share": s["mixed_task_share"]}  # fmt: skip

    return TrainPlan(
        out=opts.out, rounds=opts.rounds, initial_model=Path(initial), policy=policy,
        make_runner=make_runner, round_tasks=round_tasks, update=update,
        evaluate=held_out if mix is not None and opts.eval_tasks else None,
        eval_every=opts.eval_every, engine_token_budget=opts.engine_token_budget,
        config={"collect": cfg.identity(), "rounds": opts.rounds, "update": opts.update,
                "eval": [opts.eval_every, opts.eval_tasks, opts.eval_episodes],
                "engine_token_budget": opts.engine_token_budget,
                "model": str(initial)},
    )  # fmt: skip


def run_train(cfg: CollectConfig, opts: TrainOptions, *, resume: bool) -> list[dict[str, Any]]:
    """Train; the metrics rows. Bad input is a :class:`ConfigError` (one line, exit 2)."""
    from treegym.harness.train import train
    from treegym.harness.trainer import TrainError

    if opts.rounds < 1:
        raise ConfigError(f"--rounds must be >= 1, got {opts.rounds}")
    plan = build_plan(cfg, opts)
    try:
        return asyncio.run(train(plan, resume=resume))
    except TrainError as exc:
        raise ConfigError(str(exc)) from None
