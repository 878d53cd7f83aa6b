"""The ReAct chat template and the token-level transcript.

A transcript is built from exact token ids, never from re-encoded text:

    prompt_ids(system, first observation [, admissible commands]) → <|assistant|>
    + the model's generated ids ("Thought: … Action: …<|end|>")          (loss mask 1)
    + the end token if the generation was cut before it                  (mask 0)
    + observation_ids(next observation [, admissible])  → <|assistant|>  (mask 0)
    + …

Each piece is tokenized on its own (special tokens are atomic), so the ids of a turn do not
depend on what follows, and the prompt of every request is exactly the previous prompt plus
the ids that were appended — the invariant :meth:`Transcript.extend_check` asserts.

Action parsing rule: the action is the text after the *last* ``Action:`` in the generation, up
to the end of that line, stripped. A generation with no ``Action:`` line or an empty action is
*malformed*: the env receives :data:`MALFORMED_ACTION` (the game answers it as nonsense, so the
model sees the consequence) and the turn records why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .actions import MALFORMED_ACTION, ActionFormat, ActionLine
from .template import Generation, Template, tidy_observation

__all__ = ["MALFORMED_ACTION", "Generation", "ReActTemplate", "Transcript", "Turn",
           "parse_action", "tidy_observation"]  # fmt: skip

SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END = "<|end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (PAD, SYSTEM, USER, ASSISTANT, END)
TEMPLATE_FILE = "template.json"
"""Beside a model's weights: the ReAct template settings it was trained with."""

DEFAULT_SYSTEM_PROMPT = (
    "You are an agent playing a text adventure. Read the observation, then answer with one "
    "line 'Thought: ...' and one line 'Action: <command>'."
)


def parse_action(text: str) -> tuple[str, str | None]:
    """``(action, error)`` from generated text; see the module docstring for the rule."""
    return ActionLine().parse(text.replace(END, ""))


@dataclass(frozen=True)
class ReActTemplate(Template):
    """Renders the pieces of a ReAct conversation and tokenizes each piece once.

    ``tokenizer`` is any Hugging Face tokenizer that knows :data:`SPECIAL_TOKENS`.
    """

    tokenizer: Any
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    show_admissible: bool = True
    hide_admissible: str = ""
    tidy: bool = True
    action_format: ActionFormat = field(default_factory=ActionLine)

    @classmethod
    def for_model(
        cls,
        tokenizer: Any,
        model_path: str | Path | None = None,
        action_format: ActionFormat | None = None,
    ) -> ReActTemplate:
        """The template a model was trained with: settings from ``MODEL/template.json``
        (``show_admissible``, ``hide_admissible``, ``system_prompt``, ``tidy``) when the
        folder has one, else the defaults; ``action_format`` replaces the ``Action:`` line."""
        settings: dict[str, Any] = {}
        file = Path(model_path) / TEMPLATE_FILE if model_path is not None else None
        if file is not None and file.is_file():
            settings = json.loads(file.read_text())
            unknown = set(settings) - {
                "show_admissible",
                "hide_admissible",
                "system_prompt",
                "tidy",
            }
            if unknown:
                raise ValueError(f"{file}: unknown template settings {sorted(unknown)}")
        if action_format is not None:
            settings["action_format"] = action_format
        return cls(tokenizer, **settings)

    # -------------------------------------------------------------- text pieces
    def prompt_text(self, observation: str, admissible: Sequence[str] | None = None) -> str:
        user = self.user_body(observation, admissible)
        return f"{SYSTEM}{self.system_prompt}{END}\n{USER}{user}{END}\n{ASSISTANT}"

    def observation_text(self, observation: str, admissible: Sequence[str] | None = None) -> str:
        return f"\n{USER}{self.user_body(observation, admissible)}{END}\n{ASSISTANT}"

    @staticmethod
    def assistant_text(thought: str, action: str) -> str:
        """What a well-formed generation looks like (used by scripted policies and training)."""
        return f"Thought: {thought}\nAction: {action}{END}"

    # -------------------------------------------------------------- token ids
    @property
    def end_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(END))

    @property
    def closing_tail(self) -> tuple[int, ...]:
        return ()  # the next piece starts with its own "\n<|user|>"

    def prompt_ids(self, observation: str, admissible: Sequence[str] | None = None) -> list[int]:
        self.require_admissible(admissible)
        return self.encode(self.prompt_text(observation, admissible))

    def observation_ids(
        self, observation: str, admissible: Sequence[str] | None = None
    ) -> list[int]:
        return self.encode(self.observation_text(observation, admissible))

    def command_ids(self, command: str) -> tuple[int, ...]:
        return tuple(self.encode(command))  # END is atomic: "cmd<|end|>" = cmd's ids + END


@dataclass(frozen=True)
class Turn:
    """One ReAct turn as the transcript stores it."""

    generated_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    closing_ids: tuple[int, ...]
    """End token appended by the template when the generation stopped without it (mask 0)."""
    observation_ids: tuple[int, ...]
    action: str
    """What the env received (``MALFORMED_ACTION`` when parsing failed)."""
    text: str
    """Decoded generation, for display only (never re-encoded)."""
    parse_error: str | None
    finish_reason: str


@dataclass
class Transcript:
    """Flat token sequence of an episode with its loss mask and aligned logprobs."""

    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ids:
            self.ids = list(self.prompt_ids)
            self.loss_mask = [0] * len(self.ids)
            self.logprobs = [0.0] * len(self.ids)

    def add_turn(self, generation: Generation, observation_ids: Sequence[int]) -> Turn:
        """Append one generation and the observation that answered it; return the turn."""
        result = generation.result
        turn = Turn(
            generated_ids=tuple(result.output_ids),
            logprobs=tuple(result.logprobs),
            closing_ids=generation.closing_ids,
            observation_ids=tuple(observation_ids),
            action=generation.action,
            text=generation.text,
            parse_error=generation.parse_error,
            finish_reason=result.finish_reason,
        )
        self._append(turn)
        return turn

    def _append(self, turn: Turn) -> None:
        self.ids += turn.generated_ids
        self.loss_mask += [1] * len(turn.generated_ids)
        self.logprobs += turn.logprobs
        tail = turn.closing_ids + turn.observation_ids
        self.ids += tail
        self.loss_mask += [0] * len(tail)
        self.logprobs += [0.0] * len(tail)
        self.turns.append(turn)

    def extend_check(self, prompt: Sequence[int]) -> None:
        """Assert ``prompt`` is exactly this transcript (the guard against drift)."""
        if list(prompt) != self.ids:
            n = next(
                (i for i, (a, b) in enumerate(zip(prompt, self.ids, strict=False)) if a != b), None
            )
            raise AssertionError(
                f"prompt ({len(prompt)} ids) is not the transcript ({len(self.ids)} ids); "
                f"first difference at {n if n is not None else min(len(prompt), len(self.ids))}"
            )
