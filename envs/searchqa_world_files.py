"""Synthetic SearchQA worlds on disk, in Search-R1's formats, made once per spec.

A world (:mod:`.searchqa_world`) and its questions (:mod:`.searchqa_questions`) are written into
``$TREEGYM_CACHE/searchqa/worlds/<slug>/``: ``corpus.jsonl`` (``{"id", "contents"}``), one
question file per split (``train.jsonl``, ``dev.jsonl``, ``test.jsonl``; ``question``,
``golden_answers`` and the generator's ``type``/``hops``/``chain``) and ``world.json`` (the spec
and counts), so the env, an index build or another tool (Search-R1's own retriever) reads them
as any user's data.
"""

from __future__ import annotations

import json
from pathlib import Path

from .searchqa_cache import build_once, searchqa_cache
from .searchqa_data import SPLITS, write_jsonl
from .searchqa_questions import generate_questions
from .searchqa_world import WorldSpec, generate_world

WORLD_FORMAT = 2
"""Bumped whenever the generator writes other files for the same spec (the cache key)."""
WORLD_MARKER = "world.json"


def world_folder(people: int, seed: int, cache: Path | None = None) -> Path:
    """The folder of a synthetic world's files, generated first if missing."""
    spec = WorldSpec(seed=seed, people=people)

    def build(tmp: Path) -> None:
        world = generate_world(spec)
        write_jsonl(tmp / "corpus.jsonl", [{"id": i, "contents": c} for i, c in world.passages])
        counts = {}
        for split in SPLITS:
            questions = generate_questions(world, split)
            write_jsonl(tmp / f"{split}.jsonl", [q.to_json() for q in questions])
            counts[split] = len(questions)
        meta = {"seed": seed, "people": people, "format": WORLD_FORMAT,
                "passages": len(world.passages), "questions": counts}  # fmt: skip
        (tmp / WORLD_MARKER).write_text(json.dumps(meta, indent=1))

    folder = searchqa_cache(cache) / "worlds" / f"{spec.slug}-v{WORLD_FORMAT}"
    return build_once(folder, WORLD_MARKER, build)
