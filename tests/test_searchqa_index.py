"""SearchQA's corpus and BM25 index: bm25s's own ranking reproduced through the memory-mapped
files, deterministic ties, one build per corpus (also when two processes race for it), reuse by
a new process, a new index when the file changes, and bad corpora named by line."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import bm25s
import numpy as np
import pytest

from treegym.envs import GameFileError
from treegym.envs.searchqa_bm25 import MmapVocab, query_words, top_k
from treegym.envs.searchqa_index import (
    MANIFEST,
    check_build_memory,
    given_index,
    index_folder,
    open_corpus,
)

TEXTS = [
    '"Alpha"\nAlpha is a river in the north of Korland.',
    '"Beta"\nBeta is a city on the Alpha river, the capital of Korland.',
    '"Gamma"\nGamma was born in Beta in 1950 and wrote about rivers and rivers.',
    '"Delta"\nDelta is a city in Velmark.',
    '"Delta twin"\nDelta is a city in Velmark.',
    '"Empty"\n',
]


def write_corpus(path: Path, texts: list[str] = TEXTS) -> Path:
    path.write_text("".join(json.dumps({"id": f"d{i}", "contents": t}) + "\n"
                            for i, t in enumerate(texts)))  # fmt: skip
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus.jsonl")


def test_bm25_ranks_as_bm25s_does(corpus, tmp_path):
    opened = open_corpus(corpus, cache=tmp_path)
    tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
    reference = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    reference.index(tokenizer.tokenize(TEXTS, show_progress=False), show_progress=False)
    for query in ["Alpha river", "city Velmark", "born 1950 rivers", "korland capital"]:
        ids = tokenizer.tokenize([query], update_vocab=False, show_progress=False)
        docs, scores = reference.retrieve(ids, k=2, show_progress=False)
        got = opened.retriever.search(query, 2)
        expected = [int(d) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
        assert got == expected, query  # best first (these queries have no ties)


def test_query_words_follow_the_index_tokenizer():
    assert query_words("The Alpha-river, in 1950: a b") == ["alpha", "river", "1950"]


def test_top_k_keeps_every_tie_at_the_boundary_then_orders_by_index():
    scores = np.array([0.5, 2.0, 0.5, 0.0, 2.0, 0.5], dtype=np.float32)
    assert top_k(scores, 3) == [1, 4, 0] and top_k(scores, 2) == [1, 4]
    assert top_k(scores, 10) == [1, 4, 0, 2, 5] and top_k(np.zeros(3), 2) == []


def test_ties_go_to_corpus_order_and_unmatched_passages_never_show(corpus, tmp_path):
    search = open_corpus(corpus, cache=tmp_path).retriever.search
    assert search("Velmark", 3) == [3, 4]  # identical passages: the earlier one first
    assert search("Velmark", 1) == [3]
    assert search("the of and", 3) == [] and search("zzzunknown", 3) == [] and search("", 3) == []
    assert search("Gamma", 5) == [2]


def test_the_index_is_memory_mapped_and_passages_read_by_offset(corpus, tmp_path):
    opened = open_corpus(corpus, cache=tmp_path)
    assert isinstance(opened.retriever._model.scores["data"], np.memmap)
    assert len(opened) == len(TEXTS)
    assert opened.store[2].id == "d2" and opened.store[2].contents == TEXTS[2]
    with pytest.raises(IndexError, match="passage 6 is not in the corpus"):
        opened.store[6]
    vocab = MmapVocab(opened.folder)
    tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
    tokenizer.tokenize(TEXTS, show_progress=False)
    assert {w: vocab.get(w) for w in tokenizer.word_to_id} == tokenizer.word_to_id
    assert vocab.get("nonexistent") is None


def test_one_build_per_corpus_and_process(corpus, tmp_path):
    first = open_corpus(corpus, cache=tmp_path)
    assert open_corpus(corpus, cache=tmp_path) is first
    manifest = json.loads((first.folder / MANIFEST).read_text())
    assert manifest["passages"] == len(TEXTS) and len(manifest["corpus_sha256"]) == 64
    write_corpus(corpus, [*TEXTS, '"Epsilon"\nEpsilon is new.'])
    changed = open_corpus(corpus, cache=tmp_path)
    assert changed.folder != first.folder and changed.retriever.search("Epsilon", 1) == [6]


def _folder(args: tuple[str, str]) -> str:
    corpus, cache = args
    return str(index_folder(Path(corpus), Path(cache)))


def test_racing_processes_build_once_and_a_new_process_reuses_it(tmp_path):
    texts = [f'"T{i}"\nword{i % 97} text {i}' for i in range(20_000)]
    corpus = write_corpus(tmp_path / "big.jsonl", texts)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        folders = pool.map(_folder, [(str(corpus), str(tmp_path))] * 2)
    assert folders[0] == folders[1]  # without the lock the second rename onto it fails
    built = (Path(folders[0]) / MANIFEST).stat().st_mtime_ns
    with ctx.Pool(1) as pool:
        assert pool.map(_folder, [(str(corpus), str(tmp_path))]) == folders[:1]
    assert (Path(folders[0]) / MANIFEST).stat().st_mtime_ns == built
    assert not [p for p in (tmp_path / "searchqa" / "index").iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": 0, "contents": "ok"}', "{not json"], "line 2 is not a JSON object"),
        (['{"id": 0, "contents": "ok"}', "", "[1, 2]"], "line 3 is a JSON list, not an object"),
        (['{"id": 0, "text": "no contents"}'], 'line 1 has no "contents"'),
        (['{"id": 0, "contents": 5}'], 'line 1 has a int "contents"'),
        (['{"id": [0], "contents": "x"}'], '"id" must be a string or an integer'),
        (["", "   "], "has no passages"),
    ],
)
def test_a_bad_corpus_line_is_named(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(GameFileError, match=message) as err:
        open_corpus(path, cache=tmp_path)
    assert str(path) in str(err.value)
    assert not [p for p in (tmp_path / "searchqa" / "index").iterdir() if p.is_dir()]


def test_missing_corpus_and_foreign_index(tmp_path, corpus):
    with pytest.raises(GameFileError, match=r"cannot read corpus .*missing\.jsonl"):
        open_corpus(tmp_path / "missing.jsonl", cache=tmp_path)
    folder = open_corpus(corpus, cache=tmp_path).folder
    assert given_index(corpus, folder) == folder
    other = write_corpus(tmp_path / "other.jsonl", TEXTS[:2])
    with pytest.raises(GameFileError, match=r"was built from a .*-byte corpus"):
        open_corpus(other, index=folder)


def test_a_damaged_index_is_named_not_a_crash(corpus, tmp_path):
    folder = index_folder(corpus, tmp_path)
    (folder / "vocab.ids.npy").unlink()
    with pytest.raises(GameFileError, match=r"index .* is incomplete or damaged .*delete"):
        open_corpus(corpus, cache=tmp_path)


def test_a_corpus_too_large_to_index_here_is_refused_with_the_numbers():
    check_build_memory(Path("c.jsonl"), 2**30, None)  # unknown memory: no refusal
    check_build_memory(Path("c.jsonl"), 2**20, 2**30)
    with pytest.raises(GameFileError, match=r"c.jsonl \(4.0 GiB\) needs about .* GiB of "
                                            r"memory to index, 2.0 GiB are available"):  # fmt: skip
        check_build_memory(Path("c.jsonl"), 4 * 2**30, 2 * 2**30)
