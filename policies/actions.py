"""Action formats: how a generated turn names the command the env receives.

A format parses the text of one assistant turn (end-of-turn token removed) into
``(action, error)``; an unparseable turn is *malformed* (the env receives
:data:`MALFORMED_ACTION` and the turn records why). Formats, chosen by ``--action-format``:

* ``action`` — the ReAct line: the text after the last ``Action:``, to the end of its line.
* ``tags`` / ``tags:NAME[,NAME...]`` — the last complete ``<NAME>…</NAME>`` element. With one
  tag (default ``action``) the action is its content; with several (Search-R1's
  ``tags:search,answer``) the action is the element as written (``<search>q</search>``), so an
  env in Search-R1's style reads the tag as Search-R1 does.
* ``regex:PATTERN`` — the first group (or the group named ``action``) of the last match.
* ``choice`` — *constrained*: the engine may only sample token sequences that spell one of the
  env's admissible commands followed by the end-of-turn token (see ``constraint.py``), so the
  whole turn is the action and no finished turn is malformed; a turn cut by ``max_new_tokens``
  before its end token is malformed (an unfinished command).
* ``react-choice`` — *constrained* ReAct: one free line (the thought, any text but a line
  break), then ``Action: `` and one of the admissible commands, then the end token. The model
  thinks in its own words and cannot name a command the env would refuse (an ALFWorld
  receptacle that is not in the room); parsed as ``action``.

Each format also says, in one sentence, what the system prompt asks the model to write.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass

MALFORMED_ACTION = "[malformed action]"
FORMS = "action, tags, tags:NAME[,NAME...], regex:PATTERN, choice, react-choice"


class ActionFormatError(ValueError):
    """An ``--action-format`` that cannot be used (the message is the whole explanation)."""


class ActionFormat(abc.ABC):
    """Parses one turn's text into the env's action."""

    constrained: bool = False
    """True when the engine must constrain decoding to the admissible commands."""
    free_line_marker: str | None = None
    """Constrained formats with a free first line: the text between that line's break and the
    command (``react-choice``: ``"Action: "``); ``None``: the turn is the command."""

    @property
    @abc.abstractmethod
    def spec(self) -> str:
        """The ``--action-format`` value that makes this format (recorded in run manifests)."""

    @property
    @abc.abstractmethod
    def instruction(self) -> str:
        """What the system prompt asks the model to write."""

    @abc.abstractmethod
    def parse(self, text: str, finished: bool = True) -> tuple[str, str | None]:
        """``(action, error)`` of a turn's text; ``finished``: it ended with the end token."""


@dataclass(frozen=True)
class ActionLine(ActionFormat):
    """``Thought: … / Action: <command>`` (the embedded model's format)."""

    _pattern = re.compile(r"Action:[ \t]*([^\n]*)")

    @property
    def spec(self) -> str:
        return "action"

    @property
    def instruction(self) -> str:
        return "Answer with one line 'Thought: ...' and one line 'Action: <command>'."

    def parse(self, text: str, finished: bool = True) -> tuple[str, str | None]:
        matches = self._pattern.findall(text)
        if not matches:
            return MALFORMED_ACTION, "no 'Action:' line in the generation"
        action = matches[-1].strip()
        if not action:
            return MALFORMED_ACTION, "empty action after 'Action:'"
        return action, None


@dataclass(frozen=True)
class Tags(ActionFormat):
    """The last complete ``<tag>…</tag>`` element of the turn (see the module docstring)."""

    names: tuple[str, ...] = ("action",)

    def __post_init__(self) -> None:
        bad = [n for n in self.names if not re.fullmatch(r"[A-Za-z_][\w-]*", n)]
        if not self.names or bad:
            raise ActionFormatError(
                f"tags:NAME[,NAME...] takes tag names (letters, digits, '_', '-'), got "
                f"{','.join(self.names)!r}"
            )

    @property
    def spec(self) -> str:
        return "tags" if self.names == ("action",) else "tags:" + ",".join(self.names)

    @property
    def instruction(self) -> str:
        if len(self.names) == 1:
            return f"Answer with the command inside <{self.names[0]}>...</{self.names[0]}>."
        tags = " or ".join(f"<{n}>...</{n}>" for n in self.names)
        return f"Answer with one of {tags}."

    def parse(self, text: str, finished: bool = True) -> tuple[str, str | None]:
        alternatives = "|".join(re.escape(n) for n in self.names)
        matches = list(re.finditer(rf"<({alternatives})>(.*?)</\1>", text, re.DOTALL))
        if not matches:
            wanted = ", ".join(f"<{n}>…</{n}>" for n in self.names)
            return MALFORMED_ACTION, f"no complete {wanted} in the generation"
        last = matches[-1]
        if not last.group(2).strip():
            return MALFORMED_ACTION, f"empty <{last.group(1)}> element"
        if len(self.names) == 1:
            return last.group(2).strip(), None
        return last.group(0), None


@dataclass(frozen=True)
class Regex(ActionFormat):
    """A user's pattern: its group ``action`` (or first group) of the last match."""

    pattern: str

    def __post_init__(self) -> None:
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ActionFormatError(
                f"regex:{self.pattern} is not a regular expression: {exc}"
            ) from None
        if compiled.groups < 1:
            raise ActionFormatError(
                f"regex:{self.pattern} has no group: put the action in parentheses, e.g. "
                r"'regex:Command: (.+)'"
            )

    @property
    def spec(self) -> str:
        return f"regex:{self.pattern}"

    @property
    def instruction(self) -> str:
        return f"Write the command so that your answer matches the pattern {self.pattern}."

    def parse(self, text: str, finished: bool = True) -> tuple[str, str | None]:
        compiled = re.compile(self.pattern)
        matches = list(compiled.finditer(text))
        if not matches:
            return MALFORMED_ACTION, f"no match of {self.pattern!r} in the generation"
        group = "action" if "action" in compiled.groupindex else 1
        action = (matches[-1].group(group) or "").strip()
        if not action:
            return MALFORMED_ACTION, f"empty action in the match of {self.pattern!r}"
        return action, None


@dataclass(frozen=True)
class Choice(ActionFormat):
    """Constrained choice of one admissible command (the turn is the command)."""

    constrained = True

    @property
    def spec(self) -> str:
        return "choice"

    @property
    def instruction(self) -> str:
        return "Answer with exactly one of the admissible commands and nothing else."

    def parse(self, text: str, finished: bool = True) -> tuple[str, str | None]:
        if not finished:
            return MALFORMED_ACTION, "the generation was cut before the command ended"
        action = text.strip()
        if not action:
            return MALFORMED_ACTION, "empty command"
        return action, None


@dataclass(frozen=True)
class ReActChoice(ActionLine):
    """``Thought: …`` freely, then ``Action: <admissible command>`` constrained."""

    constrained = True
    free_line_marker = "Action: "

    @property
    def spec(self) -> str:
        return "react-choice"


def parse_action_format(spec: str) -> ActionFormat:
    """The format named by an ``--action-format`` value (see the module docstring)."""
    kind, colon, rest = spec.partition(":")
    if spec == "action":
        return ActionLine()
    if spec == "choice":
        return Choice()
    if spec == "react-choice":
        return ReActChoice()
    if kind == "tags":
        return Tags(tuple(n.strip() for n in rest.split(","))) if colon else Tags()
    if kind == "regex" and colon:
        return Regex(rest)
    raise ActionFormatError(f"unknown action format {spec!r}; use one of: {FORMS}")
