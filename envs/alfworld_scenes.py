"""ALFWorld rooms from AI2-THOR floor plans: receptacles, their locations, placed objects.

A :class:`Scene` is one room made from a floor plan shipped with alfworld: the receptacle
instances listed in ``FloorPlan<n>-openable.json`` (ids such as ``Cabinet|+00.68|+00.50|-02.20``
and the agent pose that faces each), plus the static receptacles the floor plan's object list
names but that file leaves out (coffee machine, stove burners, toaster, towel holders...), which
get synthetic ids of the same shape. Objects are the floor plan's movable object classes, each
instantiated one to three times and put into receptacles that may hold them by ALFRED's own
rules (``constants.VAL_RECEPTACLE_OBJECTS``); lamps stand on furniture.

Every receptacle gets its own location (``loc|x|z|rotation|horizon``, in ALFRED's grid units):
TextWorld's "go to" command lists every receptacle at the destination, so two receptacles sharing
a location would make a command ("go to drawer 1, and drawer 2") that the planner's plan, which
names one receptacle, never matches.

All choices draw from the ``random.Random`` passed in and iterate in sorted order, so a scene is
a pure function of (floor plan, RNG state).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from . import alfworld_assets

LAMPS = ("DeskLamp", "FloorLamp")
#: Receptacles a lamp may stand on (the toggle target of look_at_obj_in_light).
LAMP_STANDS = (
    "ArmChair",
    "CoffeeTable",
    "CounterTop",
    "Desk",
    "DiningTable",
    "Dresser",
    "Ottoman",
    "Shelf",
    "SideTable",
    "Sofa",
    "TVStand",
)
#: Basins are children of their sink/bathtub in ALFRED ids (``Sink|...|SinkBasin``); alfworld's
#: name demangler relies on that to call them "sinkbasin".
BASIN_PARENT = {"SinkBasin": "Sink", "BathtubBasin": "Bathtub"}
#: Instances of a missing receptacle class to add (AI2-THOR kitchens have four burners).
MISSING_COUNT = {"StoveBurner": 4}
GRID = 0.25  # metres per ALFRED grid step
Loc = tuple[int, int, int, int]  # x, z (grid steps), rotation (quarter turns), camera horizon


@dataclass(frozen=True)
class Receptacle:
    id: str  # ALFRED object id, e.g. "Cabinet|+00.68|+00.50|-02.20"
    type: str
    location: str  # "loc|x|z|rotation|horizon"


@dataclass(frozen=True)
class PlacedObject:
    id: str
    type: str
    receptacle: Receptacle


@dataclass(frozen=True)
class Scene:
    floor_plan: int
    room_type: str
    receptacles: tuple[Receptacle, ...]
    objects: tuple[PlacedObject, ...]
    agent_location: str


@functools.cache
def static_receptacle_types() -> frozenset[str]:
    c = alfworld_assets.constants()
    return frozenset(c.RECEPTACLES - c.MOVABLE_RECEPTACLES_SET)


@functools.cache
def placeable_types() -> frozenset[str]:
    """Object classes some receptacle may hold (``*Sliced`` left out: no slicing tasks here)."""
    c = alfworld_assets.constants()
    held = set().union(*c.VAL_RECEPTACLE_OBJECTS.values())
    return frozenset(t for t in held if not t.endswith("Sliced") and t in c.OBJECTS_SET)


def can_hold(receptacle_type: str, object_type: str) -> bool:
    rules = alfworld_assets.constants().VAL_RECEPTACLE_OBJECTS
    return object_type in rules.get(receptacle_type, ())


def room_type(floor_plan: int) -> str:
    for name, numbers in alfworld_assets.constants().SCENE_TYPE.items():
        if floor_plan in numbers:
            return name
    raise ValueError(f"FloorPlan{floor_plan} is in none of ALFRED's room types")


def receptacle_type_of(receptacle_id: str) -> str:
    parts = receptacle_id.split("|")
    return parts[-1] if parts[-1] in BASIN_PARENT else parts[0]


def _coords(object_id: str) -> tuple[float, float, float]:
    parts = object_id.split("|")
    return float(parts[1]), float(parts[2]), float(parts[3])


def _make_id(object_type: str, xyz: tuple[float, float, float]) -> str:
    base = BASIN_PARENT.get(object_type, object_type)
    text = "|".join([base, *(f"{v:+06.2f}" for v in xyz)])
    return f"{text}|{object_type}" if object_type in BASIN_PARENT else text


def _location(x: float, z: float, rotation: int, horizon: int) -> Loc:
    return round(x / GRID), round(z / GRID), (rotation // 90) % 4, horizon


def _unique(loc: Loc, taken: set[Loc]) -> Loc:
    x, z, r, h = loc
    while (x, z, r, h) in taken:
        h += 15  # another camera horizon at the same spot: a distinct location
    taken.add((x, z, r, h))
    return x, z, r, h


def _fmt_loc(loc: Loc) -> str:
    return "loc|" + "|".join(str(v) for v in loc)


def build_receptacles(floor_plan: int, rng: random.Random) -> tuple[list[Receptacle], set[Loc]]:
    """The floor plan's receptacles, each with its own location; also the taken locations."""
    object_classes, poses = alfworld_assets.floor_plan(floor_plan)
    statics = static_receptacle_types()
    taken: set[Loc] = set()
    receptacles: list[Receptacle] = []
    for rid in sorted(poses):
        rtype = receptacle_type_of(rid)
        if rtype not in statics:
            continue
        loc = _unique(_location(*poses[rid]), taken)
        receptacles.append(Receptacle(rid, rtype, _fmt_loc(loc)))
    present = {r.type for r in receptacles}
    xs = [p[0] for p in poses.values()] or [0.0]
    zs = [p[1] for p in poses.values()] or [0.0]
    for rtype in sorted(set(object_classes) & statics - present):
        for _ in range(MISSING_COUNT.get(rtype, 1)):
            x, z = rng.uniform(min(xs), max(xs)), rng.uniform(min(zs), max(zs))
            rid = _make_id(rtype, (x, rng.uniform(0.2, 1.2), z))
            loc = _unique(_location(x, z, rng.choice((0, 90, 180, 270)), 30), taken)
            receptacles.append(Receptacle(rid, rtype, _fmt_loc(loc)))
    return receptacles, taken


