"""SearchQA questions: the record type, Search-R1 / Tree-GRPO files, the synthetic world on disk.

Question files are what Search-R1 and Tree-GRPO users already have:

* JSONL, one object per line with ``question`` and ``golden_answers`` (a list, or one string) —
  FlashRAG's and Search-R1's raw format; optional ``id``;
* parquet as Search-R1's / Tree-GRPO's data scripts write it (``train.parquet``,
  ``test.parquet``): ``question`` and ``golden_answers`` columns, or, when ``golden_answers`` is
  missing, ``reward_model.ground_truth.target`` (what their reward functions read).

A row without a question or without answers is an error naming the file and the row (line).

Synthetic worlds are written in the same formats (:mod:`.searchqa_world_files`), with extra
fields per question: ``type``, ``hops``, and ``chain`` (per hop, the query that finds its
evidence and the ids of the passages holding it), from which the env's expert plan comes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GameFileError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Hop:
    """One fact a question needs: the search that finds it and the passages that state it."""

    query: str
    docs: tuple[str, ...]


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    golden_answers: tuple[str, ...]
    type: str = ""
    hops: int = 0
    chain: tuple[Hop, ...] = ()

    def to_json(self) -> dict[str, Any]:
        chain = [{"query": h.query, "docs": list(h.docs)} for h in self.chain]
        return {"id": self.id, "question": self.question,
                "golden_answers": list(self.golden_answers), "type": self.type,
                "hops": self.hops, "chain": chain}  # fmt: skip


def load_questions(path: str | os.PathLike[str]) -> list[Question]:
    """The questions of a JSONL or parquet file (module docstring), in file order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GameFileError(f"question file {path} does not exist (a .jsonl or .parquet file)")
    rows = _parquet_rows(path) if path.suffix == ".parquet" else _jsonl_rows(path)
    questions = [_question(path, where, i, row) for i, (where, row) in enumerate(rows)]
    if not questions:
        raise GameFileError(f"question file {path} has no questions")
    return questions


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open("rb") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield f"line {lineno}", json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise GameFileError(
                    f"question file {path} line {lineno} is not JSON: {exc}"
                ) from None


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise GameFileError(f"question file {path} is not readable parquet: {exc}") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"row {i}", row


def _question(path: Path, where: str, index: int, row: Any) -> Question:
    here = f"question file {path} {where}"
    if not isinstance(row, Mapping):
        raise GameFileError(f"{here} is a {type(row).__name__}, not an object")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise GameFileError(f'{here} has no "question" text')
    answers = row.get("golden_answers")
    if answers is None:
        target = ((row.get("reward_model") or {}).get("ground_truth") or {}).get("target")
        answers = target
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, (list, tuple)) or not answers:
        raise GameFileError(
            f'{here} has no answers: give "golden_answers" (Search-R1) or '
            "reward_model.ground_truth.target (Tree-GRPO)"
        )
    if not all(isinstance(a, str) for a in answers):
        raise GameFileError(f"{here}: every golden answer must be a string, got {answers!r}")
    chain = tuple(Hop(h["query"], tuple(h["docs"])) for h in row.get("chain") or ())
    return Question(
        id=str(row.get("id", index)), question=question, golden_answers=tuple(answers),
        type=str(row.get("type") or row.get("data_source") or ""), hops=int(row.get("hops") or 0),
        chain=chain,
    )  # fmt: skip


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
