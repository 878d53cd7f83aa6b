"""SearchQA's action grammar and the observation texts, as Search-R1 writes them.

An action is one of (the first form that matches wins):

1. **Search-R1 tags** — any text holding a ``<search>Q</search>`` or ``<answer>A</answer>``
   element, e.g. a whole generated turn ``<think>…</think><search>Q</search>`` or what
   ``--action-format tags:search,answer`` passes on. As Tree-GRPO's rollout does, the text is
   cut after its first ``</search>`` (else after its first ``</answer>``;
   ``search_r1/llm_agent/generation.py`` lines 63–68) and the first element of the cut text is
   the action, its content stripped (lines 437–441).
2. **A ReAct command** — the whole action is ``search[Q]``, ``answer[A]`` or ``finish[A]``
   (``finish`` is ReAct's HotpotQA name for answering): keyword in any case, optional spaces
   before ``[``, the content runs to the last ``]`` and is stripped. This is what treegym's
   ``Action:`` line carries (``Action: search[Ada Lovelace]``).
3. Anything else is **invalid**: the turn is used up and the observation is Search-R1's
   invalid-action message (lines 411–413).

An empty search (``search[]``, ``<search> </search>``, or a query with no indexed word) is
answered with "no results" and uses up the turn; an empty answer ends the episode like any
answer (it matches no golden answer). Observations of searches are Search-R1's
``\\n\\n<information>Doc 1(Title: …) …\\nDoc 2…</information>\\n\\n`` (lines 406 and 475–490).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

SEARCH, ANSWER, INVALID = "search", "answer", "invalid"

INVALID_ACTION_MESSAGE = (
    "\nMy previous action is invalid. If I want to search, I should put the query between "
    "<search> and </search>. If I want to give the final answer, I should put the answer "
    "between <answer> and </answer>. Let me try again.\n"
)
NO_RESULTS = "No passage matches the query."
TURN_LIMIT_MESSAGE = (
    "The turn limit is reached: the search was not run, and the episode is over without an answer."
)

_ELEMENT = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_COMMAND = re.compile(r"\s*(search|answer|finish)\s*\[(.*)\]\s*", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class ParsedAction:
    """What an action asks for: ``kind`` (search, answer, invalid), its ``content``, and
    ``raw`` — the action as the dialogue text that the format reward reads holds it: tagged
    text cut after its first closing tag (as Tree-GRPO keeps it), a ReAct command as the
    element it stands for (``<answer>A</answer>``: no ``<think>``, so its format is invalid)."""

    kind: str
    content: str
    raw: str


def cut_response(text: str) -> str:
    """Tree-GRPO's cut of a generated turn after its first ``</search>`` or ``</answer>``."""
    if "</search>" in text:
        return text.split("</search>")[0] + "</search>"
    if "</answer>" in text:
        return text.split("</answer>")[0] + "</answer>"
    return text


def parse_action(text: str) -> ParsedAction:
    """The action ``text`` asks for (module docstring for the grammar)."""
    raw = cut_response(text)
    element = _ELEMENT.search(raw)
    if element:
        return ParsedAction(element.group(1), element.group(2).strip(), raw)
    command = _COMMAND.fullmatch(text)
    if command:
        kind = SEARCH if command.group(1).lower() == "search" else ANSWER
        content = command.group(2).strip()
        return ParsedAction(kind, content, f"<{kind}>{content}</{kind}>")
    return ParsedAction(INVALID, "", text)


def search_command(query: str) -> str:
    return f"search[{query}]"


def answer_command(answer: str) -> str:
    return f"answer[{answer}]"


def split_contents(contents: str) -> tuple[str, str]:
    """``(title, text)`` of a passage: its first line and the rest (Search-R1's corpora put the
    quoted title on the first line: ``"Evan Morris"\\nEvan Morris Evan L. Morris (…``)."""
    title, _, text = contents.partition("\n")
    return title, text


def plain_title(title: str) -> str:
    """A passage title without Search-R1's surrounding quotes (for commands)."""
    return title.strip().strip('"').strip()


def information(passages: Sequence[str]) -> str:
    """The observation of a search that returned ``passages`` (their ``contents``)."""
    docs = ""
    for i, contents in enumerate(passages):
        title, text = split_contents(contents)
        docs += f"Doc {i + 1}(Title: {title}) {text}\n"
    return f"\n\n<information>{(docs or NO_RESULTS).strip()}</information>\n\n"