def place_objects(
    receptacles: list[Receptacle],
    object_types: list[str],
    counts: dict[str, int],
    rng: random.Random,
    forbidden: dict[str, set[str]],
) -> list[PlacedObject]:
    """Instantiate ``counts[t]`` objects of each type into receptacles allowed to hold them.

    ``forbidden[t]`` names receptacle types an object of type ``t`` must not start in (the
    task's target receptacle, so no goal holds at the start).
    """
    used_ids: set[str] = set()
    placed: list[PlacedObject] = []
    for otype in object_types:
        if otype in LAMPS:
            hosts = [r for r in receptacles if r.type in LAMP_STANDS]
        else:
            hosts = [
                r
                for r in receptacles
                if can_hold(r.type, otype) and r.type not in forbidden.get(otype, ())
            ]
        if not hosts:
            continue
        for _ in range(counts.get(otype, 1)):
            host = rng.choice(hosts)
            hx, hy, hz = _coords(host.id)
            while True:
                xyz = (
                    hx + rng.uniform(-0.3, 0.3),
                    hy + rng.uniform(0.0, 0.2),
                    hz + rng.uniform(-0.3, 0.3),
                )
                oid = _make_id(otype, xyz)
                if oid not in used_ids:
                    break
            used_ids.add(oid)
            placed.append(PlacedObject(oid, otype, host))
    return placed


def agent_start(taken: set[Loc], receptacles: list[Receptacle], rng: random.Random) -> str:
    """A location facing no receptacle ("You are in the middle of a room...")."""
    xs = [int(r.location.split("|")[1]) for r in receptacles]
    zs = [int(r.location.split("|")[2]) for r in receptacles]
    while True:
        loc = (rng.randint(min(xs), max(xs)), rng.randint(min(zs), max(zs)), rng.randrange(4), 30)
        if loc not in taken:
            taken.add(loc)
            return _fmt_loc(loc)


def scene_object_types(floor_plan: int) -> list[str]:
    """Movable object classes of a floor plan that some receptacle here could hold, and lamps."""
    object_classes, _ = alfworld_assets.floor_plan(floor_plan)
    keep = placeable_types() - static_receptacle_types()
    return sorted(t for t in set(object_classes) if t in keep or t in LAMPS)
