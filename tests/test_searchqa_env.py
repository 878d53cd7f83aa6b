"""``treegym/SearchQA-v0`` played end to end: the synthetic world's questions with the expert,
the turn limit, invalid and empty actions, both action grammars, both rewards (Tree-GRPO's
format score on the exact Search-R1 dialogue text), snapshots through ``check_env``, the user's
Search-R1 files and retriever, and ``treegym collect`` with the noisy scripted expert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import treegym.envs as tge
from treegym.cli import app
from treegym.envs import GameFileError, UnknownTaskError, check_env
from treegym.envs.searchqa_actions import INVALID_ACTION_MESSAGE, NO_RESULTS, information
from treegym.envs.searchqa_env import TURN_LIMIT, SearchQAEnv
from treegym.envs.searchqa_mix import MAX_EPISODE_STEPS, searchqa_embedded_task
from treegym.envs.searchqa_questions import QUESTIONS_PER_SPLIT
from treegym.envs.searchqa_retriever import Retriever
from treegym.envs.searchqa_scoring import chat_prompt, tree_grpo_prompt
from treegym.harness import load_run

ENV = "treegym/SearchQA-v0"


def play(env: SearchQAEnv, actions: list[str]):
    """Step through ``actions``; the last step's ``(obs, reward, terminated, truncated, info)``."""
    out = None
    for action in actions:
        out = env.step(action)
    return out


def expert_episode(env: SearchQAEnv, task: str):
    _, info = env.reset(options={"task": task})
    while True:
        _, reward, terminated, truncated, info = env.step(info["expert_plan"][0])
        if terminated or truncated:
            return reward, info


@pytest.fixture(scope="module")
def env() -> SearchQAEnv:
    return tge.make(ENV)


def test_the_expert_finds_every_hop_and_answers_right(env):
    ids = [f"test-{i}" for i in range(40)]
    for task in ids:
        question = env.question(task)
        reward, info = expert_episode(env, task)
        assert reward == 1.0 and info["won"] and info["answer"] == question.golden_answers[0]
        searched = env._dialogue.seen_docs
        needed = [h for h in question.chain if searched.intersection(h.docs)]
        # the plan searches every hop the turn budget allows (4 facts may need 4 searches)
        assert len(needed) == len(question.chain) or info["searches"] == env.max_turns


def test_a_search_shows_search_r1s_information_block(env):
    env.reset(options={"task": "test-0"})
    query = env.question("test-0").chain[0].query
    obs, reward, terminated, truncated, info = env.step(f"search[{query}]")
    assert obs.startswith('\n\n<information>Doc 1(Title: "') and obs.endswith("</information>\n\n")
    assert obs.count("\nDoc ") == 2 and len(info["retrieved"]) == 3  # top-k 3
    assert query in obs.split("\n")[2]  # Doc 1 is the subject's own passage
    assert (reward, terminated, truncated) == (0.0, False, False)


def test_tags_and_react_commands_are_the_same_search(env):
    env.reset(options={"task": "test-1"})
    query = env.question("test-1").chain[0].query
    react = env.step(f"  SEARCH [{query}] ")[0]
    env.reset(options={"task": "test-1"})
    tagged = env.step(f"<think>I need {query}.</think>\n<search> {query} </search> trailing")[0]
    assert react == tagged


def test_three_searches_then_the_turn_limit_truncates_without_searching(env):
    env.reset(options={"task": "test-2"})
    play(env, ["search[a]", "search[b]", "search[c]"])
    obs, reward, terminated, truncated, info = env.step("search[d]")
    assert obs == TURN_LIMIT and info["retrieved"] == [] and truncated and not terminated
    assert reward == 0.0 and info["admissible_commands"] == [] and info["expert_plan"] == []


def test_max_episode_steps_only_shortens_episodes():
    assert SearchQAEnv(max_episode_steps=20).max_episode_steps == 4  # collect's default cap
    short = SearchQAEnv(max_episode_steps=2)
    short.reset(options={"task": "test-2"})
    assert not short.step("search[a]")[3]
    obs, _, _, truncated, info = short.step("search[b]")
    assert obs == TURN_LIMIT and truncated and info["retrieved"] == []


