"""Collector throughput for GPU-scale runs: does one driver keep a fast engine fed, and what
do the writer and sharding add? Arms side by side in one run, medians with min–max over the
repetitions, the scaling model's prediction next to each measurement.

1. **Driver** — ToyRooms (microsecond steps: the driver's whole cost), scripted noisy expert,
   chain G=4, concurrency 16: a bare env loop with the same actions, the runner in-process
   and with the process pool (2 workers). Env steps/s, harness ms per step ((arm wall −
   bare wall) / steps) and the driver process's CPU ms per step ``t_drv`` — the model's serial
   cost, which caps one driver at ``1 / t_drv`` steps/s on a core of its own.
2. **Engine feed** — the simulated engine (``policies/sim.py``: 20,000 tokens/s, batch 256)
   against Tree-GRPO (published) on ToyRooms through the pool, 256 tasks in flight: the
   engine's occupancy (slots in use over 256) while 256 tasks are in flight and over the whole
   wall. Model: occupancy = min(1, driver capacity / engine demand), demand = tokens/s ÷
   tokens per turn.
3. **Writer** — the same trees (Tree-GRPO M=4 on ToyRooms, as ``bench/export_speed.py``)
   written task by task (``RunWriter.write``) and in group commits of 64 (``write_all``), each
   with ``finalize``: sample rows per second of write + finalize.
4. **Shards** — S = 1 and 2 driver processes (in-process envs, chain G=4) collecting shards
   of one task list at the same time: total env steps/s. Model: min(S, cores) × one driver.

Run: ``python bench/collector_throughput.py [--size smoke|full]``, or as a part of the suite:
``python bench/run_all.py --only collector --merge``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import Section, Spread, ratios
from harness_overhead import bare_loop, run_runner, warm

from treegym.harness import (
    ChainSampler,
    InProcessExecutor,
    ProcessExecutor,
    Runner,
    RunWriter,
    Task,
    TreeGRPOSampler,
)
from treegym.policies import ReActTemplate, SamplingParams, ScriptedPolicy
from treegym.policies.embedded import embedded_model_path
from treegym.policies.sim import SimConfig, SimPolicy

ENV = "treegym/ToyRooms-v0"
KW = {"max_episode_steps": 20}
SIZES = {"smoke": {"reps": 2, "driver": 16, "feed": 300, "writer": 20, "shard": 32},
         "full": {"reps": 3, "driver": 64, "feed": 768, "writer": 100, "shard": 128}}  # fmt: skip
HERE = Path(__file__).resolve().parent


def template() -> ReActTemplate:
    from transformers import AutoTokenizer

    return ReActTemplate(AutoTokenizer.from_pretrained(str(embedded_model_path())))


def toy_tasks(n: int, first: int = 0) -> list[Task]:
    return [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(first, first + n)]


async def driver_arms(tpl: ReActTemplate, n: int, pool: ProcessExecutor) -> dict[str, tuple]:
    """(wall, steps, driver CPU s) per arm, one repetition."""
    tasks, out = toy_tasks(n), {}
    for name, executor in (("in-process", InProcessExecutor(ENV, KW)), ("pool (2)", pool)):
        await warm(executor, tasks)
        runner = Runner(policy=ScriptedPolicy(tpl, "expert", epsilon=0.2, seed=0), template=tpl,
                        executor=executor, sampler=ChainSampler(4),
                        sampling=SamplingParams(max_new_tokens=48), concurrency=16)  # fmt: skip
        cpu = time.process_time()
        wall, budget, paths = await run_runner(runner, tasks)
        out[name] = (wall, budget.env_steps, time.process_time() - cpu)
    bare_wall, steps = bare_loop(ENV, tasks, paths)
    out["bare loop"] = (bare_wall, steps, bare_wall)
    return out


async def feed_arm(tpl: ReActTemplate, n: int, pool: ProcessExecutor) -> dict[str, float]:
    policy = SimPolicy(tpl, SimConfig(tps=20_000, batch=256))
    runner = Runner(policy=policy, template=tpl, executor=pool,
                    sampler=TreeGRPOSampler.published(),
                    sampling=SamplingParams(max_new_tokens=48), concurrency=256)  # fmt: skip
    loop, engine = asyncio.get_running_loop(), policy.engine
    tasks, done, steady = toy_tasks(n, 1000), 0, None
    start, cpu, steps, tokens = (loop.time(), 0.0), time.process_time(), 0, 0
    async for result in runner.run(tasks):
        done += 1
        steps += result.budget.env_steps
        tokens += result.budget.generated_tokens
        if done == n - 256:  # the last task has started: fewer than 256 in flight from here
            steady = (loop.time(), engine.slot_seconds(loop.time()))
    end = (loop.time(), engine.slot_seconds(loop.time()))
    wall = end[0] - start[0]
    return {"steady": engine.occupancy(start, steady), "whole": engine.occupancy(start, end),
            "steps/s": steps / wall, "cpu/step": (time.process_time() - cpu) / steps,
            "tokens/turn": tokens / steps, "wall": wall}  # fmt: skip


def writer_arm(n: int) -> dict[str, float]:
    sys.path.insert(0, str(HERE))
    from export_speed import grow

    runner, results = asyncio.run(grow(n))
    rows = sum(len(v) for r in results for v in r.training.values())
    out = {}
    arms = (
        ("task by task", lambda w: [w.write(r) for r in results]),
        ("group commit (64)", lambda w: w.write_all(results, group=64)),
    )
    for name, write in arms:
        with tempfile.TemporaryDirectory(dir=HERE.parent / "runs") as d:
            t = time.perf_counter()
            with RunWriter.for_runner(Path(d) / "run", runner) as w:
                write(w)
            out[name] = rows / (time.perf_counter() - t)
    return out


SHARD_DRIVER = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
from collector_throughput import ENV, KW, template, toy_tasks
from treegym.harness import ChainSampler, InProcessExecutor, Runner
from treegym.harness.shards import shard_of
from treegym.policies import SamplingParams, ScriptedPolicy

async def main(index, count, n):
    tpl = template()
    runner = Runner(policy=ScriptedPolicy(tpl, "expert", epsilon=0.2, seed=0), template=tpl,
                    executor=InProcessExecutor(ENV, KW), sampler=ChainSampler(4),
                    sampling=SamplingParams(max_new_tokens=48), concurrency=16)
    tasks = shard_of(toy_tasks(n), index, count)
    async for _ in runner.run(tasks[:4]):  # warm
        pass
    print("ready", flush=True)
    sys.stdin.readline()
    steps, t = 0, time.perf_counter()
    async for r in runner.run(tasks):
        steps += r.budget.env_steps
    print(steps, time.perf_counter() - t, flush=True)

asyncio.run(main(*map(int, sys.argv[2:5])))
"""


