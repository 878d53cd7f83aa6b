"""What ``treegym collect`` does once its options are parsed: check, build, collect, report.

Everything that can be refused is refused before a model loads or a worker starts — an unknown
env id, a task the env's ``validate_task`` rejects, a folder that holds another run — and a
policy that cannot answer (``Policy.probe``, run by :func:`~treegym.harness.collect.collect`)
is refused before the run folder is touched: each is a :class:`~treegym.config.ConfigError`,
one line on stderr and exit code 2. After the run the summary is printed, then what failed:
a run that produced nothing (every task or every branch failed) prints its first error and
exits 1; one where only some tasks or branches failed prints the first reason as a warning.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from treegym.config import (
    CollectConfig,
    ConfigError,
    build_executor,
    build_policy,
    prepare_tasks,
    task_list,
    validate_tasks,
)

EXIT_NOTHING_PRODUCED = 1
EXIT_INTERRUPTED = 130


def check_env_id(env_id: str) -> None:
    import difflib

    import gymnasium

    import treegym.envs  # noqa: F401 - registers the built-in and plugin envs

    if env_id not in gymnasium.registry:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `treegym envs`"
        raise ConfigError(f"unknown env id {env_id!r}{hint}")


def folder_precheck(out: Path, resume: bool, force: bool) -> None:
    """Refuse a folder holding a run (or anything) before models load and workers spawn."""
    from treegym.harness.export import MANIFEST, read_manifest

    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a run folder")
    if not [p for p in out.iterdir() if p.name != ".writer.lock"]:
        return
    try:
        manifest = read_manifest(out) if (out / MANIFEST).exists() else None
    except Exception as exc:
        raise ConfigError(str(exc)) from None
    if manifest is None or manifest.get("format") != "treegym-run":
        raise ConfigError(
            f"--out {out} is not empty and is not a treegym run folder; choose another --out"
        )
    if not resume and not force:
        raise ConfigError(
            f"--out {out} already holds run {manifest.get('run_id')}; pass --resume to continue "
            "it, --force to replace it, or choose another --out"
        )


def checked_tasks(cfg: CollectConfig, resume: bool, force: bool) -> list[tuple[str, Any, int]]:
    """The config's tasks, after every check that needs no model and no worker."""
    from treegym.envs import TextEnvError

    check_env_id(cfg.env)
    try:
        specs = task_list(cfg)
    except TextEnvError as exc:
        raise ConfigError(str(exc)) from None
    validate_tasks(cfg, specs)
    if resume and cfg.out is None and cfg.name is None:
        raise ConfigError("--resume needs the run folder: --out RUN (or --name NAME)")
    folder_precheck(cfg.out_path(), resume, force)
    return specs


def build_runner(cfg: CollectConfig, specs: list, console: Console) -> tuple[Any, list]:
    """``(runner, tasks)``: games made up front, the policy loaded, the executor started."""
    from treegym.envs import TextEnvError
    from treegym.harness import Runner, Task
    from treegym.policies import SamplingParams

    with console.status(f"making {len(specs)} tasks and loading the policy …") as status:
        done = [0]

        def made() -> None:
            done[0] += 1
            status.update(f"made {done[0]}/{len(specs)} games …")

        try:
            specs = prepare_tasks(cfg, specs, made)
            policy, template = build_policy(cfg)
        except TextEnvError as exc:
            raise ConfigError(str(exc)) from None
        runner = Runner(
            policy=policy, template=template, executor=build_executor(cfg),
            sampler=cfg.build_sampler(),
            sampling=SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature),
            context_length=cfg.context_length, token_budget=cfg.token_budget,
            concurrency=cfg.concurrency, seed=cfg.seed,
        )  # fmt: skip
    return runner, [Task(task_id, {"task": task}, seed=s) for task_id, task, s in specs]


def announcement(cfg: CollectConfig, n_tasks: int, path: Path, finished: int) -> str:
    gate = f" gated by {cfg.gate} {cfg.resolved_gate_params()}" if cfg.gate else ""
    return (
        f"collecting {n_tasks} tasks of {cfg.env} with {cfg.sampler} "
        f"{cfg.resolved_sampler_params()}{gate} and {cfg.policy} into {path}"
        + (f" ({finished} already finished)" if finished else "")
    )


