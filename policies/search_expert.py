"""An ALFWorld expert that searches, as an agent that cannot see inside receptacles must.

ALFWorld's expert plan walks straight to the receptacle that hides the object it needs; the
observations never say where that is, so a model imitating the plan learns to *guess* a place
and to write thoughts about a plan it cannot know (the previous embedded model did: 0% on
ALFWorld, thoughts such as "the plan says take apple 1 from countertop 3" on a mug task).
:class:`SearchExpert` follows the plan only where the plan uses what the agent could know:
the goal, the room's receptacle list, and what it has seen. When the plan would go to an unseen
receptacle to take or use something there, it searches instead: it goes to a random unseen
receptacle that may hold the thing (ALFRED's placement rules, ``can_hold``: what a person
knows about where mugs are kept), opens it when closed, and takes the thing (or uses the
lamp) once it is in sight. Search order is random, so whether an episode finishes within the
step cap is a matter of luck: exactly the reward contrast GRPO needs, in data a model can
imitate from what its context shows. Thoughts say only the goal and what the agent knows.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence

from treegym.envs.alfworld_scenes import LAMP_STANDS, LAMPS, can_hold, placeable_types

_TAKE = re.compile(r"^take (\S+) \d+ from (.+)$")
_USE = re.compile(r"^use (\S+) \d+$")
_PUT = re.compile(r"^move (\S+) \d+ to (.+)$")


@functools.cache
def _type_names() -> dict[str, str]:
    """Lower-case ALFWorld text names (``countertop``) to ALFRED types (``CounterTop``)."""
    from treegym.envs.alfworld_assets import constants

    return {t.lower(): t for t in (*constants().RECEPTACLES, *placeable_types(), *LAMPS)}


def need(thing: str, destination: str | None = None) -> str:
    """The thought of every step that looks for ``thing`` or picks it up: the same words
    whether or not it is in sight, so the *action* decides, next to the admissible commands
    that show it (a small model's thought committed to "keep searching" before its action
    could see the object; measured: it walked past the object it was looking for). It names
    the goal's destination too, so that the model copies it from the turn before rather than
    from the goal line far back (measured: it carried the object to the wrong receptacle)."""
    return f"I need a {thing} for {destination}" if destination else f"I need a {thing}"


def _kind(name: str) -> str:
    """``"cabinet 3"`` -> ``"cabinet"``."""
    return name.rsplit(" ", 1)[0]


class SearchExpert:
    """One episode's searching expert over ``info["expert_plan"]`` (module docstring).

    Call :meth:`choose` before each step and :meth:`observe` after it.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.types = _type_names()
        self.seen: set[str] = set()
        self.here: str | None = None
        self.holding: str | None = None
        self.destination: str | None = None

    def choose(self, obs: str, info: dict) -> tuple[str, str]:
        """``(action, thought)`` for the next step."""
        plan: Sequence[str] = info.get("expert_plan") or []
        admissible: Sequence[str] = info.get("admissible_commands") or []
        if self.destination is None:
            self.destination = next((m[2] for s in plan if (m := _PUT.match(s))), None)
        wanted = self._wanted(plan)
        if wanted is None:
            step = plan[0] if plan else self.rng.choice(list(admissible))
            return step, self._thought(step)
        found = self._in_sight(wanted, admissible)
        if found is not None:
            return found, need(wanted, self.destination)
        if self.here is not None and f"open {self.here}" in admissible and "closed" in obs:
            return f"open {self.here}", need(wanted, self.destination)
        places = self._places(wanted, admissible)
        if not places:
            return plan[0], self._thought(plan[0])
        return f"go to {self.rng.choice(places)}", need(wanted, self.destination)

    def observe(self, action: str, obs: str) -> None:
        """Update what the agent has seen and holds after ``action`` gave ``obs``."""
        if action.startswith("go to ") and obs.startswith("You arrive at"):
            self.here = action[len("go to ") :]
            if "is closed" not in obs:
                self.seen.add(self.here)
        elif action.startswith("open ") and obs.startswith("You open"):
            self.seen.add(action[len("open ") :])
        elif (m := _TAKE.match(action)) and obs.startswith("You pick up"):
            self.holding = m[1]
        elif action.startswith("move ") and obs.startswith("You move"):
            self.holding = None

    def _wanted(self, plan: Sequence[str]) -> str | None:
        """The object or lamp type the plan goes to an *unseen* receptacle for, else None."""
        if not plan or not plan[0].startswith("go to "):
            return None
        target = plan[0][len("go to ") :]
        rest = [s for s in plan[1:3] if not s.startswith("open ")]
        if target in self.seen or not rest:
            return None
        m = _TAKE.match(rest[0]) or _USE.match(rest[0])
        return m[1] if m else None

    def _in_sight(self, wanted: str, admissible: Sequence[str]) -> str | None:
        """A command that takes (or switches on) ``wanted`` here, if there is one."""
        for cmd in admissible:
            m = _TAKE.match(cmd)
            if m and m[1] == wanted and self.holding is None and m[2] != self.destination:
                return cmd
            m = _USE.match(cmd)
            if m and m[1] == wanted:
                return cmd
        return None

    def _places(self, wanted: str, admissible: Sequence[str]) -> list[str]:
        """Unseen receptacles here that may hold ``wanted`` by ALFRED's rules."""
        skip = {*self.seen, self.here, self.destination}
        places = [c[len("go to ") :] for c in admissible if c.startswith("go to ")]
        return [p for p in places if p not in skip and self._may_hold(p, wanted)]

    def _may_hold(self, place: str, wanted: str) -> bool:
        otype, rtype = self.types.get(wanted), self.types.get(_kind(place))
        if otype is None or rtype is None:
            return True
        if otype in LAMPS:
            return rtype in LAMP_STANDS
        return can_hold(rtype, otype)

    def _thought(self, step: str) -> str:
        """A thought for a plan step the agent can justify from what it knows."""
        if m := _PUT.match(step):
            return f"put the {m[1]} in {m[2]}"
        if m := _TAKE.match(step) or _USE.match(step):
            return need(m[1], self.destination)
        if step.startswith("go to ") and self.holding:
            return f"bring the {self.holding} to {step[len('go to ') :]}"
        verb = step.split(" ", 1)[0]
        if verb in {"heat", "cool", "clean"} and self.holding:
            return f"{verb} the {self.holding}"
        return f"next, {step}"