def test_invalid_and_empty_actions_have_defined_answers(env):
    env.reset(options={"task": "test-3"})
    obs, _, terminated, _, info = env.step("xyzzy")
    assert obs == INVALID_ACTION_MESSAGE and not terminated and info["moves"] == 1
    obs, *_ = env.step("<search>   </search>")
    assert obs == information([]) and NO_RESULTS in obs
    obs, *_ = env.step("search[the of and]")  # only stop words: nothing to match
    assert obs == information([])
    env.reset(options={"task": "test-3"})
    _, reward, terminated, _, info = env.step("answer[]")
    assert terminated and reward == 0.0 and info["answer"] == "" and info["lost"]


def test_exact_match_uses_squad_normalisation(env):
    question = env.question("test-4")
    gold = question.golden_answers[0]
    env.reset(options={"task": "test-4"})
    _, reward, *_ = env.step(f"answer[  The {gold.upper()}!! ]")
    assert reward == 1.0
    env.reset(options={"task": "test-4"})
    _, reward, _, _, info = env.step(f"answer[{gold} extra]")
    assert reward == 0.0 and info["lost"]


def test_format_reward_reads_the_search_r1_dialogue_text():
    env = SearchQAEnv(reward="em_format", prompt="search-r1")
    q = env.question("test-5")
    first, _ = env.reset(options={"task": "test-5"})
    assert first == tree_grpo_prompt(q.question)
    turn1 = f"<think>Search first.</think>\n<search>{q.chain[0].query}</search>"
    info1 = env.step(turn1 + "\nignored after the closing tag")[0]
    turn2 = f"<think>Known now.</think>\n<answer>{q.golden_answers[0]}</answer>"
    _, reward, terminated, _, _ = env.step(turn2)
    from treegym.envs.searchqa_dialogue import solution_text

    assert solution_text(env._dialogue) == chat_prompt(first) + turn1 + info1 + turn2
    assert terminated and reward == 1.0  # valid format, exact match
    env.reset(options={"task": "test-5"})
    _, reward, *_ = env.step(f"answer[{q.golden_answers[0]}]")
    assert reward == pytest.approx(0.8)  # right, but no <think>: 1 - structure_format_score
    env.reset(options={"task": "test-5"})
    _, reward, *_ = env.step("<think>Guess.</think><answer>surely not this</answer>")
    assert reward == pytest.approx(0.2)  # wrong, well formed
    env.reset(options={"task": "test-5"})
    _, reward, *_ = env.step("answer[surely not this]")
    assert reward == pytest.approx(0.1)  # wrong, badly formed: final_format_score
    env.reset(options={"task": "test-5"})
    *_, (_, reward, _, truncated, _) = [env.step("search[x]") for _ in range(4)]
    # never answered: Tree-GRPO's extract_solution takes the prompt's example "Beijing"
    assert truncated and reward == pytest.approx(0.1)


def test_check_env_passes_with_native_snapshots():
    report = check_env(ENV)
    assert report.passed, str(report)
    env = tge.make(ENV)
    env.reset(seed=1)
    assert env.snapshot().is_native


def test_collect_with_the_noisy_scripted_expert(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        ["collect", "--env", ENV, "--tasks", "test-{seed}", "--n-tasks", "2", "--policy",
         "scripted:expert:0.3", "--workers", "0", "--quiet", "--out", str(out)],
        terminal_width=200,
    )  # fmt: skip
    assert res.exit_code == 0, res.stdout + res.stderr
    run = load_run(out)
    assert run.complete and sorted(run.task_ids) == ["test-0", "test-1"]
    assert set(run.samples["reward"]) <= {0.0, 1.0} and run.samples["reward"].max() == 1.0


def test_the_embedded_mix_function_names_questions_of_the_default_world(env):
    ids = env._questions[0]
    assert {s: sum(i.startswith(f"{s}-") for i in ids) for s in QUESTIONS_PER_SPLIT} == (
        QUESTIONS_PER_SPLIT
    )
    for seed, split in [(0, "train"), (9_999, "train"), (10_000, "test"), (29_999, "dev")]:
        task = searchqa_embedded_task(seed)
        assert task.spec.startswith(f"{split}-") and env.question(task.spec).id == task.spec
    assert env.max_episode_steps == MAX_EPISODE_STEPS
    with pytest.raises(ValueError, match="seed 30000 is in none"):
        searchqa_embedded_task(30_000)


