"""Profile the collector's driver: where its serial time per env step goes.

A zero-cost scripted policy grows chain trajectories through the ``Runner`` (as in
``bench/harness_overhead.py``), and pyinstrument samples the driver process (the event loop, the
template, the tree and budget bookkeeping, the executor's pipe traffic; worker processes are not
sampled). Prints env steps/s and the profile's call tree.

The command (pyinstrument is a profiling tool, not a dependency: ``.venv/bin/pip install
pyinstrument``)::

    python bench/profile_driver.py --env toy --executor pool      # a microsecond env
    python bench/profile_driver.py --env textworld --executor pool
    python bench/profile_driver.py --env toy --executor inprocess --no-profile   # timing only

``--sampler tree_grpo`` grows Tree-GRPO trees instead (snapshots that are expanded again).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench_common import heldout_tasks

from treegym.harness import (
    ChainSampler,
    InProcessExecutor,
    ProcessExecutor,
    Runner,
    Task,
    TreeGRPOSampler,
)
from treegym.policies import ReActTemplate, SamplingParams, ScriptedPolicy
from treegym.policies.embedded import embedded_model_path

ENVS = {"toy": "treegym/ToyRooms-v0", "textworld": "treegym/TextWorld-v0"}


def tasks_for(env: str, n: int) -> list[Task]:
    if env == "toy":
        return [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(n)]
    return heldout_tasks("textworld", n)


async def run(
    args: argparse.Namespace, template: ReActTemplate, tasks: list[Task]
) -> tuple[float, float, int]:
    env_id, kwargs = ENVS[args.env], {"max_episode_steps": 20}
    executor = (
        ProcessExecutor(env_id, kwargs, n_workers=args.workers)
        if args.executor == "pool"
        else InProcessExecutor(env_id, kwargs)
    )
    sampler = ChainSampler(4) if args.sampler == "chain" else TreeGRPOSampler.published()
    runner = Runner(policy=ScriptedPolicy(template, "expert", epsilon=0.2, seed=0),
                    template=template, executor=executor, sampler=sampler,
                    sampling=SamplingParams(max_new_tokens=48),
                    concurrency=args.concurrency)  # fmt: skip
    try:
        async for _ in runner.run(tasks[: args.concurrency]):  # warm: imports, games loaded
            pass
        steps = 0
        t0, cpu0 = time.perf_counter(), time.process_time()
        async for result in runner.run(tasks):
            steps += result.budget.env_steps
        return time.perf_counter() - t0, time.process_time() - cpu0, steps
    finally:
        await executor.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", choices=tuple(ENVS), default="toy")
    ap.add_argument("--executor", choices=("pool", "inprocess"), default="pool")
    ap.add_argument("--sampler", choices=("chain", "tree_grpo"), default="chain")
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--no-profile", action="store_true", help="time only")
    args = ap.parse_args()
    from transformers import AutoTokenizer

    template = ReActTemplate(AutoTokenizer.from_pretrained(str(embedded_model_path())))
    tasks = tasks_for(args.env, args.tasks)  # games are made before anything is sampled
    if args.no_profile:
        wall, cpu, steps = asyncio.run(run(args, template, tasks))
    else:
        from pyinstrument import Profiler

        with Profiler(async_mode="disabled") as profiler:
            wall, cpu, steps = asyncio.run(run(args, template, tasks))
        profiler.print(show_all=False, short_mode=False)
    print(f"{args.env} {args.executor} {args.sampler}: {steps} env steps in {wall:.2f} s "
          f"= {steps / wall:,.0f} steps/s, {1e3 * wall / steps:.3f} ms/step; the driver "
          f"process's CPU {1e3 * cpu / steps:.3f} ms/step")  # fmt: skip


if __name__ == "__main__":
    main()
