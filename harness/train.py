"""``treegym train``: rounds of collect → clipped policy-gradient update → new weights → collect.

Round ``r`` (0-based):

1. collects ``round_tasks(r)`` with the current weights (policy version ``r``) into
   ``OUT/round-<r>/`` — any sampler, gate and env; the runner's seed is ``seed + r``;
2. updates the trainer's model on that run folder's ``samples.parquet`` through the public
   loader (:class:`~treegym.harness.trainer.Trainer`);
3. saves ``OUT/checkpoints/round-<r>/`` and gives it to the engine (``policy.load_weights``:
   in-process ``HFPolicy``, or ``POST /update_weights_from_disk`` on ``treegym serve`` / SGLang,
   or vLLM's own routes), which serves it as version ``r + 1``;
4. every ``eval_every`` rounds (and after the last) evaluates the new weights on held-out
   tasks, greedy and at T=1;
5. appends a row to ``OUT/metrics.parquet``: cumulative generated and engine tokens and env
   steps, train success, reward and mixed-group share, loss, clip fraction, KL, grad norm,
   the logprob-alignment check, eval success. A row ``round = -1`` holds the initial eval.

``resume``: finished rounds (a metrics row and a checkpoint) are kept; training continues after
the last one with the same seeds, so a killed run ends with the same learning metrics as an
uninterrupted one (a round killed mid-collection resumes its run folder; mid-update, it redoes
the update from the same data). A checkpoint the engine refuses fails the round with one line
and the previous weights keep serving; a NaN loss stops the round before anything is saved.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from treegym.policies.protocol import Policy, PolicyError

from .collect import collect
from .loaders import load_run
from .runner import Runner, Task
from .trainer import Trainer, TrainError, UpdateConfig

METRICS = "metrics.parquet"


@dataclass
class TrainPlan:
    """Everything one training run needs, built by the caller (the CLI wires a config)."""

    out: Path
    rounds: int
    initial_model: Path
    policy: Policy
    """Serves rollouts; must have ``load_weights(path, version)``."""
    make_runner: Callable[[int], Runner]
    """A fresh runner (and env executor) for round ``r``, seeded ``seed + r``."""
    round_tasks: Callable[[int], Sequence[Task]]
    update: UpdateConfig = field(default_factory=UpdateConfig)
    evaluate: Callable[[], Awaitable[dict[str, float]]] | None = None
    """Held-out evaluation of the policy's current weights (``{"eval_greedy_success": …}``)."""
    eval_every: int = 1
    engine_token_budget: int | None = None
    """Stop after the round whose cumulative engine tokens reach this (arms of a comparison
    get the same compute, whatever their tokens per round); ``rounds`` stays the cap."""
    config: dict[str, Any] = field(default_factory=dict)
    """What the run was asked for (stored in ``OUT/train.json``; resume refuses another)."""
    progress: Callable[[str], None] = print


async def train(plan: TrainPlan, *, resume: bool = False) -> list[dict[str, Any]]:
    """Run the rounds; return the metrics rows (also in ``OUT/metrics.parquet``)."""
    if plan.rounds < 1:
        raise TrainError(f"rounds must be >= 1, got {plan.rounds}")
    if not hasattr(plan.policy, "load_weights"):
        raise TrainError(f"{type(plan.policy).__name__} cannot take new weights (load_weights)")
    rows = _start(plan, resume)
    trainer = Trainer(plan.initial_model, plan.update)
    done = [r["round"] for r in rows if r["round"] >= 0]
    if done:
        last = _checkpoint(plan.out, done[-1])
        trainer.load(last)
        await _give(plan.policy, last, str(done[-1] + 1))
    if not any(r["round"] == -1 for r in rows) and plan.evaluate is not None:
        rows.insert(0, {"round": -1, "policy_version": "0", **_zero_totals(),
                        **await plan.evaluate()})  # fmt: skip
        _write_metrics(plan.out, rows)
    for r in range(len(done), plan.rounds):
        if _spent(plan, rows):
            break
        rows.append(await _round(plan, trainer, r, rows))
        _write_metrics(plan.out, rows)
        plan.progress(_line(rows[-1]))
    return rows


def _spent(plan: TrainPlan, rows: list[dict[str, Any]]) -> bool:
    budget = plan.engine_token_budget
    return budget is not None and bool(rows) and rows[-1].get("cum_engine_tokens", 0) >= budget


