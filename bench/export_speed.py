"""Export: the parquet run folder vs JSON lines — write speed, bytes per 1,000 leaves, load time.

Trees are grown once, cheaply (ToyRooms, the scripted noisy-expert policy, Tree-GRPO M=4 N=2
L=1 K=3, in-process executor, no model); then the same ``TaskResult``s are written, side by
side, by each arm into a fresh folder, and read back:

* **parquet run folder** — the real writer (``RunWriter``: per-task parts written to a
  temporary name, fsync'd and renamed, then a ledger line fsync'd; ``finalize`` compacts them
  into ``nodes.parquet``/``samples.parquet``, zstd); loaded with ``treegym.load_run`` (sizes,
  SHA-256, page checksums and the structural checks) and, raw, with
  ``pyarrow.parquet.read_table``;
* **JSONL** and **JSONL.gz** (gzip level 6, one gzip member per task) — the same node and
  sample rows (the writer's own tables, ``to_pylist``) as one JSON object per line, in
  ``nodes.jsonl`` and ``samples.jsonl``, each file flushed and fsync'd after every task (the
  run folder's durability: a finished task survives a crash); loaded with ``json.loads`` of
  every line.

Run: ``python bench/export_speed.py [--size smoke|full]``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from bench_common import Chart, Section, Spread, ratios, size_cli

import treegym
from treegym.harness import InProcessExecutor, Runner, RunWriter, Task, TaskResult, TreeGRPOSampler
from treegym.harness.export import nodes_table, samples_table
from treegym.policies import ReActTemplate, SamplingParams, ScriptedPolicy
from treegym.policies.embedded import embedded_model_path

REPETITIONS = 3
TASKS = {"smoke": 12, "full": 100}
ENV_ID, ENV_KWARGS = "treegym/ToyRooms-v0", {"max_episode_steps": 20}
GZIP_LEVEL = 6
ARMS = ("parquet run folder", "JSONL", "JSONL.gz")


async def grow(n_tasks: int) -> tuple[Runner, list[TaskResult]]:
    """The trees every arm writes (collected once)."""
    from transformers import AutoTokenizer

    template = ReActTemplate(AutoTokenizer.from_pretrained(str(embedded_model_path())))
    executor = InProcessExecutor(ENV_ID, ENV_KWARGS)
    runner = Runner(policy=ScriptedPolicy(template, "expert", epsilon=0.3, seed=0),
                    template=template, executor=executor, sampler=TreeGRPOSampler.reference(),
                    sampling=SamplingParams(max_new_tokens=48), concurrency=8)  # fmt: skip
    tasks = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(n_tasks)]
    results = [r async for r in runner.run(tasks)]
    await executor.close()
    return runner, sorted(results, key=lambda r: int(r.task.task_id.split("-")[1]))


def write_parquet(runner: Runner, results: list[TaskResult], out: Path) -> None:
    with RunWriter.for_runner(out, runner, config={"env": ENV_ID, "env_kwargs": ENV_KWARGS}) as w:
        w.write_all(results)  # leaving the block finalizes


def write_jsonl(runner: Runner, results: list[TaskResult], out: Path, gz: bool) -> None:
    """Every task's node and sample rows as JSON lines, each file fsync'd after every task."""
    out.mkdir()
    suffix = ".jsonl.gz" if gz else ".jsonl"
    files = {name: open(out / f"{name}{suffix}", "ab") for name in ("nodes", "samples")}  # noqa: SIM115
    estimators = list(runner.sampler.estimators)
    try:
        for result in results:
            tables = {"nodes": nodes_table(result, "jsonl"),
                      "samples": samples_table(result, "jsonl", estimators)}  # fmt: skip
            for name, table in tables.items():
                data = "".join(json.dumps(row) + "\n" for row in table.to_pylist()).encode()
                fh = files[name]
                if gz:  # one gzip member per task: the file stays valid after every task
                    with gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=GZIP_LEVEL) as z:
                        z.write(data)
                else:
                    fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
    finally:
        for fh in files.values():
            fh.close()


def load_jsonl(out: Path) -> int:
    rows = 0
    for path in sorted(out.iterdir()):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as fh:
            rows += len([json.loads(line) for line in fh])
    return rows


def load_pyarrow(out: Path) -> int:
    return sum(pq.read_table(out / name).num_rows for name in ("nodes.parquet", "samples.parquet"))


def samples_file(out: Path) -> Path:
    return next(p for p in out.iterdir() if p.name.startswith("samples."))


def folder_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@dataclass
class Arm:
    write_s: list[float] = field(default_factory=list)
    samples_bytes: list[int] = field(default_factory=list)
    total_bytes: list[int] = field(default_factory=list)
    load_s: list[float] = field(default_factory=list)
    raw_load_s: list[float] = field(default_factory=list)
    """parquet only: ``pyarrow.parquet.read_table`` of both files, no checks."""


def measure(n_tasks: int) -> tuple[list[TaskResult], int, dict[str, Arm]]:
    runner, results = asyncio.run(grow(n_tasks))
    writers = {
        ARMS[0]: lambda out, res: write_parquet(runner, res, out),
        ARMS[1]: lambda out, res: write_jsonl(runner, res, out, gz=False),
        ARMS[2]: lambda out, res: write_jsonl(runner, res, out, gz=True),
    }
    arms = {name: Arm() for name in ARMS}
    rows = None
    with tempfile.TemporaryDirectory(prefix="treegym-export-bench-") as tmp:
        for i, write in enumerate(writers.values()):  # warm-up (imports, codecs), untimed
            write(Path(tmp) / f"warm-{i}", results[:1])
        treegym.load_run(Path(tmp) / "warm-0")
        load_jsonl(Path(tmp) / "warm-1")
        for rep in range(REPETITIONS):
            order = ARMS if rep % 2 == 0 else ARMS[::-1]
            for name in order:
                arm, out = arms[name], Path(tmp) / f"{rep}-{ARMS.index(name)}"
                arm.write_s.append(timed(lambda: writers[name](out, results)))  # noqa: B023
                arm.samples_bytes.append(samples_file(out).stat().st_size)
                arm.total_bytes.append(folder_bytes(out))
                if name == ARMS[0]:
                    t = time.perf_counter()
                    run = treegym.load_run(out)
                    arm.load_s.append(time.perf_counter() - t)
                    got = run.nodes_table.num_rows + run.samples_table.num_rows
                    arm.raw_load_s.append(timed(lambda: load_pyarrow(out)))  # noqa: B023
                else:
                    t = time.perf_counter()
                    got = load_jsonl(out)
                    arm.load_s.append(time.perf_counter() - t)
                if rows is not None and got != rows:
                    raise AssertionError(f"{name} holds {got} rows, another arm {rows}")
                rows = got
    leaves = sum(len(leaves) for r in results for leaves in r.training.values())
    return results, leaves, arms


def sections(size: str) -> list[Section]:
    results, leaves, arms = measure(TASKS[size])
    nodes = sum(len(t.nodes) for r in results for t in r.trees)
    parquet = arms[ARMS[0]]
    per_k = 1000 / leaves

    def kb(values: list[int]) -> Spread:
        return Spread([round(v * per_k / 1024, 1) for v in values])

    header = ["format", "write s", "sample rows / s", "samples KB / 1,000 leaves",
              "all files KB / 1,000 leaves", "load s", "write time ÷ parquet",
              "bytes ÷ parquet", "load time ÷ parquet"]  # fmt: skip
    rows: list[list[str]] = []
    series: dict[str, list[Spread]] = {}
    for name, arm in arms.items():
        rel = [ratios(arm.write_s, parquet.write_s), ratios(arm.total_bytes, parquet.total_bytes),
               ratios(arm.load_s, parquet.load_s)]  # fmt: skip
        rate = Spread([leaves / s for s in arm.write_s])
        rows.append([name, Spread(arm.write_s).fmt(3), rate.fmt(0), kb(arm.samples_bytes).fmt(1),
                     kb(arm.total_bytes).fmt(1), Spread(arm.load_s).fmt(3),
                     *(["1"] * 3 if arm is parquet else [r.fmt(2) for r in rel])])  # fmt: skip
        if arm is not parquet:
            series[name] = rel
    raw = Spread(parquet.raw_load_s)
    rows.append(["parquet, `pyarrow.parquet.read_table` only", "—", "—", "—", "—", raw.fmt(3),
                 "—", "—", ratios(parquet.raw_load_s, parquet.load_s).fmt(2)])  # fmt: skip
    intro = (
        f"One set of trees — ToyRooms, scripted noisy expert (ε = 0.3), Tree-GRPO M=4 N=2 L=1 "
        f"K=3, {len(results)} tasks, {nodes:,} nodes, {leaves:,} training leaves (sample rows) — "
        "collected once, then written by each arm into a fresh folder on the same disk and "
        "read back, side by side. Parquet: the run folder's writer (`RunWriter`: per-task "
        "parts fsync'd and renamed, a ledger line fsync'd, then `finalize` compacts them into "
        "zstd `nodes.parquet` + `samples.parquet`), loaded with `treegym.load_run` (size, "
        "SHA-256, page checksums, structure). JSONL: the same node and sample rows, one JSON "
        "object per line in `nodes.jsonl` + `samples.jsonl`, both fsync'd after every task "
        f"(the same durability); JSONL.gz: the same, gzip level {GZIP_LEVEL}, one member per "
        f"task. JSONL is loaded with `json.loads` of every line. {REPETITIONS} repetitions "
        "(the order of the arms alternates); cells: median (min–max)."
    )
    notes = [
        "Baseline arm: the parquet run folder (the ÷ parquet columns are per-repetition "
        "ratios to it; above 1 means the JSONL arm is slower or bigger).",
        "Write time includes building the rows from the trees (the writer's own "
        "`nodes_table`/`samples_table` for every arm; JSONL also converts them with "
        "`to_pylist`) and, for parquet, the fsyncs of two parts, the folder and the ledger "
        "line per task plus `finalize`; JSONL fsyncs its two files per task.",
        "All files: parquet counts `manifest.json` and `ledger.jsonl` too. The samples "
        "column is `samples.parquet` vs `samples.jsonl[.gz]`: each sample row materialises "
        "its whole trajectory's token ids, mask and logprobs, which the nodes store once "
        "per tree.",
        "Load: the run folder's checked load (`treegym.load_run`, arrow tables) vs a "
        "`json.loads` of every line of both JSONL files (Python dicts); the last row is "
        "parquet read by pyarrow with no checks (its last column: ÷ the checked load).",
    ]
    headline = (
        f"Per 1,000 leaves the parquet run folder takes {kb(parquet.total_bytes).median:,.0f} "
        f"KB, {series[ARMS[1]][1].median:.1f}× less than JSONL and "
        f"{series[ARMS[2]][1].median:.1f}× less than gzipped JSONL, and loads (checked) "
        f"{series[ARMS[1]][2].median:.1f}× faster than `json.loads` of the JSONL, while "
        f"writing it takes {1 / series[ARMS[1]][0].median:.1f}× as long as writing JSONL (both "
        "durable per task)."
    )
    chart = Chart("JSONL ÷ parquet run folder (log)", ["write time", "bytes", "load time"],
                  series, log=True, reference=1.0)  # fmt: skip
    return [Section("export", "Export: parquet run folder vs JSON lines", intro, header, rows,
                    notes, chart, headline)]  # fmt: skip


if __name__ == "__main__":
    size_cli(__doc__, TASKS, sections)
