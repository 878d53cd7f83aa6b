"""Collecting a run folder: the loop every collector runs (``treegym collect``, the examples,
a trainer's data job).

:func:`collect` first asks the policy whether it can answer (``Policy.probe``: a server that
is down fails here, in one line, before the folder is touched), opens a
:class:`~treegym.harness.export.RunWriter` for the runner, skips the tasks the folder already
holds (``resume``), streams every finished task to disk, closes the executor and the policy,
and finalizes the folder. A :class:`Meter` attached to the runner counts what is happening
*inside* tasks (tokens generated, prompt and cached tokens, env steps, trajectories ended) so a
progress display can show more than finished tasks, and what failed (tasks, branches, the first
error of each) so a run that produced nothing can say so.

``force`` follows the command line's meaning: with ``resume`` it continues a run whose
identity differs (the writer's ``force``); without ``resume`` it replaces the run in the folder
(:func:`clear_run`; only a treegym run folder is ever cleared).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from treegym.policies.protocol import GenerateRequest, GenerateResult, Policy

from .executor import EnvExecutor, StateHandle, StepOutcome
from .export import (
    FINALIZING,
    LEDGER,
    LOCK,
    MANIFEST,
    NODES,
    PARTS,
    SAMPLES,
    SHARDS,
    ExportError,
    RunWriter,
    StagedTask,
    read_manifest,
)
from .runner import Runner, Task, TaskResult
from .schema import FORMAT

REPORT = "report.html"
RUN_FILES = (MANIFEST, LEDGER, LOCK, NODES, SAMPLES, FINALIZING, REPORT)
"""What a run folder may hold besides ``parts/`` and ``*.tmp`` files (see :func:`clear_run`)."""


def grown_leaves_per_task(sampler: Any) -> int:
    """Trajectories a sampler grows per task when nothing stops early (training or not)."""
    if all(hasattr(sampler, a) for a in ("m", "n", "l")):  # Tree-GRPO: M trees of 1 + N·L
        return int(sampler.m * (1 + sampler.n * sampler.l))
    return int(sampler.trajectories_per_task)


# ---------------------------------------------------------------------- live counters
@dataclass
class Meter:
    """Live counters of a collection, fed by the policy and executor wrappers that
    :meth:`attach` installs on a runner, and by :meth:`task_done` as results arrive."""

    tasks_total: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    failed_leaves: int = 0
    """Branches that ended ``failed`` (an env or policy error), in finished tasks."""
    first_task_error: str | None = None
    first_branch_error: str | None = None
    leaves_total: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    env_steps: int = 0
    started: float = field(default_factory=time.perf_counter)
    _ended_steps: int = 0
    _ended_in_done_tasks: int = 0
    _exact_leaves: int = 0

    def attach(self, runner: Runner) -> None:
        """Wrap ``runner``'s policy and executor so every call is counted. Attach *after* the
        run's writer is opened: the manifest records the unwrapped classes."""
        if not isinstance(runner.policy, _MeteredPolicy):
            runner.policy = _MeteredPolicy(runner.policy, self)
        if not isinstance(runner.executor, _MeteredExecutor):
            runner.executor = _MeteredExecutor(runner.executor, self)

    def task_done(self, result: TaskResult) -> None:
        """Replace the live estimate of a finished task's trajectories by its exact count."""
        self.tasks_done += 1
        task = result.task.task_id
        if result.error is not None:
            self.tasks_failed += 1
            self.first_task_error = self.first_task_error or f"task {task!r}: {result.error}"
        for tree in result.trees:
            self._exact_leaves += len(tree.leaves())
            self._ended_in_done_tasks += sum(
                n.ended in ("terminated", "truncated") for n in tree.nodes
            )
            for leaf in tree.leaves():
                if leaf.ended == "failed":
                    self.failed_leaves += 1
                    self.first_branch_error = (
                        self.first_branch_error or f"task {task!r}: {leaf.error}"
                    )

    @property
    def produced_nothing(self) -> bool:
        """Whether something failed and every task and branch finished so far failed: the
        session wrote no trajectory a trainer could use."""
        failed = self.tasks_failed or self.failed_leaves
        return bool(failed) and self.failed_leaves == self._exact_leaves

    @property
    def leaves_done(self) -> int:
        """Trajectories finished: exact for finished tasks, episodes ended for running ones."""
        return self._exact_leaves + max(0, self._ended_steps - self._ended_in_done_tasks)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def cache_hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


