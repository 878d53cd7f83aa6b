"""The embedded model's task mix: which tasks it was trained on, chosen on, and evaluated on.

The mix is chosen for *reward contrast*: tasks on which a sampled policy sometimes wins and
sometimes loses. Per env, :func:`embedded_task` draws a task from a seed:

* TextWorld: ``tw-cooking`` (1–2 ingredients, 1 or 6 rooms, closed or open containers),
  ``tw-coin_collector`` (levels 1–6) and ``tw-treasure_hunter`` (levels 1–10) — harder levels
  (3 ingredients, 9 rooms, treasure hunts of 15+ steps) left a 3.6M-parameter model at ≈ 10%
  success, with no contrast to learn from;
* ALFWorld: generated tasks of all six types (ALFWorld's splits: ``train`` floor plans for
  training seeds, ``eval_in_distribution`` for the others).

Seeds: :data:`TRAIN_SEEDS` make training data (RL rounds use :data:`RL_SEEDS`, a part of them
the supervised data never reaches), :data:`VALID_SEEDS` choose the checkpoint,
:data:`EVAL_SEEDS` are held out for evaluation and are what ``treegym collect --tasks
embedded`` draws (never seen in training or checkpoint choice).

TextWorld's generators cannot build every (level, seed) pair ("Current map configuration
doesn't permit quest of length …; try a different seed"): :func:`made_embedded_task` makes the
task's files and, when the generator refuses a seed, moves to the next generator seed of the
same family and parameters (``seed + 100000·k``), deterministically, so a task id always names
the same game.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

from .alfworld_files import TASK_TYPES
from .errors import GameGenerationError

TRAIN_SEEDS = range(0, 10_000)
RL_SEEDS = range(5_000, 10_000)
"""Training-distribution seeds for RL rounds (``treegym train``): the supervised data uses only
the first few hundred training seeds."""
EVAL_SEEDS = range(10_000, 20_000)
VALID_SEEDS = range(20_000, 30_000)

ENVS = {"textworld": "treegym/TextWorld-v0", "alfworld": "treegym/ALFWorld-v0"}
#: Step caps the model was trained and evaluated with (``-k max_episode_steps=...``).
MAX_EPISODE_STEPS = {"textworld": 20, "alfworld": 20}


@dataclass(frozen=True)
class EmbeddedTask:
    """One task of the mix: the env it runs in, its family and the spec ``reset`` takes."""

    env: str
    family: str
    spec: str
    seed: int

    @property
    def task_id(self) -> str:
        return f"{self.family}-{self.seed}"


def embedded_task(env: str, seed: int) -> EmbeddedTask:
    """The task of ``seed`` in the mix of ``env`` (``"textworld"`` or ``"alfworld"``)."""
    rng = random.Random(f"embedded:{env}:{seed}")
    if env == "alfworld":
        family = TASK_TYPES[seed % len(TASK_TYPES)]
        split = "train" if seed in TRAIN_SEEDS else "eval_in_distribution"
        return EmbeddedTask(env, family, f"{family}:seed={seed},split={split}", seed)
    if env != "textworld":
        raise ValueError(f"no embedded task mix for env {env!r}; choose one of {', '.join(ENVS)}")
    family = ("tw-cooking", "tw-coin_collector", "tw-treasure_hunter")[seed % 3]
    if family == "tw-cooking":
        recipe = rng.choice([1, 1, 2])
        params = (
            f"recipe={recipe},take={rng.randint(1, recipe)},go={rng.choice([1, 6])},"
            f"open={rng.choice(['true', 'false'])}"
        )
    elif family == "tw-coin_collector":
        params = f"level={rng.randint(1, 6)}"
    else:
        params = f"level={rng.randint(1, 10)}"
    return EmbeddedTask(env, family, f"{family}:{params},seed={seed}", seed)


def env_of(env_id: str) -> str | None:
    """``"textworld"``/``"alfworld"`` for a registered env id with an embedded mix, else None."""
    return next((name for name, eid in ENVS.items() if eid == env_id), None)


def made_embedded_task(env: str, seed: int, attempts: int = 20) -> tuple[EmbeddedTask, Path]:
    """:func:`embedded_task` with its game or task files made; ``(task, path)``."""
    task = embedded_task(env, seed)
    if env == "alfworld":
        from .alfworld_tasks import make_task

        return task, make_task(task.spec)
    from .textworld_games import make_game

    for k in range(attempts):
        spec = task.spec.replace(f",seed={seed}", f",seed={seed + 100_000 * k}")
        try:
            return replace(task, spec=spec), make_game(spec)
        except GameGenerationError as exc:
            if "different value for the `--seed`" not in str(exc):
                raise
    raise GameGenerationError(f"TextWorld made no game for {task.spec} in {attempts} seeds")
