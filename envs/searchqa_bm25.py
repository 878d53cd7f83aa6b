"""BM25 over a corpus with ``bm25s``: built once, then memory-mapped by every env worker.

:func:`build_bm25` tokenizes the corpus as it streams past (bm25s's ``Tokenizer``: lower case,
words of two or more letters or digits, English stop words dropped, no stemming), has bm25s
compute the BM25 score matrix (Lucene's variant, ``k1=1.5, b=0.75``), and saves it. Everything
a search reads is a ``.npy`` file opened with ``mmap_mode="r"``: bm25s's sparse score arrays and
the vocabulary, stored as sorted UTF-8 words with their ids (:class:`MmapVocab`; bm25s keeps its
vocabulary in a dict, which for a Wikipedia-sized corpus would be a gigabyte per process). So a
worker's memory does not grow with the corpus: its pages are the operating system's page cache,
shared by all workers.

Ranking is deterministic: scores are bm25s's, ties are broken by corpus order, passages with a
zero score (no query word) are never returned.
"""

from __future__ import annotations

import bisect
import json
import re
from array import array
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN
from bm25s.tokenization import Tokenizer

from .searchqa_retriever import Retriever

BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene"}
SPLITTER = r"(?u)\b\w\w+\b"  # bm25s's default word pattern
VOCAB_WORDS, VOCAB_OFFSETS, VOCAB_IDS = "vocab.words.npy", "vocab.offsets.npy", "vocab.ids.npy"
SEARCH_CACHE = 4096
"""Searches remembered per process (retrieval is a pure function of the query; trees repeat
their trunk's queries in every branch)."""

_WORDS = re.compile(SPLITTER)
_STOPWORDS = frozenset(STOPWORDS_EN)


def build_bm25(contents: Iterable[str], folder: Path) -> dict[str, int]:
    """Index ``contents`` (one string per passage, in corpus order) into ``folder``; returns
    counts for the manifest (``passages``, ``tokens``, ``vocabulary``)."""
    tokenizer = Tokenizer(lower=True, splitter=SPLITTER, stopwords=STOPWORDS_EN, stemmer=None)
    ids = [array("i", doc) for doc in tokenizer.streaming_tokenize(contents)]
    vocab = tokenizer.get_vocab_dict()
    model = bm25s.BM25(**BM25_PARAMS, backend="numpy", csc_backend="numpy")
    model.index((ids, vocab), show_progress=False)
    model.vocab_dict = {}  # saved below as memory-mappable arrays instead of JSON
    model.save(folder, show_progress=False)
    _save_vocab(folder, vocab)
    return {"passages": len(ids), "tokens": sum(map(len, ids)), "vocabulary": len(vocab)}


def _save_vocab(folder: Path, vocab: dict[str, int]) -> None:
    words = sorted(w.encode("utf-8") for w in vocab)
    ends = np.cumsum([len(w) for w in words], dtype=np.int64)
    np.save(folder / VOCAB_WORDS, np.frombuffer(b"".join(words), dtype=np.uint8))
    np.save(folder / VOCAB_OFFSETS, np.concatenate([[0], ends]).astype(np.int64))
    np.save(folder / VOCAB_IDS, np.array([vocab[w.decode("utf-8")] for w in words], np.int32))


class MmapVocab:
    """Word → id through sorted words on disk (binary search over the memory map)."""

    def __init__(self, folder: Path) -> None:
        self._words = np.load(folder / VOCAB_WORDS, mmap_mode="r")
        self._offsets = np.load(folder / VOCAB_OFFSETS, mmap_mode="r")
        self._ids = np.load(folder / VOCAB_IDS, mmap_mode="r")

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> bytes:
        return self._words[self._offsets[i] : self._offsets[i + 1]].tobytes()

    def get(self, word: str) -> int | None:
        key = word.encode("utf-8")
        i = bisect.bisect_left(self, key)
        return int(self._ids[i]) if i < len(self) and self[i] == key else None


def query_words(query: str) -> list[str]:
    """The words of ``query`` that BM25 scores (the build's tokenizer rules)."""
    return [w for w in _WORDS.findall(query.lower()) if w not in _STOPWORDS]


class BM25Retriever(Retriever):
    """Searches a folder made by :func:`build_bm25` (memory-mapped, nothing copied)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._model = bm25s.BM25.load(folder, mmap=True, load_vocab=False)
        self._vocab = MmapVocab(folder)
        params = json.loads((folder / "params.index.json").read_text())
        self._identity = f"bm25s-{params['method']}-k1={params['k1']}-b={params['b']}"
        self._cached = lru_cache(maxsize=SEARCH_CACHE)(self._search)

    @property
    def identity(self) -> str:
        return self._identity

    def token_ids(self, query: str) -> list[int]:
        return [i for i in map(self._vocab.get, query_words(query)) if i is not None]

    def search(self, query: str, k: int) -> list[int]:
        return list(self._cached(query, k))

    def _search(self, query: str, k: int) -> tuple[int, ...]:
        ids = self.token_ids(query)
        if not ids or k <= 0:
            return ()
        return tuple(top_k(self._model.get_scores_from_ids(ids), k))


def top_k(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` highest positive scores, ties broken by index (deterministic)."""
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > k:
        kth = np.partition(scores[candidates], len(candidates) - k)[len(candidates) - k]
        candidates = candidates[scores[candidates] >= kth]  # every tie at the boundary
    order = np.lexsort((candidates, -scores[candidates]))
    return [int(i) for i in candidates[order][:k]]
