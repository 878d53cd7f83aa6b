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
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .protocol import GenerateResult

SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END = "<|end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (PAD, SYSTEM, USER, ASSISTANT, END)
MALFORMED_ACTION = "[malformed action]"
TEMPLATE_FILE = "template.json"
"""Beside a model's weights: the ReAct template settings it was trained with."""

DEFAULT_SYSTEM_PROMPT = (
    "You are an agent playing a text adventure. Read the observation, then answer with one "
    "line 'Thought: ...' and one line 'Action: <command>'."
)
_BANNER_LINE = re.compile(r"^[\s$|\\/_>]*$")
_STATUS_LINE = re.compile(r"^\s*>\s{8,}\S")  # the prompt '>' then the status bar
_ACTION = re.compile(r"Action:[ \t]*([^\n]*)")


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


def parse_action(text: str) -> tuple[str, str | None]:
    """``(action, error)`` from generated text; see the module docstring for the rule."""
    text = text.replace(END, "")
    matches = _ACTION.findall(text)
    if not matches:
        return MALFORMED_ACTION, "no 'Action:' line in the generation"
    action = matches[-1].strip()
    if not action:
        return MALFORMED_ACTION, "empty action after 'Action:'"
    return action, None


@dataclass(frozen=True)
class ReActTemplate:
    """Renders the pieces of a ReAct conversation and tokenizes each piece once.

    ``tokenizer`` is any Hugging Face tokenizer that knows :data:`SPECIAL_TOKENS`.
    """

    tokenizer: Any
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    show_admissible: bool = True
    tidy: bool = True

    @classmethod
    def for_model(cls, tokenizer: Any, model_path: str | Path | None = None) -> ReActTemplate:
        """The template a model was trained with: settings from ``MODEL/template.json``
        (``show_admissible``, ``system_prompt``) when the folder has one, else the defaults."""
        settings: dict[str, Any] = {}
        file = Path(model_path) / TEMPLATE_FILE if model_path is not None else None
        if file is not None and file.is_file():
            settings = json.loads(file.read_text())
            unknown = set(settings) - {"show_admissible", "system_prompt", "tidy"}
            if unknown:
                raise ValueError(f"{file}: unknown template settings {sorted(unknown)}")
        return cls(tokenizer, **settings)

    # -------------------------------------------------------------- text pieces
    def _user_body(self, observation: str, admissible: Sequence[str] | None) -> str:
        body = tidy_observation(observation) if self.tidy else observation
        if self.show_admissible and admissible:
            body += "\nAdmissible commands: " + " | ".join(admissible)
        return body

    def prompt_text(self, observation: str, admissible: Sequence[str] | None = None) -> str:
        user = self._user_body(observation, admissible)
        return f"{SYSTEM}{self.system_prompt}{END}\n{USER}{user}{END}\n{ASSISTANT}"

    def observation_text(self, observation: str, admissible: Sequence[str] | None = None) -> str:
        return f"\n{USER}{self._user_body(observation, admissible)}{END}\n{ASSISTANT}"

    @staticmethod
    def assistant_text(thought: str, action: str) -> str:
        """What a well-formed generation looks like (used by scripted policies and training)."""
        return f"Thought: {thought}\nAction: {action}{END}"

    # -------------------------------------------------------------- token ids
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    @property
    def end_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(END))

    def prompt_ids(self, observation: str, admissible: Sequence[str] | None = None) -> list[int]:
        return self.encode(self.prompt_text(observation, admissible))

    def observation_ids(
        self, observation: str, admissible: Sequence[str] | None = None
    ) -> list[int]:
        return self.encode(self.observation_text(observation, admissible))

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
        text = self.decode(result.output_ids)
        action, error = parse_action(text)
        closing = () if result.output_ids[-1:] == (self.end_id,) else (self.end_id,)
        return Generation(result, text, action, error, closing)


@dataclass(frozen=True)
class Generation:
    """A generation read by the template: its text, the parsed action, the closing ids."""

    result: GenerateResult
    text: str
    action: str
    parse_error: str | None
    closing_ids: tuple[int, ...]


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
