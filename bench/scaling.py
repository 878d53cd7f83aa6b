"""A measured scaling model of collection time vs env workers, engines and tree width.

Measured here, in one run:
1. env costs in this process: seconds per ``step``, per ``snapshot``/``restore``, and the
   portable snapshot's size in bytes (what would travel if a node moved between actors);
2. the tree shape of the sampler on the task set (env steps, generated tokens per task), and
   the executor's per-call cost at 1 worker (``t_call`` = wall / env steps, env-bound run with a
   scripted policy, so the policy costs nothing);
3. the policy's generation throughput (the embedded model through ``HFPolicy``, tokens/s).

The model (assumptions in README "Scale out"):
    T_env(W)    = S * (t_drv + t_env / min(W, cores, C * width))
                  t_env: env work per call (step + snapshot + restore), spreads over workers;
                  t_drv: the driver's serial cost per call (t_call at W=1 minus t_env)
    T_policy(E) = G / (E * R)                                  (engines decode in parallel)
    T(W, E)     = max(T_env(W), T_policy(E))                   (the two overlap; the slower bounds)
with S env steps, G generated tokens, C tasks in flight, ``width`` = mean children per expansion,
R tokens/s per engine. Checked against real runs at 1, 2 and 4 local worker processes (and
Ray actors with ``--ray``), then extrapolated to cluster sizes.

Run: ``python bench/scaling.py [--tasks 24] [--env treegym/ToyRooms-v0] [--ray]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from rich.console import Console
from rich.table import Table

import treegym
from treegym.harness import InProcessExecutor, ProcessExecutor, Runner, Task, TreeGRPOSampler
from treegym.policies import ReActTemplate, SamplingParams, ScriptedPolicy
from treegym.policies.embedded import embedded_model_path


def env_costs(env_id: str, kwargs: dict, n: int = 200) -> dict[str, float]:
    env = treegym.make(env_id, **kwargs)
    _, info = env.reset(seed=0, options={"task": 0})
    step_s, snap_s, restore_s, sizes = [], [], [], []
    for i in range(n):
        t = time.perf_counter()
        snap = env.snapshot()
        snap_s.append(time.perf_counter() - t)
        if i % 20 == 0:
            sizes.append(len(snap.portable()))
        commands = info.get("admissible_commands") or ["look"]
        action = commands[i % len(commands)]
        t = time.perf_counter()
        _, _, term, trunc, info = env.step(action)
        step_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        env.restore(snap)
        restore_s.append(time.perf_counter() - t)
        _, _, term, trunc, info = env.step(action)
        if term or trunc:
            _, info = env.reset(seed=i, options={"task": i % 7})
    env.close()
    med = statistics.median
    return {
        "step_ms": 1e3 * med(step_s),
        "snapshot_ms": 1e3 * med(snap_s),
        "restore_ms": 1e3 * med(restore_s),
        "snapshot_bytes": med(sizes),
    }


async def collect(executor, template, tasks, sampler, concurrency: int) -> tuple[float, int, int]:
    policy = ScriptedPolicy(template, "expert", epsilon=0.5, seed=3)
    runner = Runner(
        policy=policy,
        template=template,
        executor=executor,
        sampler=sampler,
        sampling=SamplingParams(max_new_tokens=48),
        concurrency=concurrency,
    )
    t0 = time.perf_counter()
    steps = gen = 0
    try:
        async for r in runner.run(tasks):
            steps += r.budget.env_steps
            gen += r.budget.generated_tokens
    finally:
        await executor.close()
    return time.perf_counter() - t0, steps, gen


def policy_throughput() -> float:
    from treegym.policies import GenerateRequest
    from treegym.policies.hf import HFPolicy

    pol = HFPolicy(embedded_model_path())
    ids = tuple(
        pol.tokenizer.encode(
            "<|user|>-= Kitchen =-<|end|>\n<|assistant|>", add_special_tokens=False
        )
    )
    reqs = [
        GenerateRequest(ids, SamplingParams(max_new_tokens=32, seed=s, temperature=1.0))
        for s in range(4)
    ]
    asyncio.run(pol.generate(reqs[:1]))  # warm up
    best = 0.0
    for _ in range(3):  # best of 3: other jobs share the cores
        pol = HFPolicy(embedded_model_path())  # cold prefix cache each time
        t = time.perf_counter()
        out = asyncio.run(pol.generate(reqs))
        best = max(best, sum(len(r.output_ids) for r in out) / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", default="treegym/ToyRooms-v0")
    ap.add_argument("--tasks", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--ray", action="store_true", help="also run Ray actors at 1/2/4")
    args = ap.parse_args()
    console = Console()
    kwargs = {"max_episode_steps": 20}
    cores = os.cpu_count() or 1
    from transformers import AutoTokenizer

    template = ReActTemplate(AutoTokenizer.from_pretrained(str(embedded_model_path())))
    sampler = TreeGRPOSampler(m=2, n=2, l=1, k=3)
    tasks = [Task(f"t{i}", {"task": i}, seed=i) for i in range(args.tasks)]
    width = 2.0  # Tree-GRPO's N=2 expansions per round, M=2 roots: 2 branches per expansion

    costs = env_costs(args.env, kwargs)
    base_wall, steps, gen = asyncio.run(
        collect(InProcessExecutor(args.env, kwargs), template, tasks, sampler, args.concurrency)
    )
    rate = policy_throughput()

    runs: list[tuple[str, int, float]] = []
    kinds = [("process", lambda w: ProcessExecutor(args.env, kwargs, n_workers=w))]
    if args.ray:
        import ray

        from treegym.harness.ray_executor import RayExecutor

        ray.init(num_cpus=max(4, cores), include_dashboard=False, log_to_driver=False)
        kinds.append(("ray", lambda w: RayExecutor(args.env, kwargs, n_workers=w)))
    for kind, make in kinds:
        for w in (1, 2, 4):
            t_start = time.perf_counter()
            ex = make(w)
            setup = time.perf_counter() - t_start
            wall, s, _ = asyncio.run(collect(ex, template, tasks, sampler, args.concurrency))
            runs.append((kind, w, wall, setup, s))
    if args.ray:
        ray.shutdown()

    info = Table(
        title=f"measured ({args.env}, {args.tasks} tasks, Tree-GRPO M=2 N=2 L=1 K=3, {cores} cores)"
    )
    info.add_column("quantity")
    info.add_column("value", justify="right")
    for k, v in costs.items():
        info.add_row(k, f"{v:,.3f}" if k != "snapshot_bytes" else f"{v:,.0f}")
    info.add_row("env steps S / task", f"{steps / args.tasks:.1f}")
    info.add_row("generated tokens G / task", f"{gen / args.tasks:.0f}")
    info.add_row("in-process wall s (no IPC)", f"{base_wall:.2f}")
    info.add_row("policy R (embedded HFPolicy, tok/s)", f"{rate:.0f}")
    console.print(info)

    # t_call at 1 worker = a serial part in the driver (event loop, thread hop, pickling,
    # pipe/RPC) + the env work in the worker; only the latter spreads over workers.
    t_env = (costs["step_ms"] + costs["snapshot_ms"] + costs["restore_ms"]) / 1e3
    table = Table(title="collection time: measured vs modelled (env-bound, scripted policy)")
    for col in ("executor", "workers", "setup s", "measured s", "modelled s", "model/measured"):
        table.add_column(col, justify="right")
    drivers = {}
    for kind in sorted({k for k, *_ in runs}):
        one = next(r for r in runs if r[0] == kind and r[1] == 1)
        t_drv = max(0.0, one[2] / one[4] - t_env)
        drivers[kind] = t_drv
        for _, w, wall, setup, s in (r for r in runs if r[0] == kind):
            model = s * (t_drv + t_env / min(w, cores, args.concurrency * width))
            table.add_row(kind, str(w), f"{setup:.2f}", f"{wall:.2f}", f"{model:.2f}",
                          f"{model / wall:.2f}")  # fmt: skip
    console.print(table)
    for kind, t_drv in drivers.items():
        console.print(f"{kind}: driver-serial cost {1e3 * t_drv:.3f} ms per env call "
                      f"-> at most {1 / t_drv:,.0f} env steps/s per driver process")  # fmt: skip

    t_drv = drivers.get("ray", drivers["process"])
    s_task, g_task = steps / args.tasks, gen / args.tasks
    engines = (1, 4, 16, 64)
    for label, step_s in (("this env", t_env), ("TextWorld-like env, 1.8 ms/step", 1.8e-3)):
        ext = Table(title=f"extrapolated: 10,000 tasks of this tree shape, {label}, one driver, "
                          "embedded-model engines (minutes; bound in brackets)")  # fmt: skip
        ext.add_column("env workers W")
        for e in engines:
            ext.add_column(f"E={e}", justify="right")
        for w in (8, 32, 128, 512):
            row = []
            for e in engines:
                parts = {"driver": 10_000 * s_task * t_drv,
                         "env": 10_000 * s_task * step_s / w,
                         "policy": 10_000 * g_task / (e * rate)}  # fmt: skip
                bound = max(parts, key=parts.get)
                row.append(f"{parts[bound] / 60:,.1f} ({bound})")
            ext.add_row(str(w), *row)
        console.print(ext)


if __name__ == "__main__":
    main()
