"""Samplers side by side on the same tasks and policy: at equal training trajectories per task
(table 1 of BENCHMARKS.md) and at equal token budget (table 2).

Arms (6 training trajectories per task unless said): ``chain`` G=6; ``tree_grpo`` in the
published M=2 N=2 L=1 K=3 and the reference code's M=4 N=2 L=1 (K capped at the 3 leaves a
tree has: its default K=4 cannot run, so 12 trajectories); ``treepo`` (32-token segments, 6
finished trajectories, div 2); ``trace`` (2 roots + 4 continuations per task, its online
logistic predictor); ``chain+selective`` and ``tree_grpo+selective`` (the Selective Rollout
gate at the paper's K=10, d_L=0.12 around chain G=6 and published tree_grpo).

Everything runs through :class:`~treegym.harness.Runner` with the embedded model
(``HFPolicy``, prefix KV cache on, temperature 1, a fresh cold policy per arm), env worker
processes, on held-out tw-cooking games of the embedded model's family (TextWorld) and
generated ALFWorld tasks of the six types (ALFWorld). A repetition runs every arm once with
the run seed = the repetition's index (branch seeds derive from it), arms in a rotated order;
figures are medians over repetitions with the min–max range. Ratios are taken per repetition
against ``chain`` measured in the same repetition.

Gate figures are exact: branch seeds depend only on a branch's position, so the gated arm's
groups are the ungated arm's groups cut at step K, and a gated group's ungated twin (same
repetition) tells whether the gate was right (precision: gated groups whose full group has
zero reward variance).

Run alone: ``python bench/sampler_comparison.py [--size smoke|modest|full]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import Chart, Section, Spread, heldout_tasks, ratios
from transformers.utils import logging as hf_logging

from treegym.envs.embedded_mix import MAX_EPISODE_STEPS
from treegym.harness import (
    Budget,
    ChainSampler,
    ProcessExecutor,
    Runner,
    Sampler,
    Task,
    TaskResult,
    TraceSampler,
    TreeGRPOSampler,
    TreePOSampler,
)
from treegym.harness.selective import GatedSampler, is_gated
from treegym.policies import ReActTemplate, SamplingParams
from treegym.policies.embedded import embedded_model_path
from treegym.policies.hf import HFPolicy, model_digest

SIZES = {
    "smoke": {"tasks": 1, "repeats": 2, "max_steps": {"textworld": 4, "alfworld": 4}},
    # what the embedded model was trained and evaluated at (embedded_mix.MAX_EPISODE_STEPS)
    "modest": {"tasks": 8, "repeats": 3, "max_steps": MAX_EPISODE_STEPS},
    "full": {"tasks": 32, "repeats": 3, "max_steps": MAX_EPISODE_STEPS},
}
GATE_K, GATE_DL = 10, 0.12
SAVED_ONLY = bool(os.environ.get("TREEGYM_BENCH_SAVED_ONLY"))
"""Use only the repetitions on disk, measure nothing (``run_all.py --saved-only``)."""
HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("TREEGYM_BENCH_RESULTS") or HERE / "results")
"""Finished repetitions (``$TREEGYM_BENCH_RESULTS`` moves them, e.g. for the CI smoke test)."""


def arms() -> dict[str, Callable[[], Sampler]]:
    """Fresh samplers per run (TRACE learns during a run)."""
    return {
        "chain G=6": lambda: ChainSampler(6),
        "tree_grpo M2 N2 L1 K3": TreeGRPOSampler.published,
        "tree_grpo M4 N2 L1 K3": TreeGRPOSampler.reference,
        "treepo seg32 w6 div2": lambda: TreePOSampler(segment_len=32, max_width=6, div=2),
        "trace 2+4": lambda: TraceSampler(roots=2, continuations=4),
        "chain+selective": lambda: GatedSampler(ChainSampler(6), k=GATE_K, d_l=GATE_DL),
        "tree_grpo+selective": lambda: GatedSampler(
            TreeGRPOSampler.published(), k=GATE_K, d_l=GATE_DL
        ),
    }


UNGATED = {"chain+selective": "chain G=6", "tree_grpo+selective": "tree_grpo M2 N2 L1 K3"}
BASELINE = "chain G=6"


@dataclass(frozen=True)
class EnvSetup:
    slug: str
    label: str
    env_id: str
    tasks: Callable[[int], list[Task]]


ENVS = (
    EnvSetup("textworld", "TextWorld (held-out embedded mix)", "treegym/TextWorld-v0",
             lambda n: heldout_tasks("textworld", n)),
    EnvSetup("alfworld", "ALFWorld (held-out embedded mix, six types)", "treegym/ALFWorld-v0",
             lambda n: heldout_tasks("alfworld", n)),
)  # fmt: skip


@dataclass
class ArmRun:
    """One arm in one repetition: summed counters and per-task outcomes."""

    budget: Budget
    wall_s: float
    mixed: dict[str, bool] = field(default_factory=dict)
    """Per task: do its training leaves have more than one distinct return?"""
    gated: dict[str, bool] = field(default_factory=dict)

    @property
    def tasks(self) -> int:
        return len(self.mixed)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArmRun:
        return cls(Budget(**d["budget"]), d["wall_s"], d["mixed"], d["gated"])


def mixed_rewards(result: TaskResult) -> bool:
    trees = {t.index: t for t in result.trees}
    returns = {trees[i].returns(leaf) for i, leaves in result.training.items() for leaf in leaves}
    return len(returns) > 1


hf_logging.disable_progress_bar()  # one "Loading weights" bar per arm would drown the output


async def run_arm(env: EnvSetup, tasks: list[Task], sampler: Sampler, seed: int,
                  max_steps: int) -> ArmRun:  # fmt: skip
    policy = HFPolicy(embedded_model_path(), seed=seed)
    template = ReActTemplate.for_model(policy.tokenizer, embedded_model_path())  # as trained
    executor = ProcessExecutor(env.env_id, {"max_episode_steps": max_steps}, n_workers=2)
    sampling = SamplingParams(max_new_tokens=48, temperature=1.0)
    runner = Runner(policy=policy, template=template, executor=executor, sampler=sampler,
                    sampling=sampling, concurrency=4, seed=seed)  # fmt: skip
    out = ArmRun(Budget(), 0.0)
    t0 = time.perf_counter()
    try:
        async for result in runner.run(tasks):
            if result.error:
                raise RuntimeError(f"{result.task.task_id}: {result.error}")
            result.budget.wall_s = 0.0  # per-task walls overlap; the arm's wall is below
            out.budget += result.budget
            out.mixed[result.task.task_id] = mixed_rewards(result)
            out.gated[result.task.task_id] = is_gated(result.trees)
    finally:
        await executor.close()
    out.wall_s = time.perf_counter() - t0
    return out


def results_dir(size: str) -> Path:
    """Where finished repetitions are kept (one JSON per env and repetition), so an interrupted
    run resumes and two envs can be measured by two processes at once (``--env``)."""
    return RESULTS / f"samplers-{size}"


def measure_env(env: EnvSetup, size: str) -> list[dict[str, ArmRun]]:
    """Every repetition of ``env`` (measuring those not on disk yet), in order."""
    cfg = SIZES[size]
    names = list(arms())
    config = {**cfg, "arms": names, "model_sha256": model_digest(embedded_model_path())}
    folder = results_dir(size)
    folder.mkdir(parents=True, exist_ok=True)
    tasks: list[Task] | None = None
    reps = []
    for rep in range(cfg["repeats"]):
        path = folder / f"{env.slug}-rep{rep}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("config") == config:  # another model's repetitions are measured again
                reps.append({k: ArmRun.from_dict(v) for k, v in saved["arms"].items()})
                continue
        if SAVED_ONLY:
            break
        tasks = tasks if tasks is not None else env.tasks(cfg["tasks"])
        shift = rep % len(names)
        runs = {}
        for name in names[shift:] + names[:shift]:
            sampler = arms()[name]()
            runs[name] = asyncio.run(run_arm(env, tasks, sampler, rep, cfg["max_steps"][env.slug]))
        runs = {name: runs[name] for name in names}
        doc = {"config": config,
               "arms": {k: dataclasses.asdict(v) for k, v in runs.items()}}  # fmt: skip
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)
        reps.append(runs)
    return reps


def measure(size: str, envs: Sequence[EnvSetup] = ENVS) -> dict[str, dict[str, list[ArmRun]]]:
    """``{env label: {arm: [ArmRun per repetition]}}``."""
    out = {}
    for env in envs:
        reps = measure_env(env, size)
        out[env.label] = {name: [r[name] for r in reps] for name in arms()}
    return out


# ---------------------------------------------------------------------- figures
def per_rep(runs: list[ArmRun], fn: Callable[[ArmRun], float]) -> list[float]:
    return [fn(r) for r in runs]


def rel(runs: list[ArmRun], base: list[ArmRun], fn: Callable[[ArmRun], float]) -> Spread:
    """``fn`` of an arm over ``fn`` of the baseline, per repetition."""
    return ratios(per_rep(runs, fn), per_rep(base, fn))


def tokens(r: ArmRun) -> float:
    """What an engine spends: generated plus computed (uncached) prompt tokens."""
    return r.budget.generated_tokens + r.budget.computed_prompt_tokens


def per_100k_tokens(count: Callable[[ArmRun], float]) -> Callable[[ArmRun], float]:
    """``count`` per 100k engine tokens of the run."""
    return lambda r: 1e5 * count(r) / max(1, tokens(r))


def generated(r: ArmRun) -> float:
    return r.budget.generated_tokens


def env_steps(r: ArmRun) -> float:
    return r.budget.env_steps


def share_mixed(r: ArmRun) -> float:
    return sum(r.mixed.values()) / max(1, r.tasks)


def gate_figures(gated: list[ArmRun], ungated: list[ArmRun]) -> tuple[Spread, Spread, Spread]:
    """(gated share, precision, generated tokens saved) per repetition, from the twin arms."""
    share, precision, saved = [], [], []
    for g, u in zip(gated, ungated, strict=True):
        fired = [t for t, on in g.gated.items() if on]
        share.append(len(fired) / max(1, g.tasks))
        precision.append(sum(not u.mixed[t] for t in fired) / len(fired) if fired else float("nan"))
        saved.append(1 - g.budget.generated_tokens / max(1, u.budget.generated_tokens))
    return Spread(share), Spread(precision), Spread(saved)


def equal_trajectories(setup: EnvSetup, runs: dict[str, list[ArmRun]], cfg: dict) -> Section:
    env = setup.label
    base = runs[BASELINE]
    header = ["arm", "trajectories / task", "generated tok", "computed prompt tok",
              "cached prompt tok", "env steps", "wall s", "distinct leaves", "mixed-reward tasks",
              "zero-variance groups", "gen tok ÷ chain", "engine tok ÷ chain",
              "unique tok ÷ chain", "env steps ÷ chain", "wall ÷ chain"]  # fmt: skip
    rows = []
    figures = {"generated tokens": generated, "engine tokens": tokens, "env steps": env_steps,
               "wall": lambda r: r.wall_s}  # fmt: skip
    vs_chain = {name: {k: rel(rs, base, fn) for k, fn in figures.items()}
                for name, rs in runs.items()}  # fmt: skip
    for name, rs in runs.items():
        b = [r.budget for r in rs]
        ratio = vs_chain[name]
        unique = rel(rs, base, lambda r: r.budget.unique_tokens)
        rows.append([
            name,
            Spread([x.leaves / max(1, r.tasks) for x, r in zip(b, rs, strict=True)]).fmt(1),
            Spread([x.generated_tokens for x in b]).fmt(0),
            Spread([x.computed_prompt_tokens for x in b]).fmt(0),
            Spread([x.cached_tokens for x in b]).fmt(0),
            Spread([x.env_steps for x in b]).fmt(0),
            Spread(per_rep(rs, lambda r: r.wall_s)).fmt(0),
            Spread([x.distinct_leaves for x in b]).fmt(0),
            Spread([100 * share_mixed(r) for r in rs]).fmt(0, "%"),
            Spread([100 * x.zero_variance_groups / max(1, x.groups) for x in b]).fmt(0, "%"),
            ratio["generated tokens"].fmt(), ratio["engine tokens"].fmt(), unique.fmt(),
            ratio["env steps"].fmt(), ratio["wall"].fmt(),
        ])  # fmt: skip
    series = {k: [vs_chain[name][k] for name in runs] for k in figures}
    notes = [
        "engine tokens = generated + computed (uncached) prompt tokens with HFPolicy's prefix "
        "cache; unique tokens = the trees' own size, what an engine with a perfect radix "
        "cache computes (chain: every trajectory in full). Ratios are per repetition against "
        "chain G=6 in the same repetition.",
        "HFPolicy's engine shares cached prefixes as KV blocks under a radix tree (LRU "
        "eviction within its byte budget) and reports SGLang's fcfs accounting: a prefix "
        "that several requests of one admission round share counts as computed for each, so "
        "an arm's engine tokens above its unique tokens are prefixes computed again (same "
        "round, or evicted): compare the two ratio columns.",
        "tree_grpo M4 N2 L1 K3 keeps 12 trajectories per task (the reference code's M=4; its "
        "K=4 exceeds the 3 leaves a tree has and cannot run), so compare it per trajectory.",
    ]
    for gated, ungated in UNGATED.items():
        share, precision, saved = gate_figures(runs[gated], runs[ungated])
        notes.append(
            f"{gated}: gate fired on {share.fmt(2)} of groups, precision {precision.fmt(2)}, "
            f"generated tokens saved vs ungated {saved.fmt(3)} (Selective Rollout paper, G=8 "
            f"K=10 d_L=0.12: precision 0.81, 14.0% step tokens saved, ≈39% zero-variance groups)"
        )
    trace = runs["trace 2+4"]
    notes.append(
        f"trace 2+4 mixed-reward share {Spread(per_rep(trace, share_mixed)).fmt(2)} vs chain "
        f"{Spread(per_rep(base, share_mixed)).fmt(2)} (ratio "
        f"{rel(trace, base, share_mixed).fmt()}; TRACE paper: 26.8% → 60.6%)."
    )
    treepo = vs_chain["treepo seg32 w6 div2"]
    notes.append(
        f"treepo vs chain at 6 finished trajectories: generated tokens "
        f"{treepo['generated tokens'].fmt()}×, env steps {treepo['env steps'].fmt()}× "
        "(TreePO paper: up to 40% fewer trajectories, 35% fewer tokens; Tree-GRPO paper: same "
        "quality at ¼ of the budget, ≈1.5× trajectories at a fixed budget)."
    )
    tree = vs_chain["tree_grpo M2 N2 L1 K3"]
    return Section(
        slug=f"samplers_equal_trajectories_{setup.slug}",
        title=f"Samplers at equal training trajectories per task: {env}",
        intro=(
            f"{cfg['tasks']} tasks, embedded model (HFPolicy, prefix cache on, temperature 1), "
            f"≤ {cfg['max_steps'][setup.slug]} env steps per episode, {len(runs[BASELINE])} "
            "repetitions (run seed = repetition), arms in rotated order; medians with min–max "
            "over repetitions, counters summed over the tasks. Measured in "
            f"{sum(r.wall_s for rs in runs.values() for r in rs) / 60:.0f} min of arm wall "
            "time."
        ),
        header=header,
        rows=rows,
        notes=notes,
        chart=Chart("÷ chain G=6 (same repetition)", list(runs), series, reference=1.0),
        headline=(
            f"{env}: for the same 6 trajectories per task, tree_grpo M2 N2 L1 K3 generates "
            f"{tree['generated tokens'].fmt()}× the tokens of chain G=6, has the engine "
            f"compute {tree['engine tokens'].fmt()}× the tokens, takes "
            f"{tree['env steps'].fmt()}× the env steps and {tree['wall'].fmt()}× the "
            "wall time."
        ),
    )


def equal_budget(all_runs: dict[str, dict[str, list[ArmRun]]]) -> Section:
    """What 100k engine tokens buy, per sampler: training leaves and mixed-reward groups."""
    leaves = per_100k_tokens(lambda r: r.budget.leaves)
    mixed = per_100k_tokens(lambda r: sum(r.mixed.values()))
    rows = []
    series: dict[str, list[Spread]] = {}
    for env, runs in all_runs.items():
        base = runs[BASELINE]
        series[env] = [Spread(per_rep(rs, mixed)) for rs in runs.values()]
        for name, rs in runs.items():
            rows.append([
                env.split()[0], name,
                Spread([tokens(r) / max(1, r.tasks) for r in rs]).fmt(0),
                Spread(per_rep(rs, leaves)).fmt(1), rel(rs, base, leaves).fmt(),
                Spread(per_rep(rs, mixed)).fmt(2), rel(rs, base, mixed).fmt(),
            ])  # fmt: skip
    return Section(
        slug="samplers_equal_budget",
        title="Samplers at equal token budget",
        intro=(
            "What the same engine tokens (generated + computed prompt) buy: training leaves and "
            "groups with mixed rewards (the only groups GRPO learns from) per 100k tokens, from "
            "the runs of the equal-trajectory tables. A training step's budget buys "
            "budget ÷ (tokens per task) task groups from a large task pool, so these rates are "
            "the equal-budget comparison. Repetitions as in the tables above, min–max in "
            "brackets."
        ),
        header=[
            "env",
            "arm",
            "engine tok / task",
            "leaves / 100k tok",
            "÷ chain",
            "mixed groups / 100k tok",
            "÷ chain",
        ],
        rows=rows,
        notes=[
            "Tree-GRPO paper: ≈1.5× the trajectories at a fixed budget; TRACE: mixed-outcome "
            "share 26.8% → 60.6%."
        ],
        chart=Chart("mixed-reward groups per 100k engine tokens", list(arms()), series),
        headline="",
    )


def sections(size: str) -> list[Section]:
    cfg = SIZES[size]
    measured = {env: runs for env, runs in measure(size).items() if runs[BASELINE]}
    if not measured:
        raise RuntimeError(f"no sampler repetitions in {results_dir(size)} (--saved-only)")
    out = [equal_trajectories(env, measured[env.label], cfg) for env in ENVS
           if env.label in measured]  # fmt: skip
    out.append(equal_budget(measured))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", choices=sorted(SIZES), default="smoke")
    ap.add_argument(
        "--env",
        choices=[e.slug for e in ENVS],
        help="only measure this env's repetitions (to run envs in parallel)",
    )
    args = ap.parse_args()
    if args.env:
        measure(args.size, [e for e in ENVS if e.slug == args.env])
        return
    for section in sections(args.size):
        print(section.markdown(None))


if __name__ == "__main__":
    main()
