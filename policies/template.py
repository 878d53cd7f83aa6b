"""What the harness needs of a template: token ids of each transcript piece, and reading turns.

Two templates implement it: ``react`` (:class:`~treegym.policies.react.ReActTemplate`,
treegym's own role tokens, for the embedded model) and ``chat``
(:class:`~treegym.policies.chat.ChatTemplate`, the model's own chat template). Either way a
transcript is exact token ids, never re-encoded text:

    prompt_ids(first observation)                                  (mask 0)
    + generated ids, up to the end-of-turn token                   (mask 1)
    + closing ids: the end token if the generation was cut, then   (mask 0)
      whatever the template writes after an assistant turn's end
    + observation_ids(next observation)                            (mask 0)
    + …

The action format (``actions.py``) reads each turn; a constrained format makes
:meth:`Template.constraint` give the engine the only continuations it may sample.
"""

from __future__ import annotations

import abc
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .actions import ActionFormat
from .protocol import ChoiceConstraint, GenerateResult

_BANNER_LINE = re.compile(r"^[\s$|\\/_>]*$")
_STATUS_LINE = re.compile(r"^\s*>\s{8,}\S")  # the prompt '>' then the status bar


def tidy_observation(text: str) -> str:
    """Drop ASCII-art banner lines, the interpreter's prompt and status bar, and blank runs.

    TextWorld's intro is ~1 KB of ``$$$`` art: paying for it in every trajectory's context buys
    nothing. The game's words are kept as they are.
    """
    lines = [ln.rstrip() for ln in text.replace("\r", "").split("\n")]
    kept = [
        ln
        for ln in lines
        if not ((_BANNER_LINE.match(ln) and ln.strip()) or _STATUS_LINE.match(ln))
    ]
    body = "\n".join(kept).strip()
    body = re.sub(r"\s*>\s*$", "", body)
    return re.sub(r"\n{3,}", "\n\n", body).strip()


class TemplateError(ValueError):
    """A template that cannot be used with this tokenizer or env (one-line explanation)."""


@dataclass(frozen=True)
class Generation:
    """A generation read by the template: its text, the parsed action, the closing ids."""

    result: GenerateResult
    text: str
    action: str
    parse_error: str | None
    closing_ids: tuple[int, ...]


