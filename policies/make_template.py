"""Choosing a model's template and action format (``--template``, ``--action-format``).

``--template``: ``react`` (treegym's role tokens), ``chat`` (the tokenizer's own chat
template) or ``chat:FILE`` (a Jinja chat template from a file). Default: ``react`` when the
model folder has a ``template.json`` (the embedded model: it was trained on ReAct) or the
tokenizer has no chat template, else ``chat``.

``--action-format`` (``actions.py``): default ``action`` under ``react``; under ``chat``,
``choice`` where the engine can constrain decoding (a small instruct model writes almost no
well-formed ``Action:`` lines zero-shot: the README's measurement), else ``action``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .actions import ActionFormat, ActionLine, Choice, parse_action_format
from .chat import ChatTemplate
from .react import SPECIAL_TOKENS, TEMPLATE_FILE, ReActTemplate
from .template import Template, TemplateError

TEMPLATE_FORMS = "react, chat, chat:FILE"


def default_template_kind(tokenizer: Any, model_path: str | Path | None) -> str:
    """``react`` for a model trained on ReAct (``template.json``) or without a chat template,
    else ``chat``."""
    trained = model_path is not None and (Path(model_path) / TEMPLATE_FILE).is_file()
    return "react" if trained or not getattr(tokenizer, "chat_template", None) else "chat"


def make_template(
    tokenizer: Any,
    model_path: str | Path | None = None,
    template: str | None = None,
    action_format: str | None = None,
    *,
    can_constrain: bool = True,
) -> Template:
    """The template named by ``template`` (``None``: the default) with its action format.

    ``can_constrain``: whether the policy's engine can constrain decoding; a constrained format
    for one that cannot is refused by the caller, which knows the engine's name."""
    kind = template or default_template_kind(tokenizer, model_path)
    name, colon, file = kind.partition(":")
    if name == "react" and not colon:
        missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            raise TemplateError(
                f"the react template needs treegym's special tokens and the tokenizer lacks "
                f"{', '.join(missing)}: use --template chat (the model's own chat template)"
            )
        fmt: ActionFormat = parse_action_format(action_format) if action_format else ActionLine()
        return ReActTemplate.for_model(tokenizer, model_path, action_format=fmt)
    if name != "chat" or (colon and not file):
        raise TemplateError(f"unknown template {kind!r}; use one of: {TEMPLATE_FORMS}")
    text = None
    if file:
        path = Path(file).expanduser()
        if not path.is_file():
            raise TemplateError(f"chat template file not found: {path}")
        text = path.read_text()
    if action_format:
        fmt = parse_action_format(action_format)
    else:
        fmt = Choice() if can_constrain else ActionLine()
    return ChatTemplate(tokenizer, action_format=fmt, chat_template=text)
