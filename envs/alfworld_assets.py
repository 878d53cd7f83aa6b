"""ALFWorld's shipped files: the PDDL domain, the text grammar, floor plans, constants, goals.

Everything comes from the installed ``alfworld`` package (PyPI ``alfworld==0.4.2``, no extras):
``alfworld/data/alfred.{pddl,twl2}``, ``alfworld/gen/layouts/FloorPlan*-{objects,openable}.json``,
``alfworld/gen/constants.py`` and ``alfworld/gen/goal_library.py``. Nothing is downloaded.

Importing ``alfworld`` has a side effect: ``alfworld/info.py`` sets ``os.environ["ALFWORLD_DATA"]``
to ``~/.cache/alfworld`` when it is unset, which would make every later "is ``ALFWORLD_DATA``
set?" check answer yes. :func:`alfworld_module` imports alfworld modules with the variable put
back as it was, so ``ALFWORLD_DATA`` keeps meaning "the user pointed us at real game files".
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import GameFileError

ALFWORLD_VERSION = "0.4.2"


def alfworld_module(name: str) -> ModuleType:
    """Import ``alfworld.<name>`` without letting alfworld change ``ALFWORLD_DATA``."""
    before = os.environ.get("ALFWORLD_DATA")
    try:
        return importlib.import_module(f"alfworld.{name}")
    except ImportError as exc:
        raise GameFileError(
            f"the ALFWorld env needs the 'alfworld=={ALFWORLD_VERSION}' package "
            f"(pip install 'alfworld=={ALFWORLD_VERSION}', no extras): {exc}"
        ) from None
    finally:
        if before is None:
            os.environ.pop("ALFWORLD_DATA", None)
        else:
            os.environ["ALFWORLD_DATA"] = before


@functools.cache
def package_dir() -> Path:
    """Folder of the installed ``alfworld`` package (found without importing it)."""
    spec = importlib.util.find_spec("alfworld")
    if spec is None or not spec.submodule_search_locations:
        raise GameFileError(
            f"the ALFWorld env needs the 'alfworld=={ALFWORLD_VERSION}' package "
            f"(pip install 'alfworld=={ALFWORLD_VERSION}', no extras)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def domain_text() -> str:
    """ALFWorld's PDDL domain (``alfred.pddl``)."""
    return (package_dir() / "data" / "alfred.pddl").read_text()


@functools.cache
def grammar_text() -> str:
    """ALFWorld's text grammar (``alfred.twl2``) with its ``UNKNOWN GOAL`` placeholder."""
    return (package_dir() / "data" / "alfred.twl2").read_text()


def constants() -> Any:
    """``alfworld.gen.constants``: object classes, receptacle rules, scene splits."""
    return alfworld_module("gen.constants")


def goal_library() -> dict[str, dict[str, Any]]:
    """``alfworld.gen.goal_library.gdict``: PDDL goal and sentence templates per task type."""
    return alfworld_module("gen.goal_library").gdict


@functools.cache
def floor_plan_numbers() -> tuple[int, ...]:
    """Floor plans that ship both an object list and a receptacle list."""
    layouts = package_dir() / "gen" / "layouts"
    numbers = []
    for path in layouts.glob("FloorPlan*-objects.json"):
        number = path.name[len("FloorPlan") : -len("-objects.json")]
        if number.isdigit() and (layouts / f"FloorPlan{number}-openable.json").is_file():
            numbers.append(int(number))
    return tuple(sorted(numbers))


@functools.cache
def floor_plan(number: int) -> tuple[tuple[str, ...], dict[str, tuple[float, float, int, int]]]:
    """Object classes and receptacle instances (id -> x, z, rotation, horizon) of a floor plan."""
    layouts = package_dir() / "gen" / "layouts"
    objects = json.loads((layouts / f"FloorPlan{number}-objects.json").read_text())
    receptacles = json.loads((layouts / f"FloorPlan{number}-openable.json").read_text())
    poses = {
        rid: (float(p[0]), float(p[1]), int(p[2]), int(p[3])) for rid, p in receptacles.items()
    }
    return tuple(objects), poses
