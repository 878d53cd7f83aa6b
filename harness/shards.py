"""Sharded collection: several driver processes collect disjoint shards of one task list into
one run folder.

One driver's serial cost per env step bounds its env steps/s whatever the workers and engines
(README "Scale out"); past that bound, run ``S`` drivers. Shard ``k`` of ``S`` is every task
whose index in the task list is ``k`` modulo ``S``. Layout::

    RUN/manifest.json              the run (made once by prepare_shards: its id and identity)
    RUN/shards/KKK-of-SSS/         a run folder per shard: its own lock, ledger and parts,
                                   the run's identity and run id; a killed shard resumes alone
    RUN/ledger.jsonl, RUN/parts/   what merge_shards adopted from the shards

:func:`merge_shards` takes every finished task of every shard into ``RUN`` (hard links of the
part files, whose ledger digests still hold; one group commit per shard; tasks already adopted
are skipped, so it can run again after a crash) and finalizes ``RUN``: the folder then holds the
rows one driver would have written (the same seeds: a branch's seed depends on the run seed and
its place in its task's tree, never on which driver or worker grew it), in shard order.

    prepare_shards(RUN, runner, config=config)                 # once, before the drivers
    await collect_shard(runner, tasks, RUN, k, S, config=config, resume=...)   # driver k
    merge_shards(RUN, runner, S, config=config)                # once all drivers are done
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .collect import Collected, collect
from .export import SHARDS, ExportError, RunWriter, read_ledger, read_manifest
from .runner import Runner, Task

IDENTITY = ("config", "sampler", "estimators", "policy", "tokenizer")
"""Manifest keys every shard must share with its run."""


def shard_of(tasks: Sequence[Task], index: int, count: int) -> list[Task]:
    """Shard ``index`` of ``count``: the tasks at positions ``index`` modulo ``count``."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index} of {count}: need count >= 1 and 0 <= index < count")
    return [t for i, t in enumerate(tasks) if i % count == index]


def shard_folder(out: str | Path, index: int, count: int) -> Path:
    return Path(out) / SHARDS / f"{index:03d}-of-{count:03d}"


def prepare_shards(out: str | Path, runner: Runner, *, config: Mapping[str, Any] | None = None,
                   resume: bool = False) -> str:  # fmt: skip
    """Make (or, with ``resume``, check) the run's own folder before any shard starts;
    return its run id."""
    writer = RunWriter.for_runner(out, runner, config=config, resume=resume)
    try:  # not finalized: it holds no task yet
        return str(writer.manifest["run_id"])
    finally:
        writer.close()


def _run_id(out: str | Path) -> str:
    manifest = read_manifest(Path(out))
    if manifest is None:
        raise ExportError(f"{out} holds no run: call prepare_shards({str(out)!r}, ...) first")
    return str(manifest["run_id"])


async def collect_shard(
    runner: Runner,
    tasks: Sequence[Task],
    out: str | Path,
    index: int,
    count: int,
    *,
    config: Mapping[str, Any] | None = None,
    resume: bool = False,
    **kwargs: Any,
) -> Collected:
    """Driver ``index`` of ``count``: collect its shard of ``tasks`` into its shard folder
    (not finalized: :func:`merge_shards` does that for the whole run). ``kwargs`` go to
    :func:`~treegym.harness.collect.collect`."""
    folder = shard_folder(out, index, count)
    folder.parent.mkdir(parents=True, exist_ok=True)
    writer = RunWriter.for_runner(folder, runner, config=config, resume=resume,
                                  run_id=_run_id(out))  # fmt: skip
    if writer.manifest["run_id"] != _run_id(out):
        writer.close()
        raise ExportError(f"{folder} is a shard of another run than {out}")
    return await collect(runner, shard_of(tasks, index, count), folder, writer=writer,
                         finalize=False, **kwargs)  # fmt: skip


def merge_shards(
    out: str | Path,
    runner: Runner,
    count: int,
    *,
    config: Mapping[str, Any] | None = None,
    remove: bool = True,
) -> dict[str, Any]:
    """Adopt every finished task of the ``count`` shards into ``out`` and finalize it; return
    the manifest. ``remove``: delete the shard folders once the run is finalized."""
    folders = [shard_folder(out, k, count) for k in range(count)]
    run_id = _run_id(out)
    with RunWriter.for_runner(out, runner, config=config, resume=True) as writer:
        for folder in folders:
            manifest = read_manifest(folder)
            if manifest is None:
                raise ExportError(f"{folder}: no shard was collected there")
            if manifest["run_id"] != run_id:
                raise ExportError(f"{folder} is a shard of run {manifest['run_id']}, "
                                  f"not of {run_id}")  # fmt: skip
            differs = [k for k in IDENTITY if manifest.get(k) != writer.manifest.get(k)]
            if differs:
                raise ExportError(f"{folder} was collected with another {differs[0]} than "
                                  f"{out}")  # fmt: skip
            new = [e for e in read_ledger(folder) if e["task_id"] not in writer.finished]
            writer.adopt(folder, new)
        manifest = writer.finalize()
    if remove:
        shutil.rmtree(Path(out) / SHARDS)
    return manifest