# ---------------------------------------------------------------------- the user's files
@pytest.fixture
def files(tmp_path, monkeypatch) -> tuple[Path, Path]:
    monkeypatch.setenv("TREEGYM_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.jsonl"
    passages = [
        '"The Beatles"\nThe Beatles were an English rock band formed in Liverpool in 1960.',
        '"Liverpool"\nLiverpool is a city in Merseyside, England.',
        '"Abbey Road"\nAbbey Road is the eleventh studio album by the Beatles.',
    ]
    corpus.write_text("".join(json.dumps({"id": f"w{i}", "contents": c}) + "\n"
                              for i, c in enumerate(passages)))  # fmt: skip
    questions = tmp_path / "questions.jsonl"
    rows = [{"id": "nq-1", "question": "which band formed in liverpool in 1960",
             "golden_answers": ["The Beatles", "Beatles"]},
            {"question": "which city were the beatles formed in?",
             "golden_answers": "Liverpool"}]  # fmt: skip
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return corpus, questions


def test_search_r1_files_play(files):
    corpus, questions = files
    env = tge.make(ENV, corpus=str(corpus), questions=str(questions))
    obs, info = env.reset(options={"task": "nq-1"})
    assert "which band formed in liverpool in 1960" in obs
    assert info["expert_plan"] == ["search[which band formed in liverpool in 1960]",
                                   "answer[The Beatles]"]  # fmt: skip
    obs, *_ = env.step("search[band liverpool 1960]")
    assert obs.startswith('\n\n<information>Doc 1(Title: "The Beatles") The Beatles were')
    _, reward, terminated, _, info = env.step("answer[beatles]")
    assert terminated and reward == 1.0 and info["task_id"] == "nq-1"
    assert env.question(1).golden_answers == ("Liverpool",) and env.question("1").id == "1"
    with pytest.raises(UnknownTaskError, match=r"nq-1.*0\.\.1"):
        env.reset(options={"task": "nq-7"})
    assert check_env(env).passed


def test_question_file_without_answers_is_refused_at_construction(files):
    corpus, questions = files
    questions.write_text('{"question": "q1?", "golden_answers": ["a"]}\n{"question": "q2?"}\n')
    with pytest.raises(GameFileError, match=r"questions.jsonl line 2 has no answers"):
        SearchQAEnv(corpus=str(corpus), questions=str(questions))


def test_passages_are_cut_to_max_passage_words(files):
    corpus, questions = files
    env = SearchQAEnv(corpus=str(corpus), questions=str(questions), max_passage_words=3, topk=1)
    env.reset(options={"task": 0})
    obs, *_ = env.step("search[Liverpool Merseyside]")
    assert obs == '\n\n<information>Doc 1(Title: "Liverpool") Liverpool is a</information>\n\n'


class TitleRetriever(Retriever):
    """A plugged retriever for the test: passages whose title is the query, in corpus order."""

    def __init__(self, store, folder):
        self.titles = [store[i].contents.split("\n")[0].strip('"') for i in range(len(store))]

    @property
    def identity(self) -> str:
        return "title-match"

    def search(self, query: str, k: int) -> list[int]:
        return [i for i, t in enumerate(self.titles) if t == query][:k]


def test_a_plugged_retriever_replaces_bm25(files):
    corpus, questions = files
    kwargs = {"corpus": str(corpus), "questions": str(questions)}
    plugged = SearchQAEnv(**kwargs, retriever="tests.test_searchqa_env:TitleRetriever")
    plugged.reset(options={"task": 0})
    assert plugged.step("search[Abbey Road]")[4]["retrieved"] == ["w2"]
    assert plugged.step("search[abbey road album]")[4]["retrieved"] == []  # BM25 would match
    assert plugged.fingerprint != SearchQAEnv(**kwargs).fingerprint
    with pytest.raises(ValueError, match="cannot import"):
        SearchQAEnv(**kwargs, retriever="no_such_module:factory")


def test_bad_arguments_are_refused():
    for kwargs, message in [
        ({"topk": 0}, "topk must be a positive int"),
        ({"reward": "f1"}, "reward must be one of em, em_format"),
        ({"corpus": "c.jsonl"}, "give both corpus= and questions="),
        ({"split": "validation"}, "split must be one of train, dev, test"),
        ({"format_scores": {"structure_format_score": "high"}}, "must be a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            SearchQAEnv(**kwargs)
