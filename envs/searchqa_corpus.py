"""SearchQA corpora: Search-R1's JSONL format, read line by line, passages fetched by offset.

A corpus is a JSONL file with one passage per line, ``{"id": ..., "contents": "..."}``
(Search-R1's ``wiki-18.jsonl`` format: the first line of ``contents`` is the quoted title).
:func:`scan_corpus` reads it once, streaming, checking every line (a bad line is an error that
names the file and line number) and recording where each passage starts and ends; the index
build (:mod:`.searchqa_index`) stores those offsets beside the index. A :class:`PassageStore`
then reads a passage with one ``pread`` at its offsets: the corpus is never loaded into memory,
and every env worker reading it shares the operating system's page cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import GameFileError

OFFSETS_FILE = "offsets.npy"


@dataclass(frozen=True)
class ScannedPassage:
    """One line of a corpus file as the index build sees it."""

    index: int
    start: int
    end: int
    contents: str


class CorpusScan:
    """Iterates a corpus file's passages (``for p in scan``), checking each line; afterwards
    ``sha256`` is the file's hash (computed on the way, so the file is read once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sha256 = ""

    def __iter__(self) -> Iterator[ScannedPassage]:
        digest = hashlib.sha256()
        offset, index = 0, 0
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise GameFileError(f"cannot read corpus {self.path}: {exc.strerror}") from None
        with handle:
            for lineno, line in enumerate(handle, start=1):
                digest.update(line)
                start, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                yield ScannedPassage(index, start, offset, _contents(self.path, lineno, line))
                index += 1
        if index == 0:
            raise GameFileError(f"corpus {self.path} has no passages (an empty file)")
        self.sha256 = digest.hexdigest()


def _contents(path: Path, lineno: int, line: bytes) -> str:
    """The ``contents`` of one corpus line, or a :class:`GameFileError` naming the line."""
    where = f"corpus {path} line {lineno}"
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GameFileError(f"{where} is not a JSON object: {exc}") from None
    if not isinstance(record, dict):
        raise GameFileError(f"{where} is a JSON {type(record).__name__}, not an object")
    contents = record.get("contents")
    if not isinstance(contents, str):
        found = "no" if contents is None else f"a {type(contents).__name__}"
        raise GameFileError(
            f'{where} has {found} "contents"; Search-R1 corpora have {{"id", "contents": str}}'
        )
    if "id" in record and not isinstance(record["id"], (str, int)):
        raise GameFileError(f'{where}: "id" must be a string or an integer')
    return contents


def scan_corpus(path: str | os.PathLike[str]) -> CorpusScan:
    return CorpusScan(Path(path))


@dataclass(frozen=True)
class Passage:
    """One corpus passage: its ``id`` (the file's, or its line index) and ``contents``."""

    index: int
    id: str
    contents: str


class PassageStore:
    """Random access to a corpus file's passages through the offsets the index build saved
    (``offsets.npy``, memory-mapped). One store serves every env of a process for its
    lifetime (:func:`~.searchqa_index.open_corpus`), so its file stays open."""

    def __init__(self, corpus: Path, index_folder: Path) -> None:
        self.path = corpus
        self._offsets = np.load(index_folder / OFFSETS_FILE, mmap_mode="r")
        self._fd: int | None = None

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, i: int) -> Passage:
        if not 0 <= i < len(self._offsets):
            raise IndexError(f"passage {i} is not in the corpus ({len(self)} passages)")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        start, end = (int(x) for x in self._offsets[i])
        record = json.loads(os.pread(self._fd, end - start, start))
        return Passage(i, str(record.get("id", i)), record["contents"])


def save_offsets(folder: Path, spans: list[tuple[int, int]] | np.ndarray) -> None:
    np.save(folder / OFFSETS_FILE, np.asarray(spans, dtype=np.int64).reshape(-1, 2))