class _MeteredPolicy(Policy):
    def __init__(self, inner: Policy, meter: Meter) -> None:
        self.inner, self.meter = inner, meter

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = await self.inner.generate(requests)
        for res in results:
            self.meter.generated_tokens += len(res.output_ids)
            self.meter.prompt_tokens += res.prompt_tokens
            self.meter.cached_tokens += res.cached_tokens
        return results

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    async def probe(self) -> None:
        await self.inner.probe()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:  # e.g. HFPolicy.tokenizer
        return getattr(self.inner, name)


class _MeteredExecutor(EnvExecutor):
    def __init__(self, inner: EnvExecutor, meter: Meter) -> None:
        self.inner, self.meter = inner, meter
        self.n_workers = inner.n_workers

    async def reset(self, worker: int, options: dict[str, Any], seed: int) -> StepOutcome:
        return await self.inner.reset(worker, options, seed)

    async def step(self, state: StateHandle, action: str) -> StepOutcome:
        out = await self.inner.step(state, action)
        self.meter.env_steps += 1
        self.meter._ended_steps += bool(out.terminated or out.truncated)
        return out

    async def release(self, states: Sequence[StateHandle]) -> None:
        await self.inner.release(states)

    async def drop_task(self, worker: int, options: dict[str, Any]) -> None:
        await self.inner.drop_task(worker, options)

    async def close(self) -> None:
        await self.inner.close()