async def _round(plan: TrainPlan, trainer: Trainer, r: int, rows: list[dict]) -> dict:
    t0 = time.perf_counter()
    run_dir = plan.out / f"round-{r:03d}"
    runner = plan.make_runner(r)
    await collect(runner, list(plan.round_tasks(r)), run_dir, resume=run_dir.exists(),
                  close_policy=False, extra_manifest={"train_round": r})  # fmt: skip
    collected = _collection_stats(run_dir)
    t1 = time.perf_counter()
    stats = trainer.update(run_dir, r)
    ckpt = trainer.save(_checkpoint(plan.out, r))
    await _give(plan.policy, ckpt, str(r + 1))
    row: dict[str, Any] = {"round": r, "policy_version": str(r), **collected, **asdict(stats),
                           "collect_s": round(t1 - t0, 2),
                           "update_s": round(time.perf_counter() - t1, 2)}  # fmt: skip
    prev = rows[-1] if rows else _zero_totals()
    for key in ("generated_tokens", "engine_tokens", "env_steps"):
        row[f"cum_{key}"] = prev.get(f"cum_{key}", 0) + row[key]
    last = r + 1 == plan.rounds or _spent(plan, [row])
    due = (r + 1) % plan.eval_every == 0 or last
    if due and plan.evaluate is not None:
        row.update(await plan.evaluate())
    return row


def _collection_stats(run_dir: Path) -> dict[str, Any]:
    """Train-side numbers of a round from its run folder (so a resumed round counts the same)."""
    run = load_run(run_dir)
    budget = run.budget
    nodes = run.nodes
    kept = nodes[nodes["training"]]
    won = [bool(json.loads(info).get("won")) for info in kept["info"]]
    return {
        "tasks": len(run.task_ids),
        "train_success": round(sum(won) / len(won), 4) if won else 0.0,
        "train_reward": round(float(run.samples["reward"].mean()), 4) if len(kept) else 0.0,
        "mixed_group_share": round(1 - budget.zero_variance_groups / budget.groups, 4)
        if budget.groups
        else 0.0,
        "generated_tokens": budget.generated_tokens,
        "engine_tokens": budget.generated_tokens + budget.computed_prompt_tokens,
        "env_steps": budget.env_steps,
    }


async def _give(policy: Any, checkpoint: Path, version: str) -> None:
    try:
        await policy.load_weights(checkpoint, version)
    except PolicyError as exc:
        raise TrainError(f"the engine refused {checkpoint}: {exc}") from None


def _checkpoint(out: Path, r: int) -> Path:
    return out / "checkpoints" / f"round-{r:03d}"


def _zero_totals() -> dict[str, int]:
    return {"cum_generated_tokens": 0, "cum_engine_tokens": 0, "cum_env_steps": 0}


def _start(plan: TrainPlan, resume: bool) -> list[dict[str, Any]]:
    """The metrics rows already finished (resume), after checking the folder and config."""
    spec = plan.out / "train.json"
    if plan.out.exists() and any(plan.out.iterdir()):
        if not resume:
            raise TrainError(f"{plan.out} is not empty: pass --resume to continue it")
        if not spec.is_file():
            raise TrainError(f"{plan.out} is not a treegym train folder (no train.json)")
        before = json.loads(spec.read_text())
        if before != _jsonable(plan.config):
            raise TrainError(f"{plan.out} was started with another configuration; use a new --out")
    plan.out.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(_jsonable(plan.config), indent=2, sort_keys=True) + "\n")
    rows = _read_metrics(plan.out)
    kept = []  # a round counts as finished with its metrics row *and* its checkpoint
    for row in rows:
        if row["round"] >= 0 and not _checkpoint(plan.out, row["round"]).is_dir():
            break
        kept.append(row)
    return kept


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def _read_metrics(out: Path) -> list[dict[str, Any]]:
    path = out / METRICS
    if not path.is_file():
        return []
    import pandas as pd

    frame = pd.read_parquet(path)
    return [{k: v for k, v in row.items() if v == v} for row in frame.to_dict("records")]


def _write_metrics(out: Path, rows: list[dict[str, Any]]) -> None:
    """``metrics.parquet`` replaced atomically (a kill leaves the old or the new file)."""
    import pandas as pd

    tmp = out / (METRICS + ".tmp")
    pd.DataFrame(rows).to_parquet(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out / METRICS)


def _line(row: dict[str, Any]) -> str:
    evals = "".join(f" · {k} {row[k]:.3f}" for k in row if k.startswith("eval_"))
    return (f"round {row['round']} · success {row['train_success']:.3f} · mixed groups "
            f"{row['mixed_group_share']:.2f} · loss {row['loss']:+.4f} · clip "
            f"{row['clip_fraction']:.3f} · kl {row['kl']:.4f} · engine tokens "
            f"{row['cum_engine_tokens']:,}{evals}")  # fmt: skip
