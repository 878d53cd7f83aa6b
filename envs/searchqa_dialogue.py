"""A SearchQA episode's state: the question and the turns so far, as one immutable value.

Retrieval is a pure function of the query, so the dialogue is the whole state of an episode: a
native snapshot *is* a :class:`Dialogue` (restoring shares it, nothing is copied). What the env
reports besides observations is derived from it here:

* :func:`expert_plan` — what a perfect agent does from here, from the generator's knowledge
  (the question's ``chain``): search each hop's subject whose evidence no search has shown yet
  (and that it has not searched already), as many as the turns left allow, then answer the
  golden answer. A question without a chain (a loaded file) plans ``search[question]`` and the
  answer;
* :func:`admissible` — sensible commands for samplers that pick among commands (scripted
  random, constrained choice): searches for the names the question and the shown passages
  mention, answers from the shown passages' titles and years (and yes / no for yes-no
  questions), and the expert's next action;
* :func:`solution_text` — the dialogue as the text Tree-GRPO's reward reads
  (:mod:`.searchqa_scoring`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .searchqa_actions import ANSWER, SEARCH, answer_command, plain_title, search_command
from .searchqa_data import Question
from .searchqa_scoring import chat_prompt, tree_grpo_prompt

YES_NO = re.compile(r"^(is|are|was|were|do|does|did|has|have|can|could)\b", re.IGNORECASE)
YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")


@dataclass(frozen=True)
class Turn:
    """One step: what was asked (``kind``, ``content``, ``raw`` text kept for the format
    reward), the ids and titles of the passages shown, and the observation."""

    kind: str
    content: str
    raw: str
    observation: str
    doc_ids: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()
    years: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dialogue:
    question: Question
    turns: tuple[Turn, ...] = ()

    def then(self, turn: Turn) -> Dialogue:
        return Dialogue(self.question, (*self.turns, turn))

    @property
    def answer(self) -> str | None:
        last = self.turns[-1] if self.turns else None
        return last.content if last is not None and last.kind == ANSWER else None

    @property
    def searches(self) -> int:
        return sum(t.kind == SEARCH for t in self.turns)

    @property
    def seen_docs(self) -> set[str]:
        return {d for t in self.turns for d in t.doc_ids}


def expert_plan(d: Dialogue, turns_left: int) -> list[str]:
    """The perfect agent's remaining actions (module docstring)."""
    q = d.question
    answer = answer_command(q.golden_answers[0])
    if turns_left <= 0 or d.answer is not None:
        return []
    searched = {t.content for t in d.turns if t.kind == SEARCH}
    seen = d.seen_docs
    hops = [h.query for h in q.chain if not seen.intersection(h.docs)]
    queries = hops if q.chain else [q.question]
    todo = list(dict.fromkeys(s for s in queries if s not in searched))
    return [search_command(s) for s in todo[: turns_left - 1]] + [answer]


def admissible(d: Dialogue, turns_left: int) -> list[str]:
    """Commands worth choosing among (module docstring), sorted."""
    if turns_left <= 0 or d.answer is not None:
        return []
    q = d.question
    names = set(_named_in(q))
    titles = {t for turn in d.turns for t in turn.titles}
    answers = titles | {y for turn in d.turns for y in turn.years} | names
    if YES_NO.match(q.question.strip()):
        answers |= {"yes", "no"}
    commands = {search_command(n) for n in names | titles} | {answer_command(a) for a in answers}
    if not q.chain:
        commands.add(search_command(q.question))
    commands.update(expert_plan(d, turns_left)[:1])
    return sorted(commands)


def _named_in(q: Question) -> list[str]:
    """Names the question text spells out: the subjects of its chain that occur in it."""
    return [h.query for h in q.chain if h.query in q.question]


def shown(doc_ids: list[str], contents: list[str]) -> dict[str, tuple[str, ...]]:
    """The ``doc_ids``/``titles``/``years`` fields of a search turn that showed ``contents``."""
    titles = tuple(plain_title(c.partition("\n")[0]) for c in contents)
    years = tuple(dict.fromkeys(y for c in contents for y in YEAR.findall(c)))
    return {"doc_ids": tuple(doc_ids), "titles": titles, "years": years}


def solution_text(d: Dialogue) -> str:
    """Tree-GRPO's ``decode(prompt + response)`` of this dialogue: its prompt for the question,
    then each turn's raw text followed by its observation, except the last turn's (the episode
    ends there; Search-R1 appends no observation to a final turn)."""
    parts = [chat_prompt(tree_grpo_prompt(d.question.question))]
    for i, turn in enumerate(d.turns):
        parts.append(turn.raw)
        if i < len(d.turns) - 1:
            parts.append(turn.observation)
    return "".join(parts)
