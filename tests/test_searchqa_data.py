"""SearchQA's data: synthetic worlds (deterministic, consistent, each fact in the passages the
generator says, distractors, held-out splits over other entities) and question files in
Search-R1's JSONL and Tree-GRPO's parquet layouts, with bad rows named."""

from __future__ import annotations

import collections
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from treegym.envs import GameFileError
from treegym.envs.searchqa_data import load_questions
from treegym.envs.searchqa_questions import generate_questions, split_starts
from treegym.envs.searchqa_world import RELATIONS, WorldSpec, generate_world
from treegym.envs.searchqa_world_files import world_folder


@pytest.fixture(scope="module")
def world():
    return generate_world(WorldSpec(seed=3, people=120))


def test_same_spec_same_world_other_seed_other_world(world):
    again = generate_world(WorldSpec(seed=3, people=120))
    assert again.passages == world.passages and again.facts == world.facts
    other = generate_world(WorldSpec(seed=4, people=120))
    assert other.passages != world.passages
    assert generate_questions(again, "test") == generate_questions(world, "test")


def test_the_facts_are_consistent(world):
    f, kinds = world.facts, {k: e.kind for k, e in world.entities.items()}
    for (subject, relation), value in f.items():
        subject_kind, object_kind = RELATIONS[relation]
        assert kinds[subject] == subject_kind
        assert isinstance(value, int) if object_kind == "year" else kinds[value] == object_kind
    for e in world.of_kind("country"):
        assert f[(f[(e.key, "capital")], "country")] == e.key
    for e in world.of_kind("org"):
        assert f[(e.key, "founded_year")] >= f[(f[(e.key, "founder")], "birth_year")] + 20
    for e in world.of_kind("work"):
        assert f[(e.key, "release_year")] >= f[(f[(e.key, "creator")], "birth_year")] + 18
    assert len({e.name for e in world.entities.values()}) == len(world.entities)


def test_each_fact_is_written_in_the_passages_that_hold_it(world):
    text = dict(world.passages)
    for (subject, relation), docs in world.fact_docs.items():
        value = world.name(world.facts[(subject, relation)])
        assert docs and all(value in text[d] for d in docs)
        assert all(world.entities[subject].name in text[d] for d in docs)
        if relation not in ("country", "capital"):
            assert docs == [world.entity_doc[subject]]  # exactly one passage
    assert set(world.fact_docs) == set(world.facts)


def test_distractor_passages_mention_entities_without_facts(world):
    stated = {d for docs in world.fact_docs.values() for d in docs}
    distractors = [c for d, c in world.passages if d not in stated]
    assert any("(surname)" in c for c in distractors) and any("featured" in c for c in distractors)
    names = [e.name for e in world.of_kind("person")]
    assert all(any(n in c for n in names) for c in distractors)


def test_questions_carry_evidence_and_splits_start_from_other_entities(world):
    text = dict(world.passages)
    starts = {s: set(split_starts(world, s)) for s in ("train", "dev", "test")}
    assert not starts["train"] & starts["test"] and not starts["dev"] & starts["test"]
    questions = generate_questions(world, "train")
    kinds = collections.Counter((q.type, q.hops) for q in questions)
    assert {h for _, h in kinds} == {2, 3, 4} and {t for t, _ in kinds} == {"bridge", "comparison"}
    for q in questions:
        assert len(q.chain) == q.hops
        assert all(h.query in text[d] for h in q.chain for d in h.docs)
        if q.type == "bridge":
            assert q.golden_answers[0] in text[q.chain[-1].docs[0]]  # the last fact holds it
        else:  # one of the two compared entities (the subjects of the year facts), or yes/no
            assert q.golden_answers[0] in {h.query for h in q.chain} | {"yes", "no"}
    test_names = {world.entities[k].name for k in starts["test"]}
    assert all(q.chain[0].query in test_names for q in generate_questions(world, "test"))


def test_world_files_are_search_r1_files(tmp_path):
    folder = world_folder(people=40, seed=1, cache=tmp_path)
    assert world_folder(people=40, seed=1, cache=tmp_path) == folder  # made once
    first = json.loads((folder / "corpus.jsonl").open().readline())
    assert set(first) == {"id", "contents"} and first["contents"].startswith('"')
    questions = load_questions(folder / "test.jsonl")
    assert questions[0].id == "test-0" and questions[0].chain and questions[0].golden_answers
    meta = json.loads((folder / "world.json").read_text())
    assert meta["questions"]["test"] == len(questions) and meta["people"] == 40


def test_questions_from_search_r1_jsonl(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "a", "question": "who?", "golden_answers": ["x", "y"]}\n\n'
                    '{"question": "what?", "golden_answers": "z"}\n')  # fmt: skip
    a, b = load_questions(path)
    assert (a.id, a.golden_answers) == ("a", ("x", "y")) and (b.id, b.golden_answers) == (
        "1",
        ("z",),
    )


def test_questions_from_tree_grpo_parquet(tmp_path):
    path = tmp_path / "test.parquet"
    truth = {"style": "rule", "ground_truth": {"target": ["Ada", "A. L."]}}
    rows = [{"data_source": "hotpotqa", "question": "who?", "reward_model": truth,
             "prompt": [{"role": "user", "content": "Answer the question. ..."}]}]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    (q,) = load_questions(path)
    assert q.golden_answers == ("Ada", "A. L.") and q.type == "hotpotqa" and q.id == "0"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "ok?", "golden_answers": ["a"]}\n{"question": "q?"}\n',
         'line 2 has no answers: give "golden_answers"'),
        ('{"question": "q?", "golden_answers": []}\n', "line 1 has no answers"),
        ('{"golden_answers": ["a"]}\n', 'line 1 has no "question" text'),
        ('{"question": "q?", "golden_answers": [1]}\n', "every golden answer must be a string"),
        ('{"question": "q?", "golden_answers": ["a"]}\n{broken\n', "line 2 is not JSON"),
        ("\n", "has no questions"),
    ],
)  # fmt: skip
def test_bad_question_files_name_the_row(tmp_path, content, message):
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(GameFileError, match=message):
        load_questions(path)


def test_parquet_without_answers_names_the_row(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "a?"}, {"question": "b?"}]), path)
    with pytest.raises(GameFileError, match=r"train\.parquet row 0 has no answers"):
        load_questions(path)
    with pytest.raises(GameFileError, match="does not exist"):
        load_questions(tmp_path / "missing.parquet")
