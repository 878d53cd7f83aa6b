"""The retriever interface of SearchQA, and how a user's retriever is plugged in.

The built-in retriever is BM25 (:mod:`.searchqa_bm25`). Any other — a dense retriever over E5
embeddings with a FAISS index, say — implements :class:`Retriever` and is named by the env's
``retriever="package.module:factory"`` argument; ``factory(store, index_folder)`` builds it
from the corpus (:class:`~.searchqa_corpus.PassageStore`) and the folder where treegym keeps
that corpus's offsets, so it can cache its own files next to them. A retriever must be
deterministic (the same query always ranks the same passages: snapshots replay searches) and
should share what it loads between the envs of a process (the factory is called once per
corpus and process).
"""

from __future__ import annotations

import abc
import importlib
from pathlib import Path
from typing import Any


class Retriever(abc.ABC):
    """Ranks corpus passages for a query."""

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """What makes two retrievers rank alike (method, parameters, index version); it is
        part of the env's fingerprint, so snapshots never restore across rankings."""

    @abc.abstractmethod
    def search(self, query: str, k: int) -> list[int]:
        """Indices of the ``k`` best passages for ``query``, best first (fewer when fewer
        match; none for a query with nothing to match). Deterministic."""


def load_factory(spec: str) -> Any:
    """The callable a ``"module:factory"`` spec names, or a clear error."""
    module, colon, name = spec.partition(":")
    if not colon or not module or not name:
        raise ValueError(f"retriever must be 'bm25' or 'package.module:factory', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"retriever {spec!r}: cannot import {module}: {exc}") from None
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"retriever {spec!r}: {module} has no {name}")
    return obj


def plugged_retriever(spec: str, store: Any, index_folder: Path) -> Retriever:
    """Build the user's retriever named by ``spec`` for a corpus."""
    retriever = load_factory(spec)(store, index_folder)
    if not isinstance(retriever, Retriever):
        raise TypeError(
            f"retriever factory {spec} returned a {type(retriever).__name__}, not a "
            "treegym.envs.searchqa_retriever.Retriever"
        )
    return retriever
