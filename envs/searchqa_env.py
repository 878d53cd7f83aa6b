"""``treegym/SearchQA-v0``: multi-hop question answering with a search tool over a local corpus.

An episode is Search-R1's / Tree-GRPO's: the question is the first observation; each action is
a search (the top ``topk`` passages of the corpus come back inside ``<information>``) or an
answer (the episode ends); after ``max_turns`` turns without an answer the next turn is the
last — a search there is not run — and the episode is truncated. Defaults are Tree-GRPO's
multi-hop scripts: ``topk=3``, ``max_turns=3``. The action grammar (Search-R1's tags or
treegym's ``search[...]``/``answer[...]``) is in :mod:`.searchqa_actions`.

Data: by default a synthetic world made offline (``world_seed``, ``world_people``;
:mod:`.searchqa_world`) with ``train``/``dev``/``test`` questions; or the user's Search-R1 files,
``corpus=`` a JSONL corpus and ``questions=`` a JSONL or parquet question file
(:mod:`.searchqa_data`). A task is a question id (``"test-17"`` in a synthetic world, a file's
``id``) or an index into the question set (the world's ``split``); without one, the episode
seed picks the question. Retrieval is BM25 over an index built once per corpus and
memory-mapped (:mod:`.searchqa_index`), or the user's ``retriever="module:factory"``.

Reward: ``"em"`` — 1 for an answer that exactly matches a golden answer after SQuAD
normalisation, else 0; ``"em_format"`` — Tree-GRPO's ``compute_score_em`` of the whole
dialogue at its end (format terms ``format_scores``, default 0.2/0.1/0;
:mod:`.searchqa_scoring`). It reads the ``<think>`` tags too: pass whole generated turns as
actions for it (a ``search[...]``/``answer[...]`` command counts as its bare tag, whose format is
invalid: a right answer scores 0.8, a wrong one 0.1).

``max_episode_steps`` (treegym's generic step cap: ``treegym collect`` passes 20 by default)
only ever shortens an episode below ``max_turns + 1`` steps.

``prompt``: ``"react"`` (the question and the ``search[...]``/``answer[...]`` commands),
``"search-r1"`` (Tree-GRPO's prompt, unchanged), or ``"question"`` (the question alone).
``info``: ``admissible_commands``, ``won``, ``lost``, ``score``, ``max_score``, ``moves``,
``task_id``, ``question_type``, ``hops``, ``searches``, ``answer``, ``retrieved`` (passage ids
this step showed) and, with ``expert_plan=True``, the remaining ``expert_plan``
(:mod:`.searchqa_dialogue`). Snapshots are native: the state is one immutable
:class:`~.searchqa_dialogue.Dialogue`.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from .core import TextEnv
from .errors import UnknownTaskError
from .searchqa_actions import (
    ANSWER,
    INVALID_ACTION_MESSAGE,
    SEARCH,
    information,
    parse_action,
    split_contents,
)
from .searchqa_data import SPLITS, Question, load_questions
from .searchqa_dialogue import Dialogue, Turn, admissible, expert_plan, shown, solution_text
from .searchqa_index import OpenCorpus, open_corpus
from .searchqa_scoring import FormatScores, compute_score_em, em_check, tree_grpo_prompt
from .searchqa_world_files import world_folder

REWARDS = ("em", "em_format")
PROMPTS = ("react", "search-r1", "question")
TURN_LIMIT = "The turn limit is reached: no more searches, and the episode is over unanswered."


class SearchQAEnv(TextEnv):
    """See the module docstring."""

    #: Whole generated turns are valid actions (Tree-GRPO's responses run to 500 tokens).
    max_action_length: ClassVar[int] = 8192

    def __init__(
        self,
        task: str | int | None = None,
        *,
        corpus: str | os.PathLike[str] | None = None,
        questions: str | os.PathLike[str] | None = None,
        index: str | os.PathLike[str] | None = None,
        world_seed: int = 0,
        world_people: int = 300,
        split: str = "train",
        topk: int = 3,
        max_turns: int = 3,
        max_passage_words: int | None = None,
        reward: str = "em",
        format_scores: Mapping[str, float] | None = None,
        prompt: str = "react",
        retriever: str = "bm25",
        expert_plan: bool = True,
        max_episode_steps: int | None = None,
    ) -> None:
        _check_int("topk", topk)
        _check_int("max_turns", max_turns)
        if max_passage_words is not None:
            _check_int("max_passage_words", max_passage_words)
        _check_choice("reward", reward, REWARDS)
        _check_choice("prompt", prompt, PROMPTS)
        _check_choice("split", split, SPLITS)
        if (corpus is None) != (questions is None):
            raise ValueError("give both corpus= and questions= (or neither: a synthetic world)")
        limit = (
            max_turns + 1 if max_episode_steps is None else min(max_turns + 1, max_episode_steps)
        )
        super().__init__(max_episode_steps=limit)
        self.topk, self.max_turns, self.max_passage_words = topk, max_turns, max_passage_words
        self.reward_kind, self.prompt, self.expert_plan = reward, prompt, bool(expert_plan)
        self.format_scores = FormatScores(**(format_scores or {}))
        self.default_task = task
        if corpus is None:
            folder = world_folder(world_people, world_seed)
            corpus = folder / "corpus.jsonl"
            self._questions = _world_questions(str(folder), split)
        else:
            path = Path(questions).expanduser().resolve()
            self._questions = _file_questions(str(path), _mtime(path))
        self._corpus: OpenCorpus = open_corpus(corpus, retriever, index=index)
        self._dialogue: Dialogue | None = None

    # ------------------------------------------------------------------ tasks
    @classmethod
    def validate_task(cls, options: Mapping[str, Any]) -> None:
        task = options.get("task")
        if task is not None and (isinstance(task, bool) or not isinstance(task, (str, int))):
            raise UnknownTaskError(f"a SearchQA task is a question id or index, got {task!r}")

    def question(self, task: Any, seed: int = 0) -> Question:
        """The question ``task`` names (module docstring)."""
        self.validate_task({"task": task})
        ids, ordered, name = self._questions
        if task is None:
            return ordered[seed % len(ordered)]
        if isinstance(task, str) and task in ids:
            return ids[task]
        if (isinstance(task, int) or task.isdigit()) and 0 <= int(task) < len(ordered):
            return ordered[int(task)]
        examples = ", ".join(list(ids)[:3])
        raise UnknownTaskError(
            f"no question {task!r} in {name}: give an id (e.g. {examples}) or an index "
            f"0..{len(ordered) - 1}"
        )

    # ------------------------------------------------------------------ hooks
    def _fingerprint_parts(self) -> dict[str, Any]:
        return {
            "corpus": self._corpus.sha256,
            "questions": self._questions[2],
            "retriever": self._corpus.retriever.identity,
            "topk": self.topk,
            "max_passage_words": self.max_passage_words,
            "reward": self.reward_kind,
            "format_scores": vars(self.format_scores),
            "prompt": self.prompt,
            "expert_plan": self.expert_plan,
        }

    def _get_native(self) -> Dialogue:
        return self._dialogue

    def _set_native(self, native: Dialogue) -> None:
        if not isinstance(native, Dialogue):
            raise TypeError(f"not a SearchQA native snapshot: {type(native).__name__}")
        self._dialogue = native

    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        question = self.question(options.get("task", self.default_task), seed)
        self._dialogue = Dialogue(question)
        return self._first_observation(question), self._info(self._dialogue)

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        parsed = parse_action(action)
        d = self._dialogue
        last = len(d.turns) + 1 >= self.max_episode_steps
        if parsed.kind == ANSWER:
            turn = Turn(ANSWER, parsed.content, parsed.raw, f"Your answer: {parsed.content}.")
        elif last:
            turn = Turn(parsed.kind, parsed.content, parsed.raw, TURN_LIMIT)
        elif parsed.kind == SEARCH:
            turn = self._search(parsed.content, parsed.raw)
        else:
            turn = Turn(parsed.kind, parsed.content, parsed.raw, INVALID_ACTION_MESSAGE)
        self._dialogue = d = d.then(turn)
        terminated = parsed.kind == ANSWER
        reward = self._reward(d) if terminated or last else 0.0
        return turn.observation, reward, terminated, self._info(d)

    # ------------------------------------------------------------------ the game
    def _search(self, query: str, raw: str) -> Turn:
        corpus = self._corpus
        passages = [corpus.store[i] for i in corpus.retriever.search(query, self.topk)]
        contents = [self._cut(p.contents) for p in passages]
        ids = [p.id for p in passages]
        return Turn(SEARCH, query, raw, information(contents), **shown(ids, contents))

    def _cut(self, contents: str) -> str:
        """A passage with its text cut to ``max_passage_words`` words (title kept)."""
        if self.max_passage_words is None:
            return contents
        title, text = split_contents(contents)
        return f"{title}\n{' '.join(text.split()[: self.max_passage_words])}"

    def _reward(self, d: Dialogue) -> float:
        gold = d.question.golden_answers
        if self.reward_kind == "em_format":
            return compute_score_em(solution_text(d), gold, self.format_scores)
        return float(d.answer is not None and em_check(d.answer, gold))

    def _first_observation(self, q: Question) -> str:
        if self.prompt == "search-r1":
            return tree_grpo_prompt(q.question)
        if self.prompt == "question":
            return q.question
        return (
            f"Question: {q.question}\nFind the answer in the corpus. Write 'Action: "
            f"search[query]' to see the {self.topk} passages that best match a query, and "
            f"'Action: answer[text]' to answer. You can search {self.max_turns} times."
        )

    def _info(self, d: Dialogue) -> dict[str, Any]:
        q = d.question
        left = self.max_episode_steps - len(d.turns)
        won = d.answer is not None and em_check(d.answer, q.golden_answers)
        info: dict[str, Any] = {
            "admissible_commands": admissible(d, left),
            "won": won,
            "lost": d.answer is not None and not won,
            "score": int(won),
            "max_score": 1,
            "moves": len(d.turns),
            "task_id": q.id,
            "question_type": q.type,
            "hops": q.hops,
            "searches": d.searches,
            "answer": d.answer,
            "retrieved": list(d.turns[-1].doc_ids) if d.turns else [],
        }
        if self.expert_plan:
            info["expert_plan"] = expert_plan(d, left)
        return info


QuestionSet = tuple[dict[str, Question], list[Question], str]
"""``(by id, the ordered list tasks index, identity)``."""


@functools.lru_cache(maxsize=16)
def _world_questions(folder: str, split: str) -> QuestionSet:
    """A world's questions: every split by id, ``split`` in order (loaded once per process)."""
    splits = {s: load_questions(Path(folder) / f"{s}.jsonl") for s in SPLITS}
    ids = {q.id: q for qs in splits.values() for q in qs}
    return ids, splits[split], Path(folder).name


@functools.lru_cache(maxsize=16)
def _file_questions(path: str, mtime_ns: int | None) -> QuestionSet:
    """A question file's questions (loaded once per process and version of the file)."""
    ordered = load_questions(path)
    sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return {q.id: q for q in ordered}, ordered, f"{Path(path).name}@{sha}"


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None  # load_questions names the problem


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
