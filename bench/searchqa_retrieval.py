"""SearchQA retrieval: index build time and memory, search and env-step latency vs corpus size,
and memory per env worker sharing one memory-mapped index.

Run: ``python bench/searchqa_retrieval.py [--sizes 10000,100000,1000000] [--workers 4]``.
Corpora are synthetic worlds' passages (:mod:`treegym.envs.searchqa_world`, cut to the size)
written as Search-R1 JSONL into a scratch cache (``--cache``, default a temporary folder). Per
size: the index is built in a fresh process (its build seconds and peak RSS above an idle
process that imported the same modules); then, in this process, ``--queries`` distinct queries
(entity names and two-word mixes, so the per-process search cache never answers) are timed
through the retriever and through ``SearchQAEnv.step``. Memory: ``--workers`` processes, alive
together, each open an env on the largest corpus and search, then report ``/proc/self/
smaps_rollup`` (RSS, PSS, private); an idle process that imported the same modules is the
baseline. The page cache is warm (the build just wrote the files): cold-disk latency is not
measured (dropping the caches would disturb the machine's other work).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import Section, print_sections

from treegym.envs.searchqa_world import WorldSpec, generate_world

PASSAGES_PER_PERSON = 2.75  # a little under what worlds make, so the cut is exact
IMPORTS = "import treegym.envs.searchqa_env"


def write_corpus(n: int, folder: Path) -> Path:
    """``n`` passages of a synthetic world, as Search-R1 JSONL (made once per size)."""
    path = folder / f"corpus-{n}.jsonl"
    if not path.is_file():
        world = generate_world(WorldSpec(seed=0, people=int(n / PASSAGES_PER_PERSON) + 20))
        if len(world.passages) < n:
            raise SystemExit(f"the world made {len(world.passages)} passages, fewer than {n}")
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            for doc, contents in world.passages[:n]:
                f.write(json.dumps({"id": doc, "contents": contents}) + "\n")
        tmp.rename(path)
    return path


def build_in_child(corpus: Path, cache: Path) -> dict:
    """Build the index in a fresh process: seconds, peak RSS above an idle one, index bytes."""
    code = (
        f"{IMPORTS}\nimport json, sys, time\nfrom pathlib import Path\n"
        "from treegym.envs.searchqa_index import index_folder\n"
        "def hwm():  # VmHWM: this process's peak RSS (ru_maxrss survives exec on Linux)\n"
        "    line = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0]\n"
        "    return int(line.split()[1]) / 1024\n"
        "idle, t = hwm(), time.perf_counter()\n"
        "folder = index_folder(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "s, peak = time.perf_counter() - t, hwm()\n"
        "size = sum(p.stat().st_size for p in folder.iterdir())\n"
        "print(json.dumps({'build_s': s, 'peak_mb': peak - idle, 'index_mb': size / 2**20,"
        " 'folder': str(folder)}))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(corpus), str(cache)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def queries(corpus: Path, n: int, seed: int) -> list[str]:
    """Distinct queries: titles of random passages and random two-word mixes of their words."""
    rng = random.Random(seed)
    lines = corpus.read_text().splitlines()
    picks = [json.loads(rng.choice(lines))["contents"] for _ in range(n)]
    titles = [c.split("\n")[0].strip('"') for c in picks[: n // 2]]
    words = [w for c in picks for w in c.split()[2:] if w.isalpha()]
    mixes = [f"{rng.choice(words)} {rng.choice(words)}" for _ in range(n - len(titles))]
    return list(dict.fromkeys(titles + mixes))


def latencies(corpus: Path, cache: Path, qs: list[str], tmp: Path) -> tuple[list, list]:
    """Milliseconds per search through the retriever, and per ``SearchQAEnv.step``."""
    from treegym.envs.searchqa_env import SearchQAEnv
    from treegym.envs.searchqa_index import open_corpus

    retriever = open_corpus(corpus, cache=cache).retriever
    search = []
    for q in qs:
        t = time.perf_counter()
        retriever._search(q, 3)  # uncached: the env's per-process cache would answer repeats
        search.append(1000 * (time.perf_counter() - t))
    questions = tmp / "q.jsonl"
    questions.write_text('{"question": "q?", "golden_answers": ["a"]}\n')
    env = SearchQAEnv(corpus=str(corpus), questions=str(questions), index=str(retriever.folder))
    steps = []
    for i, q in enumerate(reversed(qs)):
        if i % 3 == 0:
            env.reset(seed=0)
        retriever._cached.cache_clear()
        t = time.perf_counter()
        env.step(f"search[{q}]")
        steps.append(1000 * (time.perf_counter() - t))
    return search, steps


def _smaps() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":")
        fields[key] = int(value.split()[0]) / 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"],
            "private": fields["Private_Clean"] + fields["Private_Dirty"]}  # fmt: skip


def worker(args) -> dict[str, float]:
    corpus, index, qs, barrier = args
    import treegym.envs.searchqa_env as m

    if corpus is not None:
        questions = Path(tempfile.mkdtemp()) / "q.jsonl"
        questions.write_text('{"question": "q?", "golden_answers": ["a"]}\n')
        env = m.SearchQAEnv(corpus=corpus, questions=str(questions), index=index)
        for i, q in enumerate(qs):
            if i % 3 == 0:
                env.reset(seed=0)
            env.step(f"search[{q}]")
    barrier.wait()  # every worker alive: PSS shares the index pages among them
    out = _smaps()
    barrier.wait()
    return out


def worker_memory(corpus: Path, index: str, qs: list[str], workers: int) -> tuple[dict, dict]:
    """Mean smaps of ``workers`` env workers, and of one idle process (same imports)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(workers)
        with ctx.Pool(workers) as pool:
            got = pool.map(worker, [(str(corpus), index, qs, barrier)] * workers)
        idle_barrier = manager.Barrier(1)
        with ctx.Pool(1) as pool:
            (idle,) = pool.map(worker, [(None, None, [], idle_barrier)])
    mean = {k: statistics.mean(g[k] for g in got) for k in got[0]}
    return mean, idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    scratch = args.cache or Path(tempfile.mkdtemp(prefix="searchqa-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    rows, figures = [], {}
    for n in [int(s) for s in args.sizes.split(",")]:
        t = time.perf_counter()
        corpus = write_corpus(n, scratch)
        made = time.perf_counter() - t
        built = build_in_child(corpus, scratch)
        qs = queries(corpus, args.queries, seed=n)
        search, steps = latencies(corpus, scratch, qs, scratch)
        mb = corpus.stat().st_size / 2**20
        figures[n] = {**built, "corpus_mb": mb, "generate_s": made,
                      "search_ms": search, "step_ms": steps}  # fmt: skip
        p95 = statistics.quantiles(search, n=20)[-1]
        rows.append([f"{n:,}", f"{mb:.1f}", f"{built['build_s']:.1f}", f"{built['peak_mb']:.0f}",
                     f"{built['index_mb']:.0f}", f"{statistics.median(search):.2f}",
                     f"{p95:.2f}", f"{statistics.median(steps):.2f}"])  # fmt: skip
    largest = max(figures)
    mem, idle = worker_memory(scratch / f"corpus-{largest}.jsonl", figures[largest]["folder"],
                              qs[:100], args.workers)  # fmt: skip
    figures["workers"] = {"n": args.workers, "passages": largest, "mean": mem, "idle": idle}
    per_byte = max(f["peak_mb"] / f["corpus_mb"] for k, f in figures.items() if k != "workers")
    print(f"(build peak memory per corpus byte: {per_byte:.1f})")
    header = ["passages", "corpus MB", "build s", "build peak MB", "index MB", "search ms",
              "search p95 ms", "env step ms"]  # fmt: skip
    intro = (f"Index build (fresh process) and search latency (median of {args.queries} "
             "distinct uncached queries, warm page cache) by corpus size.")  # fmt: skip
    mem_rows = [[label, f"{d['rss']:.0f}", f"{d['pss']:.0f}", f"{d['private']:.0f}"]
                for label, d in (("env worker (mean)", mem), ("idle process", idle))]  # fmt: skip
    print_sections([
        Section("searchqa_retrieval", "SearchQA: BM25 index build and search", intro, header,
                rows),
        Section("searchqa_memory", f"SearchQA: memory of {args.workers} env workers sharing "
                f"the {largest:,}-passage index ({figures[largest]['index_mb']:.0f} MB on disk)",
                "/proc/self/smaps_rollup, MB, all workers alive together.",
                ["process", "RSS", "PSS", "private"], mem_rows),
    ])  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    print(
        f"peak RSS of this process: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
