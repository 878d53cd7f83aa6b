"""Evaluate a policy on tasks: G independent episodes per task, per-task win rates, contrast.

GRPO learns only from groups whose rewards differ, so the figure that matters for a policy
that generates training data is not only its success rate but how many tasks give *mixed*
outcomes. :func:`evaluate` plays ``episodes`` chain rollouts per task through the ordinary
:class:`~treegym.harness.runner.Runner` (env workers, the engine's batching and prefix cache)
and reports per task: wins out of episodes, malformed turns, tokens. Used by the embedded
model's training (checkpoint choice) and evaluation scripts and by ``treegym train``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from treegym.policies.protocol import Policy, SamplingParams
from treegym.policies.template import Template

from .executor import EnvExecutor
from .runner import Runner, Task, TaskResult
from .samplers import ChainSampler


@dataclass
class TaskOutcome:
    """What ``episodes`` rollouts of one task gave."""

    task_id: str
    family: str
    episodes: int
    wins: int
    turns: int
    malformed_turns: int
    generated_tokens: int
    error: str | None = None

    @property
    def win_rate(self) -> float:
        return self.wins / self.episodes if self.episodes else 0.0

    @property
    def mixed(self) -> bool:
        """Some episodes won and some lost: a GRPO group of them has a non-zero advantage."""
        return 0 < self.wins < self.episodes


@dataclass
class EvalReport:
    """Per-task outcomes and their summary."""

    outcomes: list[TaskOutcome] = field(default_factory=list)

    def summary(self, outcomes: Sequence[TaskOutcome] | None = None) -> dict[str, Any]:
        done = [o for o in (self.outcomes if outcomes is None else outcomes) if o.episodes]
        episodes = sum(o.episodes for o in done)
        turns = sum(o.turns for o in done)
        rates = sorted(o.win_rate for o in done)
        cut = (0, 0.25, 0.5, 0.75, 1)
        quartiles = [rates[int(q * (len(rates) - 1))] for q in cut] if rates else []
        return {
            "tasks": len(done),
            "episodes": episodes,
            "success_rate": round(sum(o.wins for o in done) / max(1, episodes), 4),
            "mixed_task_share": round(sum(o.mixed for o in done) / max(1, len(done)), 4),
            "malformed_turn_rate": round(sum(o.malformed_turns for o in done) / max(1, turns), 4),
            "mean_turns": round(turns / max(1, episodes), 2),
            "win_rate_quartiles": [round(r, 3) for r in quartiles],
            "failed_tasks": sum(o.error is not None for o in self.outcomes),
        }

    def by_family(self) -> dict[str, dict[str, Any]]:
        families = sorted({o.family for o in self.outcomes})
        return {f: self.summary([o for o in self.outcomes if o.family == f]) for f in families}

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "by_family": self.by_family(),
            "tasks": [asdict(o) for o in self.outcomes],
        }


def outcome_of(result: TaskResult, family: str) -> TaskOutcome:
    """Wins, turns and malformed turns of a chain task result (every tree is one episode)."""
    leaves = [leaf for t in result.trees for leaf in t.leaves()]
    turns = [n for t in result.trees for n in t.nodes if n.parent is not None and not n.partial]
    return TaskOutcome(
        task_id=result.task.task_id,
        family=family,
        episodes=len(result.trees),
        wins=sum(bool(n.info.get("won")) for n in leaves),
        turns=len(turns),
        malformed_turns=sum(n.parse_error is not None for n in turns),
        generated_tokens=sum(len(n.generated_ids) for n in turns),
        error=result.error,
    )


async def evaluate(
    policy: Policy,
    template: Template,
    executor: EnvExecutor,
    tasks: Sequence[tuple[Task, str]],
    *,
    episodes: int = 8,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    context_length: int = 2048,
    concurrency: int = 8,
    seed: int = 0,
    progress: Callable[[TaskOutcome], None] | None = None,
) -> EvalReport:
    """Play ``episodes`` episodes of every ``(task, family)`` at ``temperature``."""
    runner = Runner(
        policy=policy,
        template=template,
        executor=executor,
        sampler=ChainSampler(group_size=episodes),
        sampling=SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature),
        context_length=context_length,
        concurrency=concurrency,
        seed=seed,
    )
    family = {task.task_id: fam for task, fam in tasks}
    report = EvalReport()
    async for result in runner.run([task for task, _ in tasks]):
        outcome = outcome_of(result, family[result.task.task_id])
        report.outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    report.outcomes.sort(key=lambda o: o.task_id)
    return report


async def evaluate_mix(
    policy: Policy,
    template: Template,
    env: str,
    seeds: Sequence[int],
    *,
    episodes: int = 8,
    temperature: float = 1.0,
    workers: int = 2,
    concurrency: int = 8,
    seed: int = 0,
    progress: Callable[[TaskOutcome], None] | None = None,
) -> EvalReport:
    """:func:`evaluate` on the embedded mix's tasks of ``env`` (``textworld``/``alfworld``) for
    ``seeds``, in ``workers`` env processes, at the mix's step cap (no expert plans: the
    policy never sees them and TextWorld's plan search would dominate the wall time)."""
    from treegym.envs.embedded_mix import ENVS, MAX_EPISODE_STEPS, made_embedded_task

    from .executor import ProcessExecutor

    made = [made_embedded_task(env, s) for s in seeds]
    tasks = [(Task(t.task_id, {"task": str(path)}, t.seed), t.family) for t, path in made]
    kwargs = {"max_episode_steps": MAX_EPISODE_STEPS[env], "expert_plan": False}
    executor = ProcessExecutor(ENVS[env], kwargs, n_workers=workers)
    try:
        return await evaluate(policy, template, executor, tasks, episodes=episodes,
                              temperature=temperature, concurrency=concurrency, seed=seed,
                              progress=progress)  # fmt: skip
    finally:
        await executor.close()