# ---------------------------------------------------------------------- the folder
def clear_run(path: str | Path) -> None:
    """Remove the run in ``path`` (its manifest, ledger, parts, parquet files, report) so a
    new run can be written there. Refuses a folder that is not a treegym run, and a folder
    holding anything else, so ``--force`` can never delete a user's files."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise ExportError(f"{path} is a file, not a run folder")
    manifest = read_manifest(path) if (path / MANIFEST).exists() else None
    if manifest is None or manifest.get("format") != FORMAT:
        if not any(path.iterdir()):
            return
        raise ExportError(f"{path} is not a treegym run folder; refusing to replace it")
    foreign = [
        p.name
        for p in path.iterdir()
        if p.name not in RUN_FILES and p.name not in (PARTS, SHARDS) and not p.name.endswith(".tmp")
    ]
    if foreign:
        raise ExportError(
            f"{path} holds files that are not part of a run ({', '.join(sorted(foreign)[:3])}); "
            "refusing to replace it"
        )
    for p in path.iterdir():
        if p.name in (PARTS, SHARDS):
            shutil.rmtree(p)
        elif p.name != LOCK:
            p.unlink()


def open_writer(
    out: str | Path,
    runner: Runner,
    *,
    config: Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
) -> RunWriter:
    """The run folder's writer with the command line's ``resume``/``force`` meaning."""
    if force and not resume:
        clear_run(out)
    return RunWriter.for_runner(out, runner, config=config, resume=resume, force=force)


class GroupCommitter:
    """Commits finished tasks to a :class:`~treegym.harness.export.RunWriter` in groups while
    the collection goes on: a task's rows are encoded as it arrives (CPU, here), the disk half
    runs in a thread, and each commit takes every task staged during the previous one (up to
    ``max_group``), so the writer's fsync rounds are shared by as many tasks as the collection
    produces meanwhile, and the event loop never waits for the disk.
    ``acknowledged(entry, result)`` is called for each task once its ledger line is durable —
    only then is it finished; a task not yet acknowledged when the process dies is simply
    collected again on ``resume``."""

    def __init__(self, writer: RunWriter,
                 acknowledged: Callable[[dict[str, Any], TaskResult], None],
                 max_group: int = 256) -> None:  # fmt: skip
        self.writer, self.acknowledged, self.max_group = writer, acknowledged, max_group
        self._pending: list[tuple[StagedTask, TaskResult]] = []
        self._task: asyncio.Task[None] | None = None
        self.groups = 0
        """Commits done (tasks acknowledged / groups: the mean group size)."""

    def add(self, result: TaskResult) -> None:
        """Queue a finished task; a failed earlier commit is raised here, at once."""
        if self._task is not None and self._task.done():
            self._task.result()
        self._pending.append((self.writer.stage([result])[0], result))
        if self._task is None:
            self._task = asyncio.ensure_future(self._commit())

    async def _commit(self) -> None:
        while self._pending:
            group = self._pending[: self.max_group]
            entries = await asyncio.to_thread(self.writer.commit, [s for s, _ in group])
            del self._pending[: len(group)]
            self.groups += 1
            for entry, (_, result) in zip(entries, group, strict=True):
                self.acknowledged(entry, result)
        self._task = None

    async def drain(self) -> None:
        """Wait until every queued task is committed (raising a commit's error)."""
        while self._task is not None:  # a failed commit stays here and raises again
            await asyncio.shield(self._task)


@dataclass
class Collected:
    """What :func:`collect` did: the final manifest and this session's counters."""

    manifest: dict[str, Any]
    path: Path
    skipped: int
    written: int
    wall_s: float
    meter: Meter


async def collect(
    runner: Runner,
    tasks: Sequence[Task],
    out: str | Path,
    *,
    config: Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    finalize: bool = True,
    meter: Meter | None = None,
    writer: RunWriter | None = None,
    extra_manifest: Mapping[str, Any] | None = None,
    on_start: Callable[[RunWriter, list[Task]], None] | None = None,
    on_result: Callable[[dict[str, Any], TaskResult], None] | None = None,
    close_policy: bool = True,
) -> Collected:
    """Run ``tasks`` into the run folder ``out`` and return what was done.

    The policy is probed first (a :class:`~treegym.policies.PolicyError` from ``probe`` is
    raised before the folder is touched). ``writer`` may be opened beforehand with
    :func:`open_writer` (to report folder errors before any work starts); otherwise it is
    opened here. ``extra_manifest`` keys are stored in
    the manifest (not part of the run's identity, so they may change between sessions); a
    ``collect`` entry accumulates ``sessions`` and ``wall_s`` across resumed sessions. The
    executor and (unless ``close_policy`` is false: ``treegym train`` keeps its engine across
    rounds) the policy are closed at the end, whatever happens; an exception leaves the
    finished tasks on disk for ``resume``.
    """
    t0 = time.perf_counter()
    meter = meter or Meter()
    try:
        await runner.policy.probe()
        if writer is None:
            writer = open_writer(out, runner, config=config, resume=resume, force=force)
        with contextlib.closing(writer):
            todo = [t for t in tasks if t.task_id not in writer.finished]
            meter.tasks_total = len(tasks)
            meter.tasks_done = len(tasks) - len(todo)
            meter.leaves_total = grown_leaves_per_task(runner.sampler) * len(todo)
            meter.started = time.perf_counter()
            record = dict(writer.manifest.get("collect") or {})
            record.update(dict(extra_manifest or {}))
            sessions = int(record.get("sessions", 0))
            record["sessions"] = sessions + 1
            writer.record("collect", record)
            meter.attach(runner)
            if on_start is not None:
                on_start(writer, todo)
            acked: list[str] = []

            def acknowledged(entry: dict[str, Any], result: TaskResult) -> None:
                acked.append(entry["task_id"])
                meter.task_done(result)
                if on_result is not None:
                    on_result(entry, result)

            committer = GroupCommitter(writer, acknowledged)
            try:
                async for result in runner.run(todo):
                    committer.add(result)
            finally:
                await committer.drain()  # what finished is committed before anything else
                written = len(acked)
                wall = time.perf_counter() - t0
                record["wall_s"] = round(float(record.get("wall_s", 0.0)) + wall, 3)
                with contextlib.suppress(OSError):
                    writer.record("collect", record)
            manifest = writer.finalize() if finalize else writer.manifest
    finally:
        with contextlib.suppress(Exception):
            await runner.executor.close()
        if close_policy:
            with contextlib.suppress(Exception):
                await runner.policy.aclose()
    return Collected(
        manifest, Path(out), len(tasks) - len(todo), written, time.perf_counter() - t0, meter
    )
