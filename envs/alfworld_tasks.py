"""Generating ALFWorld-style tasks offline: the six task types on alfworld's floor plans.

ALFWorld's game files come from ALFRED (a download not reachable here). This module makes
equivalent ``game.tw-pddl`` + ``traj_data.json`` pairs from what the ``alfworld`` package ships:
a floor plan's receptacles and objects (:mod:`.alfworld_scenes`), the goal of a task type from
alfworld's goal library, its sentence from the library's templates ("put a clean mug in
coffeemachine"), and ALFWorld's own domain and grammar (:mod:`.alfworld_pddl`).

A task is kept only if fast-downward finds a plan (:mod:`.alfworld_expert`) and that plan,
replayed as commands in the full game, wins it; the plan is stored as the walkthrough. A
candidate that fails (no valid goal in the room, unsolvable) is redrawn, so generation never
returns an unsolvable task.

Splits follow ALFWorld: ``train`` and ``eval_in_distribution`` draw from ALFRED's training
floor plans (``constants.TRAIN_SCENE_NUMBERS``; different random streams, so different tasks),
``eval_out_of_distribution`` from the held-out ones (``TEST_SCENE_NUMBERS``), never used in
training. Each task's randomness is ``random.Random("<generator version>/<split>/<type>/<key>/
<attempt>")`` (string seeds are hashed with SHA-512, independent of ``PYTHONHASHSEED``), scenes
iterate in sorted order, and fast-downward's translation is deterministic, so the same seed gives
byte-identical files in any process.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import alfworld_assets
from .alfworld_engine import PddlGame
from .alfworld_expert import Expert
from .alfworld_files import GAME_FILE, TASK_TYPES, TRAJ_FILE, GameFile, find_task_file, is_spec
from .alfworld_pddl import goal_pddl, problem_pddl
from .alfworld_scenes import (
    LAMP_STANDS,
    LAMPS,
    Scene,
    agent_start,
    build_receptacles,
    can_hold,
    place_objects,
    room_type,
    scene_object_types,
)
from .errors import GameGenerationError, UnknownTaskError
from .textworld_games import cache_dir

GENERATOR_VERSION = 2
SPLITS = ("train", "eval_in_distribution", "eval_out_of_distribution")
MAX_ATTEMPTS = 40
#: Station each state-change task needs, which is then not a valid target receptacle.
STATIONS = {
    "pick_clean_then_place_in_recep": ("SinkBasin", "Cleanable"),
    "pick_heat_then_place_in_recep": ("Microwave", "Heatable"),
    "pick_cool_then_place_in_recep": ("Fridge", "Coolable"),
}


@dataclass(frozen=True)
class GeneratedTask:
    task_type: str
    split: str
    key: str
    floor_plan: int
    object_target: str
    parent_target: str  # the target receptacle, or the lamp of look_at_obj_in_light
    goal: str  # "put a clean mug in coffeemachine"
    game: dict[str, Any]  # the game.tw-pddl content
    traj: dict[str, Any]  # the traj_data.json content

    @property
    def folder(self) -> str:
        """ALFWorld's layout: ``<type>-<object>-<mrecep>-<receptacle>-<scene>/trial_<id>``."""
        trial = re.sub(r"[^A-Za-z0-9]+", "_", self.key)
        return (
            f"{self.task_type}-{self.object_target}-None-{self.parent_target}-{self.floor_plan}"
            f"/trial_{trial}"
        )


def check_task_type(task_type: str) -> str:
    if task_type not in TASK_TYPES:
        raise GameGenerationError(
            f"unknown ALFWorld task type {task_type!r}; choose one of {', '.join(TASK_TYPES)}"
        )
    return task_type


def split_floor_plans(split: str) -> tuple[int, ...]:
    """Floor plans a split draws from (train and in-distribution eval share them; OOD not)."""
    c = alfworld_assets.constants()
    if split in ("train", "eval_in_distribution"):
        numbers = c.TRAIN_SCENE_NUMBERS
    elif split == "eval_out_of_distribution":
        numbers = c.TEST_SCENE_NUMBERS
    else:
        raise GameGenerationError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    shipped = set(alfworld_assets.floor_plan_numbers())
    return tuple(sorted(n for n in numbers if n in shipped))


