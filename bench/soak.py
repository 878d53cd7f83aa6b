"""Soak: collect a fixed number of trees into a run folder and report memory and descriptor
growth — RSS growth per 1,000 nodes (this process and the env worker processes) and open file
descriptors at the end. A leak from env copies, native library copies or caches shows up as a
steady RSS slope or a growing descriptor count.

    python bench/soak.py --trees 400                     # ToyRooms, scripted policy
    python bench/soak.py --env treegym/TextWorld-v0 --trees 100 --workers 2

Uses psutil when installed, else /proc/<pid>/status (VmRSS) and /proc/<pid>/fd.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer

from treegym.harness import (
    InProcessExecutor,
    ProcessExecutor,
    Runner,
    Task,
    TreeGRPOSampler,
)
from treegym.harness.collect import collect
from treegym.policies import ReActTemplate, ScriptedPolicy
from treegym.policies.embedded import embedded_model_path


def rss_mb(pid: int) -> float:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    try:
        import psutil

        return psutil.Process(pid).num_fds()
    except ImportError:
        return len(os.listdir(f"/proc/{pid}/fd"))


def worker_pids(executor) -> list[int]:
    return [w.proc.pid for w in getattr(executor, "workers", []) if w.proc.is_alive()]


def tasks_for(env: str, n: int, game: str | None) -> list[Task]:
    if "ToyRooms" in env:
        return [Task(f"toy-{i}", {"task": i % 7}, seed=i) for i in range(n)]
    if "TextWorld" in env:
        from treegym.envs.textworld_games import make_game

        games = [str(make_game(game or f"tw-simple:rewards=dense,goal=detailed,seed={s}"))
                 for s in range(3)]  # fmt: skip
        return [Task(f"tw-{i}", {"game": games[i % 3]}, seed=i) for i in range(n)]
    raise SystemExit(f"soak knows ToyRooms and TextWorld task sets, not {env}")


async def soak(args) -> None:
    template = ReActTemplate(AutoTokenizer.from_pretrained(str(embedded_model_path())))
    sampler = TreeGRPOSampler(m=2, n=2, l=1, k=3)
    n_tasks = max(1, args.trees // sampler.m)
    kwargs = {"max_episode_steps": args.max_steps}
    executor = (ProcessExecutor(args.env, kwargs, n_workers=args.workers) if args.workers
                else InProcessExecutor(args.env, kwargs))  # fmt: skip
    runner = Runner(policy=ScriptedPolicy(template, "expert", epsilon=0.3, seed=0),
                    template=template, executor=executor, sampler=sampler,
                    concurrency=args.concurrency)  # fmt: skip
    pids = worker_pids(executor)
    me = os.getpid()
    samples: list[tuple[int, float, float]] = []  # (nodes so far, own RSS, workers' RSS)
    nodes = 0
    warm = max(1, n_tasks // 10)

    def on_result(entry, result) -> None:
        nonlocal nodes
        nodes += entry["nodes"]
        due = not samples or entry["seq"] % 5 == 0 or entry["seq"] == n_tasks - 1
        if due and entry["seq"] + 1 >= warm:
            samples.append((nodes, rss_mb(me), sum(rss_mb(p) for p in worker_pids(executor))))

    fds_before = open_fds(me)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        await collect(runner, tasks_for(args.env, n_tasks, args.game), Path(tmp) / "run",
                      on_result=on_result)  # fmt: skip
    wall = time.perf_counter() - t0
    fds_after = open_fds(me)
    (n0, own0, w0), (n1, own1, w1) = samples[0], samples[-1]
    per_k = 1000 / max(1, n1 - n0)
    where = f"{args.workers} env workers" if args.workers else "envs in-process"
    print(f"soak: {args.env}, {n_tasks * sampler.m} trees, {nodes} nodes in {wall:.1f} s "
          f"({where}; the first {warm} tasks are warm-up)")  # fmt: skip
    print(f"RSS collector: {own0:.1f} -> {own1:.1f} MB, growth {(own1 - own0) * per_k:+.2f} MB "
          "per 1,000 nodes")  # fmt: skip
    if pids:
        print(f"executor: {len(executor._recipes)} replay recipes held, "
              f"{executor.respawns} respawns")  # fmt: skip
        print(f"RSS env workers (sum): {w0:.1f} -> {w1:.1f} MB, growth "
              f"{(w1 - w0) * per_k:+.2f} MB per 1,000 nodes")  # fmt: skip
    print(f"open file descriptors: {fds_before} before, {fds_after} after the run "
          f"({open_fds(me)} now)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", default="treegym/ToyRooms-v0")
    ap.add_argument("--trees", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2, help="0: envs in this process")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=12)
    ap.add_argument("--game", help="TextWorld game spec (default: three tw-simple games)")
    args = ap.parse_args(argv)
    asyncio.run(soak(args))


if __name__ == "__main__":
    main()
