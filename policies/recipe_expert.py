"""A TextWorld cooking expert that reads the recipe before it gathers, as an agent must.

TextWorld's expert plan for ``tw-cooking`` takes exactly the ingredients the recipe needs, and
never reads the cookbook; a model imitating it must guess which of the ingredients in sight the
recipe wants, and writes thoughts about a plan it cannot see. The previous embedded model did
exactly that: 0% on cooking, looping on ``prepare meal`` / ``eat meal`` before holding anything,
its thoughts "the plan says take white tuna from fridge" with no way to know that tuna.
:class:`RecipeExpert` first reads the cookbook once it is in reach (``examine cookbook``), so
the recipe's ingredient list is in the context, then follows the plan with thoughts that cite
what the context says: "the recipe needs X" before each ingredient it takes, "I have what the
recipe needs" before ``prepare meal``. Other steps (and other games' plans, which show no
recipe) keep the plan's own thought, which names the step.
"""

from __future__ import annotations

import re

from treegym.policies.scripted import plan_thought

READ = "examine cookbook"
"""The command that shows the recipe (TextWorld's cookbook; templates may hide ``examine``
from the listed commands: then the thought before it names it)."""

_TAKE = re.compile(r"^take (.+?) from .+$")
_THOUGHTS = {
    READ: "let me read the recipe",
    "prepare meal": "I have what the recipe needs",
    "eat meal": "the meal is ready",
}


class RecipeExpert:
    """One episode's recipe-reading expert over ``info["expert_plan"]`` (module docstring)."""

    def __init__(self) -> None:
        self.read = False

    def choose(self, info: dict) -> tuple[str, str]:
        """``(action, thought)`` for the state ``info`` describes (it must have a plan)."""
        plan, admissible = info["expert_plan"], info.get("admissible_commands") or ()
        if not self.read and READ in admissible:
            self.read = True
            return READ, _THOUGHTS[READ]
        step = plan[0]
        if not self.read:
            return step, plan_thought(step)
        take = _TAKE.match(step)
        if take:
            return step, f"the recipe needs {take[1]}"
        return step, _THOUGHTS.get(step, plan_thought(step))