def _goal_candidates(task_type: str, object_types: list[str], rtypes: list[str]) -> list[tuple]:
    """(object class, receptacle or lamp class) pairs this room allows for the task type."""
    movable = [t for t in object_types if t not in LAMPS]
    if task_type == "look_at_obj_in_light":
        return [(o, lamp) for lamp in LAMPS if lamp in object_types for o in movable]
    station, group = STATIONS.get(task_type, (None, None))
    if station is not None:
        if station not in rtypes:
            return []
        allowed = alfworld_assets.constants().VAL_ACTION_OBJECTS[group]
        movable = [o for o in movable if o in allowed]
    return [
        (o, r)
        for o in movable
        for r in rtypes
        if r != station
        and can_hold(r, o)
        and any(can_hold(h, o) for h in rtypes if h != r)  # somewhere else to start from
    ]


def _draft(task_type: str, split: str, rng: random.Random) -> tuple[Scene, str, str] | None:
    """A room and a goal (object class, receptacle/lamp class), or None if the room has none."""
    valid_rooms = alfworld_assets.constants().GOALS_VALID[task_type]
    plans = [fp for fp in split_floor_plans(split) if room_type(fp) in valid_rooms]
    floor_plan = rng.choice(plans)
    receptacles, taken = build_receptacles(floor_plan, rng)
    rtypes = sorted({r.type for r in receptacles})
    object_types = [
        t
        for t in scene_object_types(floor_plan)
        if (t in LAMPS and any(r in LAMP_STANDS for r in rtypes))
        or any(can_hold(r, t) for r in rtypes)
    ]
    candidates = _goal_candidates(task_type, object_types, rtypes)
    if not candidates:
        return None
    obj, target = rng.choice(candidates)
    counts = {t: 1 + (rng.random() < 0.35) + (rng.random() < 0.15) for t in object_types}
    if task_type == "pick_two_obj_and_place":
        counts[obj] = max(2, counts[obj])
    forbidden = {} if task_type == "look_at_obj_in_light" else {obj: {target}}
    objects = place_objects(receptacles, object_types, counts, rng, forbidden)
    agent = agent_start(taken, receptacles, rng)
    scene = Scene(floor_plan, room_type(floor_plan), tuple(receptacles), tuple(objects), agent)
    return scene, obj, target


def _winning_walkthrough(game_file: GameFile) -> tuple[str, ...] | None:
    """The planner's plan if it exists and, replayed as commands, wins the full game."""
    game = PddlGame(game_file)
    position = game.initial
    options = game.options(position)
    plan = Expert(game).plan(position, options)
    if not plan:
        return None
    for command in plan:
        choice = options.choices.get(command)
        if choice is None:
            return None
        position, _ = game.apply(position, choice)
        options = game.options(position)
    return plan if options.won else None


def generate_task(task_type: str, split: str, key: str) -> GeneratedTask:
    """One solvable task of ``task_type`` in ``split``; the same ``key`` gives the same task."""
    check_task_type(task_type)
    split_floor_plans(split)  # validates the split name
    library = alfworld_assets.goal_library()[task_type]
    for attempt in range(MAX_ATTEMPTS):
        rng = random.Random(f"{GENERATOR_VERSION}/{split}/{task_type}/{key}/{attempt}")
        draft = _draft(task_type, split, rng)
        if draft is None:
            continue
        scene, obj, target = draft
        look = task_type == "look_at_obj_in_light"
        recep, toggle = (None, target) if look else (target, None)
        goal = rng.choice(library["templates"]).format(
            obj=obj.lower(), recep=(recep or "").lower(), toggle=(toggle or "").lower(), mrecep=""
        )
        name = hashlib.sha256(f"{split}/{task_type}/{key}".encode()).hexdigest()[:12]
        problem = problem_pddl(name, scene, goal_pddl(task_type, obj, recep, toggle))
        grammar = alfworld_assets.grammar_text().replace("UNKNOWN GOAL", goal)
        domain = alfworld_assets.domain_text()
        digest = hashlib.sha256("\0".join((domain, grammar, problem)).encode()).hexdigest()[:16]
        candidate = GameFile(Path(GAME_FILE), domain, grammar, problem, None, task_type, digest)
        walkthrough = _winning_walkthrough(candidate)
        if walkthrough is None:
            continue
        game = {
            "pddl_domain": domain,
            "grammar": grammar,
            "pddl_problem": problem,
            "solvable": True,
            "walkthrough": list(walkthrough),
        }
        traj = {
            "task_type": task_type,
            "pddl_params": {
                "object_target": obj,
                "parent_target": recep or "",
                "toggle_target": toggle or "",
                "mrecep_target": "",
                "object_sliced": False,
            },
            "scene": {"floor_plan": f"FloorPlan{scene.floor_plan}", "scene_num": scene.floor_plan},
            "turk_annotations": {"anns": [{"task_desc": goal}]},
            "treegym": {
                "generator_version": GENERATOR_VERSION,
                "alfworld_version": alfworld_assets.ALFWORLD_VERSION,
                "split": split,
                "key": key,
                "attempt": attempt,
            },
        }
        return GeneratedTask(task_type, split, key, scene.floor_plan, obj, target, goal, game, traj)
    raise GameGenerationError(
        f"no solvable {task_type} task for key {key!r} in split {split!r} after "
        f"{MAX_ATTEMPTS} attempts"
    )