def run_collect(
    cfg: CollectConfig,
    *,
    resume: bool,
    force: bool,
    quiet: bool,
    console: Console,
    err_console: Console,
) -> int:
    """Collect ``cfg`` into its run folder; the exit code (module docstring). Raises
    :class:`ConfigError` for everything refused before the run."""
    from treegym.harness import ExportError
    from treegym.harness.collect import Meter, collect
    from treegym.policies import PolicyError

    specs = checked_tasks(cfg, resume, force)
    t0 = time.perf_counter()
    runner, tasks = build_runner(cfg, specs, console)
    run_path = cfg.out_path()
    meter = Meter()
    display = Progress(meter, quiet, console)

    def started(writer: Any, todo: list) -> None:
        text = announcement(cfg, len(tasks), run_path, len(writer.finished))
        console.print(text, highlight=False, soft_wrap=True)
        display.start(writer, todo)

    job = collect(
        runner, tasks, run_path, resume=resume, force=force, meter=meter, on_start=started,
        config={"env": cfg.env, "env_kwargs": cfg.env_kwargs, "collect": cfg.identity()},
        extra_manifest={"invocation": cfg.invocation(),
                        "setup_s": round(time.perf_counter() - t0, 2)},
        on_result=display.on_result,
    )  # fmt: skip
    try:
        with display.progress:
            asyncio.run(display.ticking(job))
    except KeyboardInterrupt:
        err_console.print(
            f"[yellow]interrupted:[/] {meter.tasks_done} tasks are on disk in {run_path}; "
            f"continue with: treegym collect --resume --out {run_path}",
            highlight=False,
            soft_wrap=True,
        )
        return EXIT_INTERRUPTED
    except PolicyError as exc:  # the probe: nothing was written
        raise ConfigError(str(exc)) from None
    except ExportError as exc:
        message = str(exc).replace("force=True", "--force").replace("resume=True", "--resume")
        raise ConfigError(message) from None
    print_summary(console, run_path, title=f"treegym collect: {run_path}")
    return report_failures(meter, run_path, err_console)


def report_failures(meter: Any, run_path: Path, err_console: Console) -> int:
    """Print what failed in this session (the first reason of each kind); the exit code."""
    say = {"highlight": False, "soft_wrap": True}
    if meter.produced_nothing:
        what = (
            f"every branch failed ({meter.failed_leaves})"
            if meter.failed_leaves
            else f"every task failed ({meter.tasks_failed})"
        )
        first = meter.first_branch_error or meter.first_task_error
        err_console.print(f"[red]error:[/] {what}; the first error: {first}", **say)
        return EXIT_NOTHING_PRODUCED
    if meter.tasks_failed:
        err_console.print(
            f"[yellow]{meter.tasks_failed} task(s) failed;[/] the first: "
            f"{meter.first_task_error}; see the failed tasks in {run_path / 'ledger.jsonl'}",
            **say,
        )
    if meter.failed_leaves:
        err_console.print(
            f"[yellow]{meter.failed_leaves} branch(es) failed;[/] the first: "
            f"{meter.first_branch_error}; see the error column of {run_path / 'nodes.parquet'}",
            **say,
        )
    return 0


def print_summary(console: Console, run_path: Path, title: str) -> None:
    from treegym.harness import RunLoadError, load_run
    from treegym.report import files_of, rich_summary, summarize, write_html

    try:
        run = load_run(run_path)
    except RunLoadError as exc:
        raise ConfigError(str(exc)) from None
    if run.ledger:
        _, (summary,) = write_html([run], run_path / "report.html")
    else:
        summary = summarize(run)
    console.print(rich_summary([summary], title=title))
    for name, path in files_of(run_path):
        console.print(f"  {name:<16} {path}", highlight=False, soft_wrap=True)


class Progress:
    """The live display: tasks and trajectories done/total, tokens, cache hits, env steps/s."""

    def __init__(self, meter: Any, quiet: bool, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars

        self.meter, self.console = meter, console
        self.progress = Bars(
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
            self.console.print(
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
