"""SearchQA's rewards: exact match, and Tree-GRPO's exact match with format terms.

Both are ports of ``verl/utils/reward_score/qa_em_format.py`` in AMAP-ML/Tree-GRPO (the file
Search-R1's ``qa_em_format.py`` also is), kept line for line so a dialogue scores here exactly
as it scores there:

* :func:`normalize_answer` — lines 19–33 (lower-case, drop punctuation, drop a/an/the, squeeze
  whitespace); :func:`em_check` — lines 36–46;
* :func:`is_valid_sequence` — lines 125–198 (the *strict* checker ``compute_score_em`` uses: a
  ``<think>`` before every ``<search>``/``<answer>``, nothing but whitespace between elements);
* :func:`extract_solution` — lines 201–213: the *last* ``<answer>…</answer>`` of the whole
  text, ``None`` when there is at most one. The text includes the prompt, whose instruction
  already holds two (``<answer> and </answer>``, ``<answer> Beijing </answer>``), so with
  Tree-GRPO's prompt a dialogue in which the model never answered is scored as if it had
  answered "Beijing" (a truncated episode gets ``final_format_score``, not 0): the port keeps
  that;
* :func:`is_retrieval_correct` — lines 216–228; :func:`compute_score_em` — lines 231–282.

Tree-GRPO's multi-hop scripts (``train_multihopqa_tree_search.sh`` lines 94–96, and
``train_multihopqa_grpo.sh``) run it with ``structure_format_score=0.2``,
``final_format_score=0.1``, ``retrieval_score=0``: the defaults of :class:`FormatScores`. The
text it scores is ``tokenizer.decode(prompt + response)`` (``verl/trainer/main_ppo_format.py``
lines 72–73): the chat-templated prompt of :func:`tree_grpo_prompt`, then the model's turns
with the ``<information>`` observations between them; the env rebuilds that text from its
dialogue (:mod:`.searchqa_dialogue`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

_TAGS = ("think", "search", "information", "answer")
_TAG = re.compile(r"</?(?:think|search|information|answer)>")
_SPLIT = re.compile(r"(</?(?:think|search|information|answer)>)")
_ASSISTANT = re.compile(r"<\|im_start\|>assistant\s*")
#: (tag, states it may follow, state it leads to): the transitions of lines 163–180.
_TRANSITIONS = {
    "<think>": (("start", "information"), "in_think"),
    "</think>": (("in_think",), "after_think"),
    "<search>": (("after_think",), "in_search"),
    "</search>": (("in_search",), "after_search"),
    "<information>": (("after_search",), "in_information"),
    "</information>": (("in_information",), "information"),
    "<answer>": (("after_think",), "in_answer"),
    "</answer>": (("in_answer",), "end"),
}


def normalize_answer(s: str) -> str:
    """SQuAD's answer normalisation, as Search-R1 and Tree-GRPO apply it."""
    text = s.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def em_check(prediction: str, golden_answers: str | Sequence[str]) -> bool:
    """Whether ``prediction`` equals one of the golden answers after normalisation."""
    golden = [golden_answers] if isinstance(golden_answers, str) else golden_answers
    normalized = normalize_answer(prediction)
    return any(normalize_answer(g) == normalized for g in golden)


def is_valid_sequence(text: str) -> tuple[bool, str]:
    """``(valid, reason)``: the strict tag grammar after the ``<|im_start|>assistant`` marker."""
    marker = _ASSISTANT.search(text)
    if not marker:
        return False, "Missing assistant marker"
    content = text[marker.end() :]
    for tag in _TAGS:
        opening = len(re.findall(f"<{tag}>", content))
        closing = len(re.findall(f"</{tag}>", content))
        if opening != closing:
            return False, f"Mismatch in {tag} tags: {opening} opening vs {closing} closing tags"
    state = "start"
    for part in _SPLIT.split(content):
        if not part.strip():
            continue
        if _TAG.match(part):
            allowed, target = _TRANSITIONS[part]
            if state not in allowed:
                return False, f"Unexpected tag {part} in state {state}"
            state = target
        elif state in ("start", "after_think", "after_search", "information"):
            return False, f"Unexpected content '{part.strip()}' between tags (state: {state})"
        elif state not in ("in_think", "in_search", "in_information", "in_answer"):
            return False, f"Unexpected content in state {state}"
    if state != "end":
        return False, f"Incomplete sequence, ended in state {state}"
    return True, "Valid sequence format"


def extract_solution(solution_str: str) -> str | None:
    """The last ``<answer>`` of the text, or ``None`` when it has at most one (module doc:
    Tree-GRPO's prompt holds two)."""
    matches = list(re.finditer(r"<answer>(.*?)</answer>", solution_str, re.DOTALL))
    if len(matches) <= 1:
        return None
    return matches[-1].group(1).strip()


def is_retrieval_correct(text: str, golden_answers: Sequence[str]) -> bool:
    """Whether a golden answer occurs (normalised) in one of the ``<information>`` blocks."""
    blocks = [m.strip() for m in re.findall(r"<information>(.*?)</information>", text, re.DOTALL)]
    return any(normalize_answer(g) in normalize_answer(b) for b in blocks for g in golden_answers)


@dataclass(frozen=True)
class FormatScores:
    """The format terms of ``compute_score_em`` (defaults: Tree-GRPO's multi-hop scripts)."""

    structure_format_score: float = 0.2
    final_format_score: float = 0.1
    retrieval_score: float = 0.0
    score: float = 1.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"format score {name} must be a number, got {value!r}")


def compute_score_em(
    solution_str: str, golden_answers: Sequence[str], scores: FormatScores = FormatScores()
) -> float:
    """Tree-GRPO's reward of a whole dialogue text (prompt included; module docstring)."""
    valid, _ = is_valid_sequence(solution_str)
    retrieval = valid and is_retrieval_correct(solution_str, golden_answers)
    answer = extract_solution(solution_str)
    structure = scores.structure_format_score
    if answer is not None and em_check(answer, golden_answers):
        return scores.score if valid else scores.score - structure
    if valid:
        return structure + scores.retrieval_score if retrieval else structure
    return 0.0 if answer is None else scores.final_format_score


def tree_grpo_prompt(question: str) -> str:
    """The user prompt of Tree-GRPO's data (``scripts/data_process/qa_search_train_merge.py``
    lines 32–36, Search-R1's ``nq_search.py``), after its question clean-up (strip, end with
    '?'; lines 65–67 of the same script)."""
    question = question.strip()
    if not question.endswith("?"):
        question += "?"
    return (
        "Answer the given question. You must conduct reasoning inside <think> and </think> "
        "first every time you get new information. After reasoning, if you find you lack some "
        "knowledge, you can call a search engine by <search> query </search> and it will return "
        "the top searched results between <information> and </information>. You can search as "
        "many times as your want. If you find no further external knowledge needed, you can "
        "directly provide the answer inside <answer> and </answer>, without detailed "
        f"illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
    )


def chat_prompt(user: str) -> str:
    """``user`` in Qwen2.5's chat template up to the assistant's turn (what ``decode`` of
    Tree-GRPO's prompt ids shows; the system turn before it is left out: no score reads it)."""
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
