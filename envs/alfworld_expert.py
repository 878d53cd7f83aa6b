"""The expert plan of an ALFWorld position: fast-downward's plan on the goal-relevant sub-problem.

TextWorld's ``PddlEnv`` asks fast-downward to replan from the current state on every step
(``policy_commands``; ALFWorld's ``AlfredExpert(expert_type="planner")``). The library's search
is uniform-cost, and an ALFWorld room has dozens of receptacles to open and objects to carry:
measured on generated kitchens, that replan costs from ≈4 s to ≈60 s a step.

The plan only ever touches objects of the classes the goal names (and the class constants the
domain's actions name, such as ``SinkBasinType``), the receptacles holding them or of those
classes, and their locations — plus, if the agent holds something else, a few receptacles that
can take it (:meth:`Expert.put_down_spots`). Every other fact mentions none of these, and no
action on other entities can help reach the goal, so an optimal plan of the sub-problem
restricted to them is an optimal plan of the whole game (a test checks the lengths against the
stock replan). Translating and solving that sub-problem takes ≈20–40 ms. Plans are cached by
fast-downward state id (a plan depends only on the state), and the game file's walkthrough,
once checked to win, gives the plan of every state along it for free.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections import OrderedDict

from .alfworld_engine import Options, PddlGame, Position, translate
from .errors import GameFileError

#: Entity types of the ALFWorld domain that are instances (filtered by relevance); every other
#: declared name (agent1, the ``...Type`` class constants) is always kept.
INSTANCE_TYPES = frozenset({"object", "receptacle", "location"})
_TOKEN = re.compile(r"[^\s()]+")
PLAN_CACHE_SIZE = 100_000


def _strip_comments(text: str) -> str:
    return re.sub(r";[^\n]*", "", text)


def goal_block(problem: str) -> str:
    """The ``(:goal ...)`` s-expression of a PDDL problem."""
    text = _strip_comments(problem)
    start = text.lower().find("(:goal")
    if start < 0:
        raise GameFileError("the PDDL problem has no (:goal ...) section")
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start : i + 1]
    raise GameFileError("the PDDL problem's (:goal ...) section is not closed")


class Expert:
    """Expert plans of one game (see the module docstring)."""

    def __init__(self, game: PddlGame) -> None:
        self.game = game
        self.goal = goal_block(game.game.problem).lower()
        names = game.name2type
        domain_tokens = _TOKEN.findall(_strip_comments(game.game.domain).lower())
        goal_tokens = _TOKEN.findall(self.goal)
        #: Class constants the goal or the domain's actions name ("mugtype", "sinkbasintype").
        self.key_constants = {t for t in (*goal_tokens, *domain_tokens) if t in names}
        self._constants = {n for n, t in names.items() if t not in INSTANCE_TYPES}
        #: Plans along the walkthrough: kept for good (a replan could break ties differently).
        self._walkthrough = self._walkthrough_plans(game.game.walkthrough)
        #: Planner results, oldest dropped first: recomputing one gives the same plan.
        self._plans: OrderedDict[int, tuple[str, ...]] = OrderedDict()

    def _walkthrough_plans(self, walkthrough: tuple[str, ...] | None) -> dict[int, tuple[str, ...]]:
        """Play the file's walkthrough; if it wins, the remaining plan at each of its states."""
        position, remaining = self.game.initial, {}
        for k, command in enumerate(walkthrough or ()):
            options = self.game.options(position)
            choice = options.choices.get(command.strip())
            if choice is None or options.won:
                return {}
            remaining[position.state_id] = walkthrough[k:]
            position, _ = self.game.apply(position, choice)
        if not walkthrough or not self.game.options(position).won:
            return {}
        remaining[position.state_id] = ()
        return remaining

    def plan(self, position: Position, options: Options) -> tuple[str, ...]:
        """Commands that reach the goal from ``position`` (empty if won or unreachable)."""
        if options.won:
            return ()
        state_id = position.state_id
        cached = self._walkthrough.get(state_id)
        if cached is None:
            cached = self._plans.get(state_id)
        if cached is None:
            _, sas = translate(self.game.game.domain, self.subproblem(position), optimize=True)
            plan = self.game.solve(sas)
            cached = self._plans[state_id] = (
                self.game.commands_of_plan(plan) if plan is not None else ()
            )
            while len(self._plans) > PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        return cached

    @staticmethod
    def put_down_spots(
        args: list[tuple[str, list[str]]],
        spare_types: set[str | None],
        relevant: set[str],
        here: set[str],
    ) -> set[str]:
        """Receptacles where an optimal plan may put down a held non-goal object.

        Every move costs the same whatever the distance, so a receptacle off the plan's path
        is as good as any other of its kind: keep those at the agent's location or at a
        relevant receptacle's location, plus the first free one (not openable, or open) and the
        first closed one elsewhere. A kitchen has dozens of cabinets and drawers that take a
        cup; keeping them all makes fast-downward's uniform-cost search 30x slower.
        """
        containers = {a[0] for n, a in args if n == "cancontain" and a[1] in spare_types}
        kind = {a[0]: a[1] for n, a in args if n == "receptacletype"}
        fits = sorted(r for r, t in kind.items() if t in containers)
        at = {a[0]: a[1] for n, a in args if n == "receptacleatlocation"}
        near = here | {at.get(r) for r in relevant}
        openable = {a[0] for n, a in args if n == "openable"}
        opened = {a[0] for n, a in args if n == "opened"}
        free = [r for r in fits if r not in openable or r in opened]
        shut = [r for r in fits if r in openable and r not in opened]
        return {r for r in fits if at.get(r) in near} | set(free[:1]) | set(shut[:1])

    def subproblem(self, position: Position) -> str:
        """The PDDL problem restricted to what the goal can depend on (module docstring)."""
        facts = [
            f
            for f in position.facts.facts
            if not f.is_negation and not f.name.startswith("new-axiom@")
        ]
        args = [(f.name, [v.name for v in f.arguments]) for f in facts]
        object_type = {a[0]: a[1] for n, a in args if n == "objecttype"}
        receptacle_type = {a[0]: a[1] for n, a in args if n == "receptacletype"}
        key = self.key_constants
        objects = {o for o, t in object_type.items() if t in key}
        held = {a[1] for n, a in args if n == "holds"}
        objects |= held
        receptacles = {r for r, t in receptacle_type.items() if t in key}
        receptacles |= {a[1] for n, a in args if n == "inreceptacle" and a[0] in objects}
        here = {a[1] for n, a in args if n == "atlocation"}
        spare_types = {object_type.get(o) for o in held} - key
        if spare_types:  # something to put down first: where (see put_down_spots)
            receptacles |= self.put_down_spots(args, spare_types, receptacles, here)
        locations = set(here)
        locations |= {a[1] for n, a in args if n == "receptacleatlocation" and a[0] in receptacles}
        locations |= {a[1] for n, a in args if n == "objectatlocation" and a[0] in objects}
        keep = self._constants | objects | receptacles | locations
        kept = [(n, a) for n, a in args if all(x in keep for x in a)]
        # Declare only names in use: ~100 unused class constants cost the translator a third.
        used = self.key_constants | {x for _, a in kept for x in a}
        types = self.game.name2type
        declared = [f"{e} - {types[e]}" for e in sorted(used)]
        init = sorted(f"({n} {' '.join(a)})" for n, a in kept)
        return "\n".join(
            [
                "(define (problem treegym_expert)",
                f"(:domain {self.game.task.domain_name})",
                "(:objects",
                *declared,
                ")",
                "(:init",
                *init,
                ")",
                self.goal,
                ")",
            ]
        )


_EXPERTS: weakref.WeakKeyDictionary[PddlGame, Expert] = weakref.WeakKeyDictionary()
_EXPERTS_LOCK = threading.Lock()


def expert_for(game: PddlGame) -> Expert:
    """The (shared) expert of a loaded game."""
    with _EXPERTS_LOCK:
        expert = _EXPERTS.get(game)
        if expert is None:
            expert = _EXPERTS[game] = Expert(game)
        return expert
