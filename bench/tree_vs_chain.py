"""Tree-GRPO vs chain GRPO at equal training trajectories per task, side by side in one run.

Same held-out tasks, same policy (the embedded model through ``HFPolicy`` with its prefix KV
cache, temperature 1), same seeds: ``chain`` with G=6 against ``tree_grpo`` with the published
M=2, N=2, L=1, K=3 (6 trajectories per task). Each arm gets a fresh policy (cold cache) and
the arms alternate order across repeats. Printed: generated tokens, prompt tokens, computed
(uncached) prompt tokens, env steps, restores, wall time, the tree/chain ratios, computed
tokens relative to the trees' unique tokens, and the policy-busy fraction (policy seconds /
wall seconds).

Run: ``python bench/tree_vs_chain.py [--tasks 8] [--repeats 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from rich.console import Console
from rich.table import Table

from treegym.envs.textworld_games import make_game
from treegym.harness import (
    Budget,
    ChainSampler,
    ProcessExecutor,
    Runner,
    Sampler,
    Task,
    TreeGRPOSampler,
)
from treegym.policies import ReActTemplate, SamplingParams
from treegym.policies.embedded import EVAL_SEEDS, embedded_model_path
from treegym.policies.embedded import embedded_game_spec as game_spec
from treegym.policies.hf import HFPolicy


async def run_arm(sampler: Sampler, tasks: list[Task], workers: int) -> Budget:
    policy = HFPolicy(embedded_model_path())
    template = ReActTemplate(policy.tokenizer)
    executor = ProcessExecutor("treegym/TextWorld-v0", {"max_episode_steps": 20}, n_workers=workers)
    sampling = SamplingParams(max_new_tokens=48, temperature=1.0)
    runner = Runner(policy=policy, template=template, executor=executor, sampler=sampler,
                    sampling=sampling, concurrency=4)  # fmt: skip
    total = Budget()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        async for result in runner.run(tasks):
            result.budget.wall_s = 0.0  # per-task walls overlap; the arm's wall is measured below
            total += result.budget
    finally:
        await executor.close()
    total.wall_s = loop.time() - t0
    return total


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tasks = [
        Task(f"cooking-{s}", {"task": str(make_game(game_spec(s)))}, seed=s)
        for s in EVAL_SEEDS[: args.tasks]
    ]
    arms = {"chain G=6": ChainSampler(6), "tree_grpo M2 N2 L1 K3": TreeGRPOSampler.published()}
    runs: dict[str, list[Budget]] = {name: [] for name in arms}
    for rep in range(args.repeats):
        order = list(arms) if rep % 2 == 0 else list(reversed(arms))
        for name in order:
            runs[name].append(asyncio.run(run_arm(arms[name], tasks, args.workers)))
    console = Console(width=max(Console().width, 120))
    table = Table(
        title=f"tree vs chain, {args.tasks} held-out tw-cooking tasks, {args.repeats} repeat(s)"
    )
    metrics = [
        ("leaves (trajectories)", lambda b: b.leaves),
        ("distinct leaves", lambda b: b.distinct_leaves),
        ("generated tokens", lambda b: b.generated_tokens),
        ("prompt tokens", lambda b: b.prompt_tokens),
        ("computed prompt tokens", lambda b: b.computed_prompt_tokens),
        ("env steps", lambda b: b.env_steps),
        ("restores", lambda b: b.restores),
        ("wall s", lambda b: round(b.wall_s, 1)),
        ("policy busy", lambda b: round(b.policy_busy, 2)),
        ("zero-variance groups", lambda b: b.zero_variance_groups),
        ("(computed+generated)/unique", lambda b: round(
            (b.computed_prompt_tokens + b.generated_tokens) / max(1, b.unique_tokens), 2)),
    ]  # fmt: skip
    chain, tree = list(arms)
    table.add_column("metric")
    table.add_column(chain, justify="right")
    table.add_column(tree, justify="right")
    table.add_column("tree / chain", justify="right")
    for label, fn in metrics:
        a = statistics.median(fn(b) for b in runs[chain])
        t = statistics.median(fn(b) for b in runs[tree])
        table.add_row(label, f"{a:g}", f"{t:g}", f"{t / a:.2f}" if a else "—")
    console.print(table)


if __name__ == "__main__":
    main()
