"""``ChatTemplate``: transcripts in the model's own chat template, token for token.

Instruct models (Qwen, Llama, SmolLM, …) were trained on their own role markers; treegym's
ReAct markers are noise to them. This template renders every piece through the tokenizer's
``apply_chat_template`` and keeps the token-exact rule: the ids appended for a turn are the
*difference* between the rendered conversation with and without that turn, checked to be a
pure extension, so the transcript after any turn equals ``apply_chat_template`` of the whole
conversation whenever the generated ids are the canonical ones (always under constrained
choice), and nothing generated is ever decoded and re-encoded.

The runner asks for an observation's ids without the history (``observation_ids(obs)``), so
the deltas must not depend on the history. :meth:`ChatTemplate._verify` renders probe
conversations of 1–3 turns whose past assistant turns look like reasoning
(``<think>x</think>answer``), ReAct and a bare command, and refuses a template whose
rendering of a new turn rewrites earlier ones (Qwen3's drops past reasoning) or whose deltas
change with the history, naming the turn where it diverged.

From the probes: the end-of-turn token (the special token the template writes right after an
assistant's text: the stop token) and the text the template writes after it (ChatML's
``"\\n"``), which goes into the closing ids (mask 0) of every turn; a generation cut before the
end token gets the end token and that text (mask 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .actions import ActionFormat, Choice
from .template import Template, TemplateError

CHAT_SYSTEM_PROMPT = (
    "You are an agent playing a text game. Read the observation and choose the next command."
)
_PROBE_OBSERVATIONS = (
    "You are in a kitchen. There is a table here.",
    "You see a red key.\nAdmissible commands: look | take red key",
    "Nothing happens.",
)
_PROBE_REPLIES = ("<think>x</think>answer", "Thought: look around\nAction: look", "take red key")
_PROBE_COMMAND = "open door"
_PROBE_ANSWER = "The door is open."
_OPTIONS = "use --template react, or give a template file: --template chat:FILE"


def _message(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


class ChatTemplate(Template):
    """The model's chat template (``tokenizer.chat_template``, or ``chat_template`` text)."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        action_format: ActionFormat | None = None,
        system_prompt: str | None = None,
        show_admissible: bool = True,
        hide_admissible: str = "",
        tidy: bool = True,
        chat_template: str | None = None,
    ) -> None:
        if not (chat_template or getattr(tokenizer, "chat_template", None)):
            raise TemplateError(f"the tokenizer has no chat template: {_OPTIONS}")
        self.tokenizer, self.chat_template = tokenizer, chat_template
        self.action_format = action_format or Choice()
        self.system_prompt = system_prompt or (
            f"{CHAT_SYSTEM_PROMPT} {self.action_format.instruction}"
        )
        self.show_admissible, self.tidy = show_admissible, tidy
        self.hide_admissible = hide_admissible
        self._commands: dict[str, tuple[int, ...]] = {}
        self._end, self._tail = self._verify()
        self._after_reply = [self._system(), _message("user", _PROBE_OBSERVATIONS[0]),
                             _message("assistant", _PROBE_COMMAND)]  # fmt: skip
        self._after_reply_ids = self.render(self._after_reply, generation_prompt=False)

    # ------------------------------------------------------------------ rendering
    def render(self, messages: Sequence[dict[str, str]], generation_prompt: bool) -> list[int]:
        """The ids of ``messages`` as the chat template writes them (special tokens atomic)."""
        try:
            text = self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=generation_prompt,
                chat_template=self.chat_template,
            )  # fmt: skip
        except Exception as exc:  # jinja raises its own errors (e.g. "roles must alternate")
            raise TemplateError(f"the chat template cannot render a conversation: {exc}") from None
        return self.encode(text)

    def _system(self) -> dict[str, str]:
        return _message("system", self.system_prompt)

    def _delta(self, before: list[int], after: list[int], what: str) -> list[int]:
        """``after`` minus its prefix ``before``; a template that rewrote ``before`` is refused."""
        if after[: len(before)] != before:
            pairs = enumerate(zip(before, after, strict=False))
            at = next((i for i, (a, b) in pairs if a != b), min(len(before), len(after)))
            raise TemplateError(
                f"the chat template is not prefix-stable: rendering {what} changes the earlier "
                f"tokens (first difference at token {at} of {len(before)}); {_OPTIONS}"
            )
        return after[len(before) :]

    def _verify(self) -> tuple[int, tuple[int, ...]]:
        """Check prefix stability and history independence; ``(end id, closing tail)``."""
        history = [self._system(), _message("user", _PROBE_OBSERVATIONS[0])]
        replies, answers = [], []
        for turn, reply in enumerate(_PROBE_REPLIES, start=1):
            asked = self.render(history, generation_prompt=True)
            probe = [*history, _message("assistant", _PROBE_COMMAND)]
            closed = self.render(probe, generation_prompt=False)
            replies.append(self._delta(asked, closed, f"assistant turn {turn}"))
            probe.append(_message("user", _PROBE_ANSWER))
            answers.append(self._delta(closed, self.render(probe, generation_prompt=True),
                                       f"the observation after assistant turn {turn}"))  # fmt: skip
            history.append(_message("assistant", reply))
            replied = self.render(history, generation_prompt=False)
            self._delta(asked, replied, f"assistant turn {turn} ({reply!r})")
            history.append(_message("user", _PROBE_OBSERVATIONS[turn % len(_PROBE_OBSERVATIONS)]))
            self._delta(replied, self.render(history, generation_prompt=True),
                        f"the observation after assistant turn {turn} ({reply!r})")  # fmt: skip
        for name, deltas in (("assistant turn", replies), ("observation", answers)):
            differ = next((i for i, d in enumerate(deltas) if d != deltas[0]), None)
            if differ is not None:
                raise TemplateError(
                    f"the chat template renders the same {name} differently after {differ + 1} "
                    f"turns than after 1 (its ids depend on the history); {_OPTIONS}"
                )
        return self._split_reply(replies[0])

    def _split_reply(self, reply: list[int]) -> tuple[int, tuple[int, ...]]:
        """``(end token, tail)`` of a rendered reply: its text's ids, the end token, the tail."""
        text = self.encode(_PROBE_COMMAND)
        special = set(self.tokenizer.all_special_ids) | set(
            getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        )
        if reply[: len(text)] != text or len(reply) <= len(text) or reply[len(text)] not in special:
            raise TemplateError(
                "the chat template does not write an assistant's text followed by an "
                f"end-of-turn token (it wrote {self.decode(reply)!r} for {_PROBE_COMMAND!r}); "
                f"{_OPTIONS}"
            )
        return int(reply[len(text)]), tuple(reply[len(text) + 1 :])

    # ------------------------------------------------------------------ Template
    @property
    def end_id(self) -> int:
        return self._end

    @property
    def closing_tail(self) -> tuple[int, ...]:
        return self._tail

    def prompt_ids(self, observation: str, admissible: Sequence[str] | None = None) -> list[int]:
        self.require_admissible(admissible)
        user = _message("user", self.user_body(observation, admissible))
        return self.render([self._system(), user], generation_prompt=True)

    def observation_ids(
        self, observation: str, admissible: Sequence[str] | None = None
    ) -> list[int]:
        user = _message("user", self.user_body(observation, admissible))
        after = self.render([*self._after_reply, user], generation_prompt=True)
        return self._delta(self._after_reply_ids, after, "an observation")

    def command_ids(self, command: str) -> tuple[int, ...]:
        """The command's ids as the template writes them in an assistant turn (cached)."""
        if command not in self._commands:
            history = self._after_reply[:2]
            asked = self.render(history, generation_prompt=True)
            closed = self.render([*history, _message("assistant", command)], False)
            reply = self._delta(asked, closed, f"the command {command!r}")
            end = (self._end, *self._tail)
            if tuple(reply[-len(end) :]) != end:
                raise TemplateError(f"the chat template does not end the reply {command!r} "
                                    f"with its end-of-turn token")  # fmt: skip
            self._commands[command] = tuple(reply[: -len(end)])
        return self._commands[command]
