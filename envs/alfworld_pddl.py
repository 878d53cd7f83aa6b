"""Writing a scene and a goal as an ALFWorld PDDL problem (the ``pddl_problem`` of a game file).

The layout follows ALFWorld's ``initial_state.pddl`` files (made by alfworld's
``PlannedGameState.state_to_pddl``): ``agent1``, the object-type (``otype``) and receptacle-type
(``rtype``) constants of every ALFRED class, the mangled instance ids (``|`` becomes ``_bar_``,
``-`` ``_minus_``, ``+`` ``_plus_``, ``.`` ``_dot_``), then ``receptacleType``/``objectType``,
``canContain`` for every class pair ALFRED allows, the object properties (``pickupable``,
``cleanable``, ``heatable``, ``coolable``, ``toggleable``, ``sliceable``, ``isReceptacleObject``),
``openable`` receptacles, where everything is, and the goal from alfworld's goal library.
Declaring every class constant matters: the domain names ``SinkBasinType``, ``MicrowaveType``,
``FridgeType``, ``KnifeType`` and ``ButterKnifeType`` in its actions.
"""

from __future__ import annotations

import functools
import re

from . import alfworld_assets
from .alfworld_scenes import LAMPS, Scene, can_hold, static_receptacle_types

_MANGLE = {"-": "_minus_", "|": "_bar_", "+": "_plus_", ".": "_dot_", ",": "_comma_"}
_MANGLE_RE = re.compile("|".join(re.escape(k) for k in _MANGLE))


def mangle(name: str) -> str:
    """ALFRED id -> PDDL name, as alfworld's ``fix_pddl_str_chars`` does it."""
    return _MANGLE_RE.sub(lambda m: _MANGLE[m.group(0)], name)


@functools.cache
def _type_constants() -> tuple[list[str], list[str]]:
    c = alfworld_assets.constants()
    rtypes = sorted(static_receptacle_types())
    otypes = sorted(c.OBJECTS_SET - static_receptacle_types())
    return otypes, rtypes


def goal_pddl(task_type: str, obj: str, recep: str | None, toggle: str | None) -> str:
    """The ``(:goal ...)`` block of ``task_type`` from alfworld's goal library, filled in."""
    template = alfworld_assets.goal_library()[task_type]["pddl"]
    text = template.format(obj=obj, recep=recep or "", toggle=toggle or "", mrecep="")
    return text.replace("#", "-")


def problem_pddl(name: str, scene: Scene, goal: str) -> str:
    """The complete problem text (``goal`` already ends with the ``define``'s closing paren)."""
    c = alfworld_assets.constants()
    actions = c.VAL_ACTION_OBJECTS
    otypes, rtypes = _type_constants()
    objects = sorted(scene.objects, key=lambda o: o.id)
    receptacles = sorted(scene.receptacles, key=lambda r: r.id)
    locations = sorted({r.location for r in receptacles} | {scene.agent_location})
    present_otypes = sorted({o.type for o in objects})
    present_rtypes = sorted({r.type for r in receptacles})

    decl = ["agent1 - agent"]
    decl += [f"{t}Type - otype" for t in otypes]
    decl += [f"{t}Type - rtype" for t in rtypes]
    decl += [f"{mangle(o.id)} - object" for o in objects]
    decl += [f"{mangle(r.id)} - receptacle" for r in receptacles]
    decl += [f"{mangle(loc)} - location" for loc in locations]

    init = [f"(receptacleType {mangle(r.id)} {r.type}Type)" for r in receptacles]
    init += [f"(objectType {mangle(o.id)} {o.type}Type)" for o in objects]
    init += [
        f"(canContain {rt}Type {ot}Type)"
        for rt in present_rtypes
        for ot in present_otypes
        if can_hold(rt, ot)
    ]
    init += [f"(pickupable {mangle(o.id)})" for o in objects if o.type not in LAMPS]
    init += [
        f"(isReceptacleObject {mangle(o.id)})"
        for o in objects
        if o.type in c.MOVABLE_RECEPTACLES_SET
    ]
    init += [f"(openable {mangle(r.id)})" for r in receptacles if r.type in c.OPENABLE_CLASS_SET]
    init.append(f"(atLocation agent1 {mangle(scene.agent_location)})")
    for predicate, group in (
        ("cleanable", "Cleanable"),
        ("heatable", "Heatable"),
        ("coolable", "Coolable"),
        ("toggleable", "Toggleable"),
        ("sliceable", "Sliceable"),
    ):
        init += [f"({predicate} {mangle(o.id)})" for o in objects if o.type in actions[group]]
    init += [f"(inReceptacle {mangle(o.id)} {mangle(o.receptacle.id)})" for o in objects]
    init += [f"(receptacleAtLocation {mangle(r.id)} {mangle(r.location)})" for r in receptacles]
    init += [f"(objectAtLocation {mangle(o.id)} {mangle(o.receptacle.location)})" for o in objects]

    body = "\n".join(f"        {line}" for line in decl)
    facts = "\n".join(f"        {line}" for line in init)
    return (
        f"\n(define (problem plan_{name})\n    (:domain alfred)\n    (:objects\n{body}\n        )\n"
        f"\n    (:init\n{facts}\n        )\n{goal}"
    )
