"""SearchQA's index cache: each corpus is indexed once, on disk, and opened once per process.

The index of a corpus file lives in ``$TREEGYM_CACHE/searchqa/index/<key>/`` (``key``: the
file's resolved path, size and modification time, the index format and BM25 parameters), with
``manifest.json`` (passages, tokens, the corpus's SHA-256, build seconds), the passage offsets
and the BM25 arrays. The first env to need it builds it under a file lock, into a temporary
folder renamed into place when complete, so concurrent workers wait for one build instead of
racing, and a crash leaves no half-written index behind. :func:`open_corpus` keeps what it
opened per process: every env and fork in a worker shares one memory-mapped index.

Building needs memory for the whole corpus's token ids and score matrix (searching does not);
a corpus that would not fit is refused before the build starts, with the numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import GameFileError
from .searchqa_bm25 import BM25_PARAMS, BM25Retriever, build_bm25
from .searchqa_cache import build_once, searchqa_cache
from .searchqa_corpus import PassageStore, save_offsets, scan_corpus
from .searchqa_retriever import Retriever, plugged_retriever

INDEX_VERSION = 1
MANIFEST = "manifest.json"
BUILD_BYTES_PER_CORPUS_BYTE = 6
"""Peak build memory per byte of corpus file: ``bench/searchqa_retrieval.py`` measured 3.4
(560 MB for a 164 MB, 1M-passage corpus: token ids, bm25s's score arrays and their sorted
copy); 6 leaves room for corpora with more distinct words per byte."""


@dataclass(frozen=True)
class OpenCorpus:
    """A corpus ready to search: its passages, its retriever and its identity."""

    path: Path
    folder: Path
    store: PassageStore
    retriever: Retriever
    sha256: str

    def __len__(self) -> int:
        return len(self.store)


_OPEN: dict[tuple[str, str], OpenCorpus] = {}


def open_corpus(
    corpus: str | os.PathLike[str],
    retriever: str = "bm25",
    cache: Path | None = None,
    index: str | os.PathLike[str] | None = None,
) -> OpenCorpus:
    """The corpus file ``corpus`` with its index and ``retriever`` (``"bm25"`` or a
    ``"module:factory"`` spec, :mod:`.searchqa_retriever`). The index is ``index`` (a folder
    made by ``python -m treegym.envs.searchqa_index``, e.g. on another machine) or the cached
    one, built now if missing."""
    path = Path(corpus).expanduser()
    folder = given_index(path, Path(index)) if index is not None else index_folder(path, cache)
    key = (str(folder), retriever)
    if key not in _OPEN:
        try:
            store = PassageStore(path.resolve(), folder)
            sha = json.loads((folder / MANIFEST).read_text())["corpus_sha256"]
            found = BM25Retriever(folder) if retriever == "bm25" else None
        except (OSError, ValueError, KeyError) as exc:
            raise GameFileError(
                f"index {folder} of corpus {path} is incomplete or damaged ({exc}); delete "
                "the folder and it is rebuilt"
            ) from None
        found = found or plugged_retriever(retriever, store, folder)
        _OPEN[key] = OpenCorpus(path, folder, store, found, sha)
    return _OPEN[key]


def index_folder(corpus: Path, cache: Path | None = None) -> Path:
    """The index folder of ``corpus``, built first if it is not in the cache."""
    try:
        stat = corpus.stat()
    except OSError as exc:
        raise GameFileError(f"cannot read corpus {corpus}: {exc.strerror}") from None
    if not corpus.is_file():
        raise GameFileError(f"corpus {corpus} is not a file (a JSONL file of passages)")
    identity = {
        "path": str(corpus.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "version": INDEX_VERSION,
        "bm25": BM25_PARAMS,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    folder = searchqa_cache(cache) / "index" / f"{corpus.stem[:40]}-{key}"
    return build_once(folder, MANIFEST, lambda tmp: build_index(corpus, tmp, identity))


def given_index(corpus: Path, folder: Path) -> Path:
    """``folder``, checked to be an index of a file the size of ``corpus``."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        size = corpus.stat().st_size
    except (OSError, ValueError) as exc:
        raise GameFileError(f"index {folder} of corpus {corpus}: {exc}") from None
    if manifest.get("version") != INDEX_VERSION or manifest.get("size") != size:
        raise GameFileError(
            f"index {folder} was built from a {manifest.get('size')}-byte corpus (index format "
            f"{manifest.get('version')}); {corpus} has {size} bytes (format {INDEX_VERSION})"
        )
    return folder


def build_index(corpus: Path, folder: Path, identity: dict | None = None) -> None:
    """Index ``corpus`` into the (empty or new) ``folder``; ``manifest.json`` is written last."""
    identity = identity or {"path": str(corpus.resolve()), "size": corpus.stat().st_size,
                            "version": INDEX_VERSION, "bm25": BM25_PARAMS}  # fmt: skip
    check_build_memory(corpus, identity["size"], available_memory())
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    scan, spans = scan_corpus(corpus), array("q")

    def contents():
        for passage in scan:
            spans.extend((passage.start, passage.end))
            yield passage.contents

    counts = build_bm25(contents(), folder)
    save_offsets(folder, np.frombuffer(spans, dtype=np.int64))
    build_s = round(time.perf_counter() - start, 3)
    manifest = {**identity, **counts, "corpus_sha256": scan.sha256, "build_s": build_s}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))


def available_memory() -> int | None:
    """Bytes of memory the system can give (``MemAvailable``), or ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_build_memory(corpus: Path, corpus_bytes: int, available: int | None) -> None:
    """Refuse to index a corpus whose build would not fit in ``available`` bytes."""
    need = corpus_bytes * BUILD_BYTES_PER_CORPUS_BYTE
    if available is not None and need > available:
        raise GameFileError(
            f"corpus {corpus} ({corpus_bytes / 2**30:.1f} GiB) needs about "
            f"{need / 2**30:.1f} GiB of memory to index, {available / 2**30:.1f} GiB are "
            "available: build its index on a larger machine (python -m "
            "treegym.envs.searchqa_index CORPUS FOLDER) and pass index=FOLDER; searching "
            "needs little memory (the index is memory-mapped)"
        )


def main(argv: list[str] | None = None) -> None:
    """``python -m treegym.envs.searchqa_index CORPUS FOLDER``: build an index to copy."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.folder.exists():
        parser.error(f"{args.folder} exists; give a new folder")
    build_once(args.folder, MANIFEST, lambda tmp: build_index(args.corpus, tmp))
    print(json.loads((args.folder / MANIFEST).read_text()))


if __name__ == "__main__":
    main()
