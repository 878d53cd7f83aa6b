"""``treegym train``: the command line of the training loop (``treegym.train_job``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from treegym.cli_options import (
    ActionFormatOpt,
    ConcurrencyOpt,
    ConfigOpt,
    EnvOpt,
    GateOpt,
    GateParamOpt,
    KwargOpt,
    MaxNewTokensOpt,
    ParamOpt,
    PolicyOpt,
    SamplerOpt,
    SeedOpt,
    TasksOpt,
    TemperatureOpt,
    TemplateOpt,
    WorkersOpt,
    console,
    fail,
    parse_kwargs,
)


def train_command(
    env: EnvOpt = None,
    kwarg: KwargOpt = [],  # noqa: B006 - typer needs a literal default
    tasks: TasksOpt = None,
    n_tasks: Annotated[int, typer.Option(help="Tasks collected per round.")] = 8,
    sampler: SamplerOpt = None,
    param: ParamOpt = [],  # noqa: B006
    gate: GateOpt = None,
    gate_param: GateParamOpt = [],  # noqa: B006
    policy: PolicyOpt = None,
    model: Annotated[
        str | None, typer.Option(help="Initial weights when --policy is a server (vllm:URL).")
    ] = None,
    template: TemplateOpt = None,
    action_format: ActionFormatOpt = None,
    temperature: TemperatureOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    seed: SeedOpt = None,
    concurrency: ConcurrencyOpt = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
    rounds: Annotated[int, typer.Option(help="Collect → update rounds (the cap).")] = 10,
    engine_token_budget: Annotated[
        int | None, typer.Option(help="Stop once the rounds cost this many engine tokens.")
    ] = None,
    advantage: Annotated[
        str | None, typer.Option(help="Advantage column by estimator. [default: the sampler's]")
    ] = None,
    token_level: Annotated[
        bool, typer.Option("--token-level", help="Use the per-token column adv_<name>_tokens.")
    ] = False,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (papers: 1e-6).")] = 1e-6,
    clip_low: Annotated[float, typer.Option(help="PPO clip epsilon, lower side.")] = 0.2,
    clip_high: Annotated[float, typer.Option(help="Upper side (DAPO clip-higher: 0.28).")] = 0.2,
    loss_agg: Annotated[
        str, typer.Option(help="token-mean | seq-mean-token-mean | seq-mean-token-sum.")
    ] = "token-mean",
    kl_coef: Annotated[float, typer.Option(help="k3 KL to the initial policy (GRPO: 0.04).")] = 0,
    epochs: Annotated[int, typer.Option(help="Passes over a round's samples.")] = 1,
    mini_batches: Annotated[int, typer.Option(help="Optimizer steps per pass.")] = 1,
    micro_batch: Annotated[int, typer.Option(help="Samples per forward/backward.")] = 8,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping.")] = 1.0,
    eval_every: Annotated[int, typer.Option(help="Held-out evaluation every N rounds.")] = 2,
    eval_tasks: Annotated[int, typer.Option(help="Held-out tasks (0: no evaluation).")] = 16,
    eval_episodes: Annotated[int, typer.Option(help="Episodes per task at T=1.")] = 4,
    out: Annotated[str, typer.Option(help="Training folder.")] = "train",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the training in --out.")
    ] = False,
) -> None:
    """Train the policy on its own tree rollouts: rounds of collect → clipped policy-gradient
    update → new weights to the engine → collect, with held-out evaluation and metrics."""
    from treegym import config as config_mod
    from treegym.train_job import TrainOptions, run_train

    overrides: dict[str, Any] = {
        "env": env, "tasks": tasks, "n_tasks": n_tasks, "sampler": sampler, "gate": gate,
        "policy": policy, "template": template, "action_format": action_format,
        "temperature": temperature, "max_new_tokens": max_new_tokens,
        "seed": seed, "concurrency": concurrency, "workers": workers,
    }  # fmt: skip
    update = {
        "advantage": advantage, "token_level": token_level or None, "lr": lr,
        "clip_low": clip_low, "clip_high": clip_high, "loss_agg": loss_agg, "kl_coef": kl_coef,
        "epochs": epochs, "mini_batches": mini_batches, "micro_batch": micro_batch,
        "max_grad_norm": max_grad_norm, "seed": seed or 0,
    }  # fmt: skip
    opts = TrainOptions(rounds=rounds, update=update, eval_every=eval_every,
                        eval_tasks=eval_tasks, eval_episodes=eval_episodes, out=Path(out),
                        model=Path(model) if model else None,
                        engine_token_budget=engine_token_budget)  # fmt: skip
    try:
        cfg, _ = config_mod.resolve_config(
            config, overrides, env_kwargs=parse_kwargs(kwarg),
            sampler_params=parse_kwargs(param), gate_params=parse_kwargs(gate_param),
        )  # fmt: skip
        rows = run_train(cfg, opts, resume=resume)
    except config_mod.ConfigError as exc:
        fail(str(exc))
    console.print(f"trained {len([r for r in rows if r['round'] >= 0])} rounds into {out} "
                  f"(metrics: {out}/metrics.parquet; `treegym show {out}` plots them)")  # fmt: skip