def shard_arm(count: int, n: int) -> float:
    """Total env steps/s of ``count`` drivers started together (each after its warm-up)."""
    procs = [subprocess.Popen([sys.executable, "-c", SHARD_DRIVER, str(HERE), str(k),
                               str(count), str(n)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for k in range(count)]  # fmt: skip
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [tuple(map(float, p.communicate(timeout=600)[0].split())) for p in procs]
    return sum(s for s, _ in results) / max(w for _, w in results)


def measure(size: dict, reps: int) -> tuple[dict, list, list, dict]:
    """Every arm, ``reps`` repetitions: driver runs, engine feeds, writer rates, shard rates."""
    tpl = template()
    drv: dict[str, list[tuple]] = {}
    feeds, writers, shards = [], [], {1: [], 2: []}

    async def pooled() -> None:
        pool = ProcessExecutor(ENV, KW, n_workers=2)
        try:
            for _ in range(reps):
                for name, v in (await driver_arms(tpl, size["driver"], pool)).items():
                    drv.setdefault(name, []).append(v)
                feeds.append(await feed_arm(tpl, size["feed"], pool))
        finally:
            await pool.close()

    asyncio.run(pooled())
    for rep in range(reps):
        writers.append(writer_arm(size["writer"]))
        for count in (1, 2) if rep % 2 == 0 else (2, 1):
            shards[count].append(shard_arm(count, size["shard"]))
    return drv, feeds, writers, shards


def sections(size: str) -> list[Section]:
    """The suite's collector-throughput table: each arm against the issue's goal and the
    scaling model's prediction."""
    cfg = SIZES[size]
    before = os.getloadavg()[0]
    drv, feeds, writers, shards = measure(cfg, cfg["reps"])
    load = f"load average {before:.2f} before, {os.getloadavg()[0]:.2f} after"
    rows = driver_rows(drv) + feed_rows(feeds) + writer_rows(writers) + shard_rows(shards)
    return [Section(
        slug="collector-throughput",
        title="Collector throughput: driver, engine feed, writer, shards",
        intro=INTRO.format(**cfg),
        header=["part", "arm", "measured", "goal", "model prediction"],
        rows=[[part, arm, m.fmt(*fmt), goal, model] for part, arm, m, fmt, goal, model in rows],
        notes=[*NOTES, f"Machine state: {load}."],
        headline=headline(drv, feeds, writers, shards),
    )]  # fmt: skip


INTRO = (
    "Does one driver keep a GPU-class engine fed? ToyRooms (microsecond steps, so the driver's "
    "own cost is all there is), arms side by side in one run, {reps} repetitions, median "
    "(min–max). Driver: scripted noisy expert, chain G=4, concurrency 16, {driver} tasks; "
    "bare env loop with the same actions vs the runner in-process and with the process pool "
    "(2 workers). Engine feed: the simulated engine (`policies/sim.py`, 20,000 tokens/s, "
    "batch 256) under Tree-GRPO (published setting) through the pool, 256 tasks in flight "
    "of {feed}. Writer: Tree-GRPO M=4 trees of {writer} tasks written by `RunWriter` task by "
    "task and in group commits of 64, with `finalize`. Shards: S driver processes "
    "collecting shards of {shard} tasks at once."
)
NOTES = [
    "harness ms/step = (arm wall − bare-loop wall) / env steps; driver CPU ms/step is the "
    "driver process's CPU time per step, `t_drv`, the serial cost of one driver: the model "
    "predicts that one driver caps at 1 / t_drv steps/s on a core of its own.",
    "Engine occupancy: slots in use over 256, while 256 tasks are in flight (steady) and over "
    "the whole wall (the tail has fewer tasks than slots). Model: min(1, driver capacity / "
    "engine demand), demand = 20,000 tokens/s ÷ tokens per turn.",
    "Writer rows/s: sample rows per second of write + finalize; a task is durable when its "
    "ledger line is (group commit: one fsync round per group).",
    "Shards: total env steps/s over the slowest driver's wall; model: min(S, cores) × one "
    "driver's rate. On 2 cores the drivers compete with each other for the same cores.",
]


def driver_rows(drv: dict[str, list[tuple]]) -> list[tuple]:
    bare, rows = drv["bare loop"], []
    rows.append(("driver", "bare loop", Spread([s / w for w, s, _ in bare]), (0, " steps/s"),
                 "", ""))  # fmt: skip
    for name, runs in drv.items():
        if name == "bare loop":
            continue
        extra = Spread([1e3 * (w - b[0]) / s for (w, s, _), b in zip(runs, bare, strict=True)])
        cap = Spread([s / c for _, s, c in runs]).fmt(0, " steps/s")
        goal = "≥ 5,000 steps/s" if name.startswith("pool") else ""
        rows += [
            ("driver", f"runner, {name}", Spread([s / w for w, s, _ in runs]), (0, " steps/s"),
             goal, f"1 / t_drv = {cap}"),
            ("driver", f"runner, {name}: harness ms/step", extra, (3, " ms"),
             "≤ 0.1 ms" if name == "in-process" else "", ""),
        ]  # fmt: skip
    return rows


def feed_rows(feeds: list[dict]) -> list[tuple]:
    model = Spread([min(1.0, (1 / f["cpu/step"]) / (20_000 / f["tokens/turn"])) for f in feeds])
    return [
        ("engine feed", "occupancy, 256 in flight", Spread([f["steady"] for f in feeds]),
         (3, ""), "≥ 0.90", model.fmt(2)),
        ("engine feed", "occupancy, whole wall", Spread([f["whole"] for f in feeds]), (3, ""),
         "", ""),
        ("engine feed", "env steps/s", Spread([f["steps/s"] for f in feeds]), (0, ""), "", ""),
    ]  # fmt: skip


def writer_rows(writers: list[dict]) -> list[tuple]:
    rows = []
    for name in writers[0]:
        rel = ratios([w[name] for w in writers], [w["task by task"] for w in writers])
        goal = "≥ 20,000 rows/s" if name.startswith("group") else ""
        rows.append(("writer", name, Spread([w[name] for w in writers]), (0, " rows/s"), goal,
                     f"{rel.fmt(1, '×')} task by task"))  # fmt: skip
    return rows


def shard_rows(shards: dict[int, list[float]]) -> list[tuple]:
    cores = os.cpu_count() or 1
    return [("shards", f"S = {count}", ratios(rates, shards[1]), (2, "× S=1"),
             f"{count}× S=1" if count > 1 else "", f"{min(count, cores)}× S=1")
            for count, rates in shards.items()]  # fmt: skip


def headline(drv, feeds, writers, shards) -> str:
    pool = Spread([s / w for w, s, _ in drv["pool (2)"]])
    steady = Spread([f["steady"] for f in feeds])
    group = Spread([w["group commit (64)"] for w in writers])
    return (
        f"One driver with the process pool steps {pool.fmt(0)} ToyRooms env steps/s, keeps a "
        f"simulated 20,000 tok/s engine {steady.fmt(2)} busy with 256 tasks in flight, and "
        f"the group-commit writer stores {group.fmt(0)} sample rows/s; 2 shards give "
        f"{ratios(shards[2], shards[1]).fmt(2, '×')} one driver's steps/s."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=tuple(SIZES), default="full")
    for section in sections(ap.parse_args().size):
        print(section.markdown(None))


if __name__ == "__main__":
    main()
