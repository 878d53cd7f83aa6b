"""The ``treegym`` command line: the one place that wires envs, policies and the harness."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from treegym import config as config_mod

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
    engine: Annotated[
        str, typer.Option(help="'hf' (treegym's server), 'sglang' or 'vllm'.")
    ] = "hf",
    model: Annotated[str, typer.Option(help="Model folder, or 'embedded'.")] = "embedded",
    host: Annotated[
        str, typer.Option(help="Address to bind (loopback unless told).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 30000,
    cache_mb: Annotated[int, typer.Option(help="hf: prefix KV cache budget (0 disables).")] = 256,
) -> None:
    """Serve a model: treegym's engine or SGLang over SGLang's native /generate, or vLLM over
    its OpenAI API (extra args go to SGLang or vLLM)."""
    from treegym.policies import PolicyError
    from treegym.policies.embedded import embedded_model_path

    try:
        path = str(embedded_model_path()) if model == "embedded" else model
    except FileNotFoundError as exc:
        _fail(str(exc))
    if engine == "sglang":
        import signal

        from treegym.policies.launcher import launched, sglang_command

        # `kill` (SIGTERM) must stop SGLang too: by default Python dies without running the
        # launcher's cleanup, leaving the server holding its port and GPU.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        url = f"http://{host}:{port}"
        try:
            with launched(sglang_command(path, host, port, ctx.args), url) as proc:
                console.print(f"SGLang serving {path} at {url} (Ctrl-C stops it)")
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
def _check_env_id(env_id: str) -> None:
    import difflib

    import gymnasium

    import treegym.envs  # noqa: F401 - registers the built-in and plugin envs

    if env_id not in gymnasium.registry:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `treegym envs`"
        _fail(f"unknown env id {env_id!r}{hint}")


def _folder_precheck(out: Any, resume: bool, force: bool) -> None:
    """Refuse a folder holding a run (or anything) before models load and workers spawn."""
    from treegym.harness.export import MANIFEST, read_manifest

    if not out.exists():
        return
    if not out.is_dir():
        _fail(f"--out {out} is a file, not a run folder")
    entries = [p for p in out.iterdir() if p.name != ".writer.lock"]
    if not entries:
        return
    try:
        manifest = read_manifest(out) if (out / MANIFEST).exists() else None
    except Exception as exc:
        _fail(str(exc))
    if manifest is None or manifest.get("format") != "treegym-run":
        _fail(f"--out {out} is not empty and is not a treegym run folder; choose another --out")
    if not resume and not force:
        _fail(
            f"--out {out} already holds run {manifest.get('run_id')}; pass --resume to continue "
            "it, --force to replace it, or choose another --out"
        )


class _Progress:
    """The live display: tasks and trajectories done/total, tokens, cache hits, env steps/s."""

    def __init__(self, meter: Any, quiet: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.meter = meter
        self.progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            disable=quiet or not console.is_terminal,
            refresh_per_second=4,
        )
        self.lines = not quiet and not console.is_terminal  # logs, CI: a line per 10% of tasks
        self.tasks = self.progress.add_task("tasks", total=None, stats="")
        self.leaves = self.progress.add_task("trajectories", total=None, stats="")

    def start(self, writer: Any, todo: list) -> None:
        m = self.meter
        self.progress.update(self.tasks, total=m.tasks_total, completed=m.tasks_done)
        self.progress.update(self.leaves, total=m.leaves_total, completed=0)

    def on_result(self, entry: dict, result: Any) -> None:
        m = self.meter
        step = max(1, m.tasks_total // 10)
        if self.lines and (m.tasks_done % step == 0 or m.tasks_done == m.tasks_total):
            console.print(
                f"{m.tasks_done}/{m.tasks_total} tasks · {m.leaves_done} trajectories · "
                f"{m.generated_tokens:,} tokens · prefix cache {100 * m.cache_hit_rate:.0f}% · "
                f"{m.env_steps / max(m.elapsed, 1e-9):,.1f} env steps/s · {m.elapsed:,.0f} s",
                highlight=False,
                soft_wrap=True,
            )

    def refresh(self) -> None:
        m = self.meter
        elapsed = max(m.elapsed, 1e-9)
        stats = (
            f"{m.generated_tokens:,} tokens ({m.generated_tokens / elapsed:,.0f}/s) · "
            f"prefix cache {100 * m.cache_hit_rate:.0f}% · "
            f"{m.env_steps / elapsed:,.1f} env steps/s"
        )
        failed = f" ({m.tasks_failed} failed)" if m.tasks_failed else ""
        self.progress.update(self.tasks, completed=m.tasks_done, stats=failed)
        self.progress.update(self.leaves, completed=min(m.leaves_done, m.leaves_total or 0),
                             stats=stats)  # fmt: skip

    async def ticking(self, coro: Any) -> Any:
        import asyncio

        async def tick() -> None:
            while True:
                self.refresh()
                await asyncio.sleep(0.25)

        ticker = asyncio.ensure_future(tick())
        try:
            return await coro
        finally:
            ticker.cancel()
            self.refresh()


def _print_summary(run_path: Any, title: str, write_report: bool = True) -> None:
    from treegym.harness import RunLoadError, load_run
    from treegym.report import files_of, rich_summary, summarize, write_html

    try:
        run = load_run(run_path)
    except RunLoadError as exc:
        _fail(str(exc))
    if write_report and run.ledger:
        _, (summary,) = write_html([run], run_path / "report.html")
    else:
        summary = summarize(run)
    console.print(rich_summary([summary], title=title))
    for name, path in files_of(run_path):
        console.print(f"  {name:<16} {path}", highlight=False, soft_wrap=True)


@app.command("collect")
def collect_command(
    env: Annotated[
        str | None,
        typer.Option(help="Env id (see `treegym envs`). [default: treegym/TextWorld-v0]"),
    ] = None,
    kwarg: Annotated[
        list[str],
        typer.Option("--kwarg", "-k", help="Env constructor argument key=value (repeatable)."),
    ] = [],  # noqa: B006 - typer needs a literal default
    tasks: Annotated[
        str | None,
        typer.Option(
            help="Task source: 'embedded' (held-out games of the embedded model's family), a "
            "pattern with {seed} (e.g. 'tw-cooking:recipe=2,seed={seed}', 'toy-{seed}'), a "
            "folder of games/tasks, or one task. [default: the env's own set]"
        ),
    ] = None,
    n_tasks: Annotated[
        int | None, typer.Option(help="Number of tasks. [default: 4; a folder: all]")
    ] = None,
    task_seed: Annotated[int | None, typer.Option(help="First seed of a task pattern.")] = None,
    sampler: Annotated[
        str | None,
        typer.Option(help="chain | tree_grpo | treepo | trace | selective. [default: tree_grpo]"),
    ] = None,
    param: Annotated[
        list[str],
        typer.Option(
            "--param",
            "-p",
            help="Sampler parameter key=value (repeatable): tree_grpo m,n,l,k (default "
            "2,2,1,3, the published setting); chain group_size (default 6); treepo "
            "segment_len,max_width,div,...; trace roots,continuations,... Leaves per task "
            "follow from these.",
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    gate: Annotated[
        str | None,
        typer.Option(
            help="Gate around chain or tree_grpo: selective (Selective Rollout). [default: none]"
        ),
    ] = None,
    gate_param: Annotated[
        list[str],
        typer.Option(
            "--gate-param",
            "-g",
            help="Gate parameter key=value (repeatable): selective k (default 10), d_l "
            "(default 0.12), or_finished, ended_before_k (evaluate or pass: a group whose "
            "every chain ended before step K; default evaluate).",
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    policy: Annotated[
        str | None,
        typer.Option(help=f"Policy: {config_mod.POLICY_FORMS}. [default: embedded]"),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="Tokenizer folder for sglang:/scripted: policies. [default: embedded]"),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature. [default: 1.0]")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Tokens per turn. [default: 48]")
    ] = None,
    context_length: Annotated[
        int | None, typer.Option(help="Context limit per trajectory. [default: 2048]")
    ] = None,
    token_budget: Annotated[
        int | None, typer.Option(help="Generated tokens allowed per task. [default: no limit]")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Tasks grown at once. [default: 4]")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Env worker processes (0: in this process). [default: 2]")
    ] = None,
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
    seed: Annotated[
        int | None, typer.Option(help="Seed of sampling and the policy. [default: 0]")
    ] = None,
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
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Config file: TOML with these options as keys (env_kwargs and sampler_params "
            "as tables), or a run folder / its manifest.json to repeat that run.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress.")] = False,
) -> None:
    """Collect tree rollouts into a run folder (parquet), with live progress and a summary.

    With no arguments: 4 held-out games of the embedded model's tw-cooking family, the
    Tree-GRPO sampler in its published setting (M=2 N=2 L=1 K=3), the embedded model, into
    runs/<timestamp> (about a minute on 2 CPU cores).
    """
    import asyncio
    import time

    from treegym.config import (
        ConfigError,
        build_executor,
        build_policy,
        prepare_tasks,
        resolve_config,
        task_list,
    )
    from treegym.envs import TextEnvError
    from treegym.harness import ExportError, Runner, Task
    from treegym.harness.collect import Meter, collect, open_writer
    from treegym.policies import SamplingParams

    overrides: dict[str, Any] = {
        "env": env, "tasks": tasks, "n_tasks": n_tasks, "task_seed": task_seed,
        "sampler": sampler, "gate": gate, "policy": policy, "tokenizer": tokenizer,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens, "context_length": context_length,
        "token_budget": token_budget, "concurrency": concurrency, "workers": workers,
        "executor": executor_kind, "ray_address": ray_address,
        "seed": seed, "out": out, "name": name,
    }  # fmt: skip
    try:
        cfg, _ = resolve_config(
            config,
            overrides,
            env_kwargs=_parse_kwargs(kwarg),
            sampler_params=_parse_kwargs(param),
            gate_params=_parse_kwargs(gate_param),
        )
    except ConfigError as exc:
        _fail(str(exc))
    _check_env_id(cfg.env)
    try:
        task_specs = task_list(cfg)
    except (ConfigError, TextEnvError) as exc:
        _fail(str(exc))
    if resume and cfg.out is None and cfg.name is None:
        _fail("--resume needs the run folder: --out RUN (or --name NAME)")
    run_path = cfg.out_path()
    _folder_precheck(run_path, resume, force)

    t0 = time.perf_counter()
    with console.status(f"making {len(task_specs)} tasks and loading the policy …") as status:
        done = [0]

        def made() -> None:
            done[0] += 1
            status.update(f"made {done[0]}/{len(task_specs)} games …")

        try:
            task_specs = prepare_tasks(cfg, task_specs, made)
            pol, template = build_policy(cfg)
        except (ConfigError, TextEnvError) as exc:
            _fail(str(exc))
        try:
            executor: Any = build_executor(cfg)
        except ConfigError as exc:
            _fail(str(exc))
        runner = Runner(
            policy=pol, template=template, executor=executor, sampler=cfg.build_sampler(),
            sampling=SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature),
            context_length=cfg.context_length, token_budget=cfg.token_budget,
            concurrency=cfg.concurrency, seed=cfg.seed,
        )  # fmt: skip
    run_config = {"env": cfg.env, "env_kwargs": cfg.env_kwargs, "collect": cfg.identity()}
    try:
        writer = open_writer(run_path, runner, config=run_config, resume=resume, force=force)
    except ExportError as exc:
        asyncio.run(executor.close())
        message = str(exc).replace("force=True", "--force").replace("resume=True", "--resume")
        _fail(message)
    tasks_ = [Task(task_id, {"task": task}, seed=s) for task_id, task, s in task_specs]
    console.print(
        f"collecting {len(tasks_)} tasks of {cfg.env} with {cfg.sampler} "
        f"{cfg.resolved_sampler_params()}"
        f"{f' gated by {cfg.gate} {cfg.resolved_gate_params()}' if cfg.gate else ''} "
        f"and {cfg.policy} into {run_path}"
        + (f" ({len(writer.finished)} already finished)" if writer.finished else ""),
        highlight=False,
        soft_wrap=True,
    )
    meter = Meter()
    display = _Progress(meter, quiet)
    extra = {"invocation": cfg.invocation(), "setup_s": round(time.perf_counter() - t0, 2)}
    try:
        with display.progress:
            asyncio.run(
                display.ticking(
                    collect(
                        runner,
                        tasks_,
                        run_path,
                        writer=writer,
                        meter=meter,
                        extra_manifest=extra,
                        on_start=display.start,
                        on_result=display.on_result,
                    )
                )
            )
    except KeyboardInterrupt:
        err_console.print(
            f"[yellow]interrupted:[/] {meter.tasks_done} tasks are on disk in {run_path}; "
            f"continue with: treegym collect --resume --out {run_path}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    except ExportError as exc:
        _fail(str(exc))
    _print_summary(run_path, title=f"treegym collect: {run_path}")
    if meter.tasks_failed:
        err_console.print(
            f"[yellow]{meter.tasks_failed} task(s) failed;[/] see the failed tasks in "
            f"{run_path / 'ledger.jsonl'}",
            highlight=False,
            soft_wrap=True,
        )


@app.command("show")
def show_command(
    run: Annotated[str, typer.Argument(help="Run folder (made by treegym collect).")],
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

    paths = [Path(run)] + ([Path(compare)] if compare else [])
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
