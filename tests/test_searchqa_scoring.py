"""SearchQA's scores and action grammar: every branch of Tree-GRPO's ``compute_score_em``
(``verl/utils/reward_score/qa_em_format.py``), its strict tag grammar, the SQuAD normalisation,
and Search-R1's parsing of a generated turn (cut, first element) next to the ReAct commands."""

from __future__ import annotations

import pytest

from treegym.envs.searchqa_actions import (
    ANSWER,
    INVALID,
    SEARCH,
    information,
    parse_action,
    plain_title,
)
from treegym.envs.searchqa_scoring import (
    FormatScores,
    chat_prompt,
    compute_score_em,
    em_check,
    extract_solution,
    is_valid_sequence,
    normalize_answer,
    tree_grpo_prompt,
)

PROMPT = chat_prompt(tree_grpo_prompt("who wrote it"))
INFO = "\n\n<information>Doc 1(Title: x) Paris is nice</information>\n\n"
GOOD = f"<think>a</think><search>q</search>{INFO}<think>b</think><answer>Paris</answer>"


def test_normalisation_and_exact_match():
    assert normalize_answer("  The  Beatles!! ") == "beatles"
    assert normalize_answer("A tale of an apple.") == "tale of apple"
    assert em_check("the paris", ["London", "Paris"]) and em_check("Paris", "paris.")
    assert not em_check("Paris France", ["Paris"])


@pytest.mark.parametrize(
    ("response", "valid", "reason"),
    [
        (GOOD, True, "Valid sequence format"),
        ("<think>a</think><answer>x</answer>", True, "Valid sequence format"),
        ("<search>q</search>", False, "Unexpected tag <search> in state start"),  # strict
        ("<think>a</think> stray <answer>x</answer>", False, "Unexpected content 'stray'"),
        ("<think>a</think><answer>x", False, "Mismatch in answer tags: 1 opening vs 0"),
        ("<think>a</think><search>q</search>", False, "Incomplete sequence, ended in state"),
        ("<think>a</think><answer>x</answer> after", False, "Unexpected content in state end"),
    ],
)
def test_the_strict_tag_grammar(response, valid, reason):
    got, why = is_valid_sequence(PROMPT + response)
    assert got == valid and why.startswith(reason)


def test_no_assistant_marker_is_invalid():
    assert is_valid_sequence(GOOD) == (False, "Missing assistant marker")


def test_the_prompt_already_holds_two_answers():
    assert extract_solution(PROMPT) == "Beijing"  # '<answer> and </answer>', '<answer> Beijing'
    assert extract_solution(PROMPT + "<answer> Paris </answer>") == "Paris"
    assert extract_solution("<|im_start|>assistant\n<answer>Paris</answer>") is None


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        (GOOD, ["paris"], 1.0),  # right and well formed: score
        ("<answer>Paris</answer>", ["paris"], 0.8),  # right, no <think>: score - structure
        ("<think>a</think><answer>Rome</answer>", ["paris"], 0.2),  # wrong, well formed
        (GOOD.replace("Paris</answer>", "Rome</answer>"), ["paris"], 0.2 + 0.05),  # + retrieval
        ("<answer>Rome</answer>", ["paris"], 0.1),  # wrong, badly formed: final_format_score
        ("<search>q</search>", ["paris"], 0.1),  # never answered: scored as "Beijing"
        ("<search>q</search>", ["beijing"], 0.8),  # ... which can even be right
    ],
)
def test_compute_score_em_branches(response, gold, expected):
    scores = FormatScores(retrieval_score=0.05)
    assert compute_score_em(PROMPT + response, gold, scores) == pytest.approx(expected)


def test_an_answer_alone_without_the_prompt_scores_like_no_answer():
    text = "<|im_start|>assistant\n<think>a</think><answer>Paris</answer>"
    assert compute_score_em(text, ["Paris"]) == pytest.approx(0.2)  # extract_solution: None
    assert compute_score_em("<answer>Paris</answer>", ["Paris"]) == 0.0


def test_tree_grpo_prompt_cleans_the_question_like_its_data_script():
    assert tree_grpo_prompt("  who wrote it ").endswith("Question: who wrote it?\n")
    assert tree_grpo_prompt("who?").endswith("Question: who?\n")
    assert tree_grpo_prompt("q").startswith("Answer the given question. You must conduct")


# ---------------------------------------------------------------------- action grammar
@pytest.mark.parametrize(
    ("text", "kind", "content", "raw"),
    [
        ("<think>t</think>\n<search> Ada </search> then <answer>x</answer>", SEARCH, "Ada",
         "<think>t</think>\n<search> Ada </search>"),
        # Tree-GRPO cuts at the first </search> even after an answer: the answer comes first
        ("<answer>x</answer><search>q</search>", ANSWER, "x",
         "<answer>x</answer><search>q</search>"),
        ("<answer>Paris</answer> and more", ANSWER, "Paris", "<answer>Paris</answer>"),
        ("search[Ada Lovelace]", SEARCH, "Ada Lovelace", "<search>Ada Lovelace</search>"),
        ("  Answer [ the [1] thing ] ", ANSWER, "the [1] thing", "<answer>the [1] thing</answer>"),
        ("finish[Paris]", ANSWER, "Paris", "<answer>Paris</answer>"),
        ("search[]", SEARCH, "", "<search></search>"),
        ("look around", INVALID, "", "look around"),
        ("I will search[x] now", INVALID, "", "I will search[x] now"),
        ("<search>unclosed", INVALID, "", "<search>unclosed"),
    ],
)  # fmt: skip
def test_parse_action(text, kind, content, raw):
    parsed = parse_action(text)
    assert (parsed.kind, parsed.content, parsed.raw) == (kind, content, raw)


def test_information_is_search_r1s_passage_string():
    contents = ['"Evan Morris"\nEvan Morris was a lobbyist.', '"Solo"']
    assert information(contents) == (
        '\n\n<information>Doc 1(Title: "Evan Morris") Evan Morris was a lobbyist.\n'
        'Doc 2(Title: "Solo")</information>\n\n'
    )
    assert plain_title('"Evan Morris"') == "Evan Morris"
