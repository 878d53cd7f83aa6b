"""Reading ALFWorld game files (``game.tw-pddl``), generated or real, with clear errors.

A game file is JSON with ``pddl_domain``, ``grammar`` (the ``.twl2`` text with the goal sentence
in its ``task`` rule), ``pddl_problem``, ``solvable`` and ``walkthrough``; ALFWorld keeps a
``traj_data.json`` beside it (``task_type``, ``pddl_params``, annotations). treegym's generator
writes the same two files, so generated tasks and ALFWorld's own data take one code path.

Where a task file is found (:func:`find_task_file`): an existing path (the file or its folder),
else a path relative to ``$ALFWORLD_DATA`` (ALFWorld's own variable, e.g.
``json_2.1.1/valid_seen/pick_and_place_simple-.../trial_.../``); generator specs
``"<task_type>:seed=N[,split=...]"`` (:func:`is_spec`) are made by the layer above,
:mod:`.alfworld_tasks`, which imports this one. Everything is checked here, before
fast-downward's C code sees it: that code copies names into fixed 1024-byte buffers, so over-long
identifiers are refused rather than allowed to overflow them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import alfworld_assets
from .errors import GameFileError

GAME_FILE = "game.tw-pddl"
TRAJ_FILE = "traj_data.json"
TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
MAX_FILE_BYTES = 64 << 20
#: Longest PDDL identifier accepted. fast-downward copies operator and atom names (an action
#: and up to six arguments) into 1024-byte buffers with strcpy.
MAX_NAME_LENGTH = 120
_NAME = re.compile(r"[^\s()]+")
_SPEC = re.compile(r"^([A-Za-z_]+):(.*)$")


@dataclass(frozen=True)
class GameFile:
    """A validated game file (the fields ALFWorld's ``PddlEnv.load`` reads, plus identity)."""

    path: Path
    domain: str
    grammar: str
    problem: str
    walkthrough: tuple[str, ...] | None
    task_type: str | None
    sha: str

    @property
    def task_id(self) -> str:
        """ALFWorld's folder naming: ``<task folder>/<trial folder>``."""
        return f"{self.path.parent.parent.name}/{self.path.parent.name}"


def read_game_file(path: str | os.PathLike[str]) -> GameFile:
    """Read and check ``path`` (a ``game.tw-pddl`` file or its folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / GAME_FILE
    if not path.is_file():
        raise GameFileError(f"ALFWorld game file not found: {path}")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise GameFileError(f"{path}: over {MAX_FILE_BYTES >> 20} MB, not an ALFWorld game")
        raw = path.read_bytes()
    except OSError as exc:
        raise GameFileError(f"cannot read ALFWorld game file {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GameFileError(f"{path}: malformed game file, not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise GameFileError(f"{path}: malformed game file, expected a JSON object")
    for key in ("pddl_domain", "grammar", "pddl_problem"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise GameFileError(f"{path}: malformed game file, {key!r} is missing or not text")
    if data.get("solvable") is False:
        raise GameFileError(
            f"{path}: the game is marked unsolvable ('solvable': false); ALFWorld skips such games"
        )
    walkthrough = data.get("walkthrough")
    if walkthrough is not None and (
        not isinstance(walkthrough, list) or not all(isinstance(c, str) for c in walkthrough)
    ):
        raise GameFileError(f"{path}: malformed game file, 'walkthrough' is not a list of commands")
    for key in ("pddl_domain", "pddl_problem"):
        _check_names(path, data[key])
    traj = _read_traj(path.parent / TRAJ_FILE)
    grammar = data["grammar"]
    if "UNKNOWN GOAL" in grammar and traj is not None:
        grammar = grammar.replace("UNKNOWN GOAL", _templated_goal(traj, data["pddl_problem"]))
    digest = hashlib.sha256(
        "\0".join((data["pddl_domain"], grammar, data["pddl_problem"])).encode()
    ).hexdigest()[:16]
    return GameFile(
        path=path,
        domain=data["pddl_domain"],
        grammar=grammar,
        problem=data["pddl_problem"],
        walkthrough=tuple(walkthrough) if walkthrough is not None else None,
        task_type=traj.get("task_type") if traj else None,
        sha=digest,
    )


def _check_names(path: Path, problem: str) -> None:
    text = re.sub(r";[^\n]*", "", problem)
    longest = max((m.group(0) for m in _NAME.finditer(text)), key=len, default="")
    if len(longest) > MAX_NAME_LENGTH:
        raise GameFileError(
            f"{path}: PDDL name of {len(longest)} characters ({longest[:40]}...); the limit is "
            f"{MAX_NAME_LENGTH} (fast-downward copies names into fixed-size buffers)"
        )


def _read_traj(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        traj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GameFileError(f"{path}: unreadable or malformed trajectory file ({exc})") from None
    return traj if isinstance(traj, dict) else None


def _templated_goal(traj: dict[str, Any], problem: str) -> str:
    """ALFWorld's ``get_templated_task_desc`` (a template of the goal library, filled in), with
    the template chosen from a hash of the problem so the same file always reads the same."""
    params = traj.get("pddl_params") or {}
    goal = str(traj.get("task_type")) + ("_slice" if params.get("object_sliced") else "")
    library = alfworld_assets.goal_library()
    if goal not in library:
        raise GameFileError(f"trajectory file names unknown task type {goal!r}")
    rng = random.Random(hashlib.sha256(problem.encode()).hexdigest())
    template = rng.choice(library[goal]["templates"])
    return template.format(
        obj=str(params.get("object_target") or "").lower(),
        recep=str(params.get("parent_target") or "").lower(),
        toggle=str(params.get("toggle_target") or "").lower(),
        mrecep=str(params.get("mrecep_target") or "").lower(),
    )


def alfworld_data() -> Path | None:
    """``$ALFWORLD_DATA`` if the user set it (ALFWorld's own data folder variable)."""
    value = os.environ.get("ALFWORLD_DATA")
    return Path(value).expanduser() if value else None


def is_spec(task: Any) -> bool:
    """Whether ``task`` reads as a generator spec (``"<task_type>:seed=N,..."``)."""
    return isinstance(task, str) and _SPEC.match(task) is not None and not Path(task).exists()


def find_task_file(task: str | os.PathLike[str]) -> Path:
    """An existing task path, as given or relative to ``$ALFWORLD_DATA`` (nothing is generated
    here: generator specs are resolved a layer up, by :func:`.alfworld_tasks.resolve_task`)."""
    path = Path(task).expanduser()
    if path.exists():
        return path
    root = alfworld_data()
    if root is not None and not path.is_absolute() and (root / path).exists():
        return root / path
    where = f" or under $ALFWORLD_DATA={root}" if root is not None else ""
    raise GameFileError(f"ALFWorld task not found: {path}{where}")
