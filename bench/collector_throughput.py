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

Run: ``python bench/collector_throughput.py [--reps 3] [--size smoke|full]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
SIZES = {"smoke": {"driver": 16, "feed": 300, "writer": 20, "shard": 32},
         "full": {"driver": 64, "feed": 768, "writer": 100, "shard": 128}}  # fmt: skip
HERE = Path(__file__).resolve().parent


def spread(xs: list[float], fmt: str = ",.0f") -> str:
    return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}–{max(xs):{fmt}})"


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", choices=tuple(SIZES), default="full")
    args = ap.parse_args()
    size, tpl = SIZES[args.size], template()
    print(f"load before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    drv: dict[str, list[tuple]] = {}
    feeds, writers, shards = [], [], {1: [], 2: []}

    async def pooled() -> None:
        pool = ProcessExecutor(ENV, KW, n_workers=2)
        try:
            for _ in range(args.reps):
                for name, v in (await driver_arms(tpl, size["driver"], pool)).items():
                    drv.setdefault(name, []).append(v)
                feeds.append(await feed_arm(tpl, size["feed"], pool))
        finally:
            await pool.close()

    asyncio.run(pooled())
    for rep in range(args.reps):
        writers.append(writer_arm(size["writer"]))
        for count in (1, 2) if rep % 2 == 0 else (2, 1):
            shards[count].append(shard_arm(count, size["shard"]))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    report(drv, feeds, writers, shards)


def report(drv, feeds, writers, shards) -> None:
    bare = drv["bare loop"]
    print("\n## 1. Driver (ToyRooms, chain G=4, concurrency 16)")
    print("| arm | env steps/s | harness ms/step | driver CPU ms/step | model: 1/t_drv steps/s |")
    print("|---|---|---|---|---|")
    for name, runs in drv.items():
        rate = [s / w for w, s, _ in runs]
        if name == "bare loop":
            print(f"| {name} | {spread(rate)} | — | — | — |")
            continue
        extra = [1e3 * (w - b[0]) / s for (w, s, _), b in zip(runs, bare, strict=True)]
        cpu = [1e3 * c / s for _, s, c in runs]
        cap = [s / c for _, s, c in runs]
        print(
            f"| runner, {name} | {spread(rate)} | {spread(extra, '.3f')} | "
            f"{spread(cpu, '.3f')} | {spread(cap)} |"
        )
    print("\n## 2. Engine feed (sim 20,000 tok/s, batch 256; Tree-GRPO, 256 tasks in flight)")
    print(
        "| occupancy, 256 in flight | occupancy, whole wall | env steps/s | tokens/turn | "
        "driver CPU ms/step | model occupancy |"
    )
    print("|---|---|---|---|---|---|")
    steady = [f["steady"] for f in feeds]
    model = [min(1.0, (1 / f["cpu/step"]) / (20_000 / f["tokens/turn"])) for f in feeds]
    print(
        f"| {spread(steady, '.3f')} | {spread([f['whole'] for f in feeds], '.3f')} | "
        f"{spread([f['steps/s'] for f in feeds])} | "
        f"{spread([f['tokens/turn'] for f in feeds], '.1f')} | "
        f"{spread([1e3 * f['cpu/step'] for f in feeds], '.3f')} | {spread(model, '.2f')} |"
    )
    print("\n## 3. Writer (sample rows/s of write + finalize)")
    print("| arm | sample rows/s | ÷ task by task |")
    print("|---|---|---|")
    for name in writers[0]:
        rel = [w[name] / w["task by task"] for w in writers]
        print(f"| {name} | {spread([w[name] for w in writers])} | {spread(rel, '.2f')} |")
    print("\n## 4. Shards (in-process envs, chain G=4)")
    print("| drivers S | total env steps/s | ÷ S=1 | model: min(S, cores) |")
    print("|---|---|---|---|")
    for count, rates in shards.items():
        rel = [r / one for r, one in zip(rates, shards[1], strict=True)]
        print(
            f"| {count} | {spread(rates)} | {spread(rel, '.2f')} | "
            f"{min(count, os.cpu_count() or 1)} |"
        )


if __name__ == "__main__":
    main()
