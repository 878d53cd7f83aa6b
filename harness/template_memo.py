"""The runner's memo of template calls: each distinct observation and turn is tokenized once.

A template's ``prompt_ids`` and ``observation_ids`` are pure functions of the observation
text and the admissible commands (the ReAct template tokenizes the piece on its own; the chat
template checks that its deltas do not depend on the history), and ``read`` is a pure function
of the generated ids. Sibling branches of a tree, the trees of a task and tasks of one game meet
the same observations and the same turns again and again (a scripted policy writes a handful of
distinct turns), and a tokenizer call costs tens of microseconds, which at collection speed is
most of the driver's time per env step. So the runner asks this memo, which asks the template
once per distinct value (bounded LRU; results are immutable tuples, shared safely).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

from treegym.policies.protocol import GenerateResult
from treegym.policies.template import Generation, Template

MEMO_SIZE = 8192
"""Distinct values remembered per kind (observations, prompts, turns)."""


class TemplateMemo:
    """Memoised ``prompt_ids``/``observation_ids``/``read`` of one template."""

    def __init__(self, template: Template, size: int = MEMO_SIZE) -> None:
        self.template = template
        self.end_id = template.end_id
        """The template's end-of-turn token (read once: a tokenizer lookup per call is slow)."""
        self._prompt = functools.lru_cache(size)(self._prompt_ids)
        self._observation = functools.lru_cache(size)(self._observation_ids)
        self._read = functools.lru_cache(size)(self._read_ids)

    def prompt_ids(self, observation: str, admissible: Sequence[str] | None) -> tuple[int, ...]:
        return self._prompt(observation, None if admissible is None else tuple(admissible))

    def observation_ids(
        self, observation: str, admissible: Sequence[str] | None
    ) -> tuple[int, ...]:
        return self._observation(observation, None if admissible is None else tuple(admissible))

    def read(self, result: GenerateResult) -> Generation:
        """The template's reading of ``result`` (text, action, closing ids); only the ids
        matter, so a turn seen before is not decoded again."""
        return dataclasses.replace(self._read(tuple(result.output_ids)), result=result)

    def _prompt_ids(self, observation: str, admissible: tuple[str, ...] | None) -> tuple[int, ...]:
        return tuple(self.template.prompt_ids(observation, admissible))

    def _observation_ids(
        self, observation: str, admissible: tuple[str, ...] | None
    ) -> tuple[int, ...]:
        return tuple(self.template.observation_ids(observation, admissible))

    def _read_ids(self, ids: tuple[int, ...]) -> Generation:
        return self.template.read(GenerateResult(ids, (0.0,) * len(ids), "", 0, 0, 0.0))
