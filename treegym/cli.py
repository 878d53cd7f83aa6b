"""The ``treegym`` command line: the one place that wires envs, policies and the harness."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="treegym: tree rollouts for multi-turn agentic RL over snapshot-able text envs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_DEMO_GAME = "tw-cooking:recipe=2,take=1,go=6,seed=7"


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _parse_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse as JSON, strings otherwise."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            _fail(f"--kwarg takes key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


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
    seed: Annotated[int, typer.Option(help="Seed of the checked trajectories.")] = 0,
    trials: Annotated[int, typer.Option(help="Random snapshot depths per check.")] = 3,
    horizon: Annotated[int, typer.Option(help="Steps per reference trajectory.")] = 20,
    skip: Annotated[list[str], typer.Option(help="Check to skip (repeatable).")] = [],  # noqa: B006
) -> None:
    """Check that ENV_ID keeps the snapshot/restore contract; exit 1 on any failure."""
    import gymnasium

    from treegym.envs import TextEnvError, check_env

    try:
        report = check_env(
            env_id,
            seed=seed,
            trials=trials,
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
    engine: Annotated[str, typer.Option(help="'hf' (treegym's server) or 'sglang'.")] = "hf",
    model: Annotated[str, typer.Option(help="Model folder, or 'embedded'.")] = "embedded",
    host: Annotated[
        str, typer.Option(help="Address to bind (loopback unless told).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 30000,
    cache_mb: Annotated[int, typer.Option(help="hf: prefix KV cache budget (0 disables).")] = 256,
) -> None:
    """Serve a model over SGLang's native /generate protocol (extra args go to SGLang)."""
    from treegym.policies import PolicyError
    from treegym.policies.embedded import embedded_model_path

    try:
        path = str(embedded_model_path()) if model == "embedded" else model
    except FileNotFoundError as exc:
        _fail(str(exc))
    if engine == "sglang":
        from treegym.policies.launcher import launched, sglang_command

        url = f"http://{host}:{port}"
        try:
            with launched(sglang_command(path, host, port, ctx.args), url) as proc:
                console.print(f"SGLang serving {path} at {url} (Ctrl-C stops it)")
                proc.wait()
        except PolicyError as exc:
            _fail(str(exc))
        return
    if engine != "hf":
        _fail(f"unknown engine {engine!r}; choose 'hf' or 'sglang'")
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