def write_task(task: GeneratedTask, folder: Path) -> Path:
    """Write ``game.tw-pddl`` and ``traj_data.json`` into ``folder`` (made atomically)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-task-", dir=folder.parent))
    try:
        (tmp / GAME_FILE).write_text(json.dumps(task.game, indent=1))
        (tmp / TRAJ_FILE).write_text(json.dumps(task.traj, indent=1))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / GAME_FILE).is_file():  # not a lost race with another writer
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder / GAME_FILE


def generate_tasks(
    out: Path,
    n: int,
    task_types: Sequence[str] = TASK_TYPES,
    split: str = "train",
    seed: int = 0,
    progress: Callable[[int, GeneratedTask], None] | None = None,
) -> Counter[str]:
    """Write ``n`` tasks (types in turn) under ``out/<split>/``; return the count per type."""
    types = [check_task_type(t) for t in task_types]
    if not types:
        raise GameGenerationError("choose at least one task type")
    split_floor_plans(split)
    counts: Counter[str] = Counter()
    for i in range(n):
        task = generate_task(types[i % len(types)], split, f"{seed}/{i}")
        write_task(task, out / split / task.folder)
        counts[task.task_type] += 1
        if progress is not None:
            progress(i, task)
    return counts


# ---------------------------------------------------------------------------- specs
def parse_spec(spec: str) -> tuple[str, str, int]:
    """``"<task_type>:seed=N[,split=...]"`` -> (task type, split, seed)."""
    task_type, _, rest = spec.partition(":")
    check_task_type(task_type.strip())
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in ("seed", "split"):
            raise GameGenerationError(
                f"bad ALFWorld task spec {spec!r}: expected seed=N and optionally split=..., "
                f"got {item!r}"
            )
        params[key.strip()] = value.strip()
    try:
        seed = int(params.get("seed", "0"))
    except ValueError:
        raise GameGenerationError(f"bad ALFWorld task spec {spec!r}: seed must be an int") from None
    split = params.get("split", "train")
    split_floor_plans(split)
    return task_type.strip(), split, seed


def make_task(spec: str, cache: Path | None = None) -> Path:
    """Path of the game file of a spec, generated into the cache on first use."""
    task_type, split, seed = parse_spec(spec)
    canonical = f"{task_type}:seed={seed},split={split}|v{GENERATOR_VERSION}"
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    folder = (cache or cache_dir()) / "alfworld" / f"{task_type}-{split}-s{seed}-{digest}"
    if (folder / GAME_FILE).is_file():
        return folder / GAME_FILE
    return write_task(generate_task(task_type, split, f"spec/{seed}"), folder)


def resolve_task(task: Any) -> Path:
    """Path of the game file for ``task``: a generator spec is made into the cache, a path is
    looked up as :func:`.alfworld_files.find_task_file` does."""
    if is_spec(task):
        return make_task(task)
    if isinstance(task, (str, os.PathLike)):
        return find_task_file(task)
    raise UnknownTaskError(
        "an ALFWorld task is a game.tw-pddl path (or its folder) or a generator spec such as "
        f"'pick_and_place_simple:seed=0', got {task!r}"
    )