class Template(abc.ABC):
    """Renders observations to ids, reads generations, and builds choice constraints.

    Implementations provide ``tokenizer``, ``action_format``, ``system_prompt``,
    ``show_admissible`` and ``tidy`` attributes (run manifests record the last three).
    """

    tokenizer: Any
    action_format: ActionFormat
    system_prompt: str
    show_admissible: bool
    tidy: bool

    @property
    @abc.abstractmethod
    def end_id(self) -> int:
        """The end-of-turn token: the stop token of every turn."""

    @property
    @abc.abstractmethod
    def closing_tail(self) -> tuple[int, ...]:
        """Ids the template writes after an assistant turn's end token (ChatML: ``"\\n"``)."""

    @abc.abstractmethod
    def prompt_ids(self, observation: str, admissible: Sequence[str] | None = None) -> list[int]:
        """System prompt and first observation, ending where the assistant writes."""

    @abc.abstractmethod
    def observation_ids(
        self, observation: str, admissible: Sequence[str] | None = None
    ) -> list[int]:
        """The ids appended after a closed assistant turn: the observation, then the
        assistant's header again."""

    @abc.abstractmethod
    def command_ids(self, command: str) -> tuple[int, ...]:
        """The ids an assistant turn whose whole text is ``command`` has before its end token."""

    # ------------------------------------------------------------------ shared
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    @staticmethod
    def next_prompt(
        parent_ids: Sequence[int],
        generated_ids: Sequence[int],
        closing_ids: Sequence[int],
        observation_ids: Sequence[int],
    ) -> list[int]:
        """The next request's prompt: the parent's ids and the turn's ids, never re-encoded."""
        return [*parent_ids, *generated_ids, *closing_ids, *observation_ids]

    def read(self, result: GenerateResult) -> Generation:
        """Decode a result once and parse its action (before the env is stepped with it)."""
        ids = tuple(result.output_ids)
        finished = ids[-1:] == (self.end_id,)
        text = self.decode(ids)
        action, error = self.action_format.parse(
            self.decode(ids[:-1]) if finished else text, finished
        )
        closing = self.closing_tail if finished else (self.end_id, *self.closing_tail)
        return Generation(result, text, action, error, tuple(closing))

    def constraint(
        self, admissible: Sequence[str] | None, done: Sequence[int] = ()
    ) -> ChoiceConstraint | None:
        """The engine's constraint for a turn (``None`` unless the format is constrained):
        each admissible command's ids and the end token, after the ``done`` ids of the turn."""
        if not self.action_format.constrained:
            return None
        self.require_admissible(admissible)
        done, marker = tuple(done), self.action_format.free_line_marker
        line_break = None if marker is None else self.line_break_id
        in_free_line = line_break is not None and line_break not in done
        if line_break is not None:  # a cut turn continues its free line, or what follows it
            done = () if in_free_line else done[done.index(line_break) + 1 :]
        choices = []
        for command in dict.fromkeys(admissible):
            ids = (
                *(
                    self.command_ids(command)
                    if marker is None
                    else self.after_break(marker + command)
                ),
                self.end_id,
            )
            if len(ids) > len(done) and ids[: len(done)] == done:
                choices.append(ids[len(done) :])
        if not choices:
            raise TemplateError(
                f"the turn so far ({self.decode(done)!r}) starts no admissible command"
            )
        texts = tuple(self.decode(c[:-1]) for c in choices)
        if not in_free_line:
            return ChoiceConstraint(tuple(choices), texts)
        return ChoiceConstraint(tuple(choices), texts, line_break, self.free_line_banned)

    @functools.cached_property
    def line_break_id(self) -> int:
        """The token of a lone ``"\n"`` (``react-choice`` ends its free line with it)."""
        ids = self.encode("\n")
        if len(ids) != 1:
            raise TemplateError(
                f"--action-format {self.action_format.spec} needs a tokenizer with a single "
                f"line-break token, and this one writes '\\n' as {len(ids)} tokens"
            )
        return ids[0]

    def after_break(self, text: str) -> tuple[int, ...]:
        """The ids of ``text`` as it follows the free line's break."""
        ids = self.encode("\n" + text)
        if ids[:1] != [self.line_break_id]:
            raise TemplateError(f"the tokenizer merges the line break into {text!r}")
        return tuple(ids[1:])

    @functools.cached_property
    def free_line_banned(self) -> tuple[int, ...]:
        """The end token and every token but the lone break holding a line break: the free line
        is one line, as SGLang's and vLLM's ``[^\n]*`` are."""
        vocab = len(self.tokenizer)
        breaks = [i for i in range(vocab) if "\n" in self.decode([i]) and i != self.line_break_id]
        return tuple(sorted({self.end_id, *breaks}))

    def require_admissible(self, admissible: Sequence[str] | None) -> None:
        """Refuse an observation without commands when the format chooses among them."""
        if self.action_format.constrained and not admissible:
            raise TemplateError(
                f"--action-format {self.action_format.spec} needs the env's admissible "
                "commands, and this "
                "observation lists none (info['admissible_commands'] is empty); use an env that "
                "lists them, or --action-format action|tags|regex:PATTERN"
            )

    hide_admissible: str = ""
    """A regex: admissible commands it matches are not listed (ALFWorld's 30-odd ``go to``
    commands repeat the room's inventory every turn; the model learns them from the intro)."""

    def user_body(self, observation: str, admissible: Sequence[str] | None) -> str:
        """The observation as the model reads it (tidied, with the admissible commands)."""
        body = tidy_observation(observation) if self.tidy else observation
        if self.show_admissible and admissible:
            hide = self.hide_admissible
            shown = [c for c in admissible if not (hide and re.match(hide, c))]
            if shown:
                body += "\nAdmissible commands: " + " | ".join(shown)
        return body

    def settings(self) -> dict[str, Any]:
        """What a run manifest records of the template."""
        return {
            "class": type(self).__name__,
            "action_format": self.action_format.spec,
            "system_prompt": self.system_prompt,
            "show_admissible": self.show_admissible,
            "hide_admissible": self.hide_admissible,
            "tidy": self.tidy,
        }
