"""SearchQA forking: native snapshot + restore vs replay at depth 3 (three searches in).

Run: ``python bench/searchqa_forking.py [--repeats N] [--people P]``. One env of the default
synthetic world (``--people`` sets its size), walked three random admissible steps deep
(searches, never the answer), the same walk for every arm; the arms are measured side by side
(``bench_common.fork_arms``): a snapshot, a native restore in place, a replay from reset (the
portable form's restore) — with the per-process search cache warm (what a worker that already
ran those searches pays) and cleared before each replay (each search recomputed) — and a new
env of the same configuration in this process restored to the snapshot.
"""

from __future__ import annotations

import argparse
import statistics

from bench_common import Section, fork_arms, median_ms, print_sections, ratios

from treegym.envs.searchqa_env import SearchQAEnv

DEPTH = 3
REPETITIONS = 3


def measure(people: int, repeats: int) -> list[dict[str, float]]:
    env = SearchQAEnv(world_people=people)
    retriever = env._corpus.retriever
    out = []
    for _ in range(REPETITIONS):
        snap, arms = fork_arms(env, DEPTH, repeats)
        replay = snap.replay_only()

        def cold_replay(replay=replay) -> None:
            retriever._cached.cache_clear()
            env.restore(replay)

        out.append({"fork": arms.fork_ms, "snapshot": arms.snapshot_ms,
                    "restore": arms.restore_ms, "replay": arms.replay_ms,
                    "cold": median_ms(cold_replay, repeats), "new": arms.new_env_ms,
                    "passages": len(env._corpus)})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--people", type=int, default=300)
    args = parser.parse_args()
    reps = measure(args.people, args.repeats)
    fork = [r["fork"] for r in reps]

    def cell(key: str, digits: int = 3) -> str:
        return f"{statistics.median(r[key] for r in reps):.{digits}f}"

    rows = [[
        str(DEPTH), cell("snapshot", 4), cell("restore", 4), cell("replay"), cell("cold"),
        cell("new"), ratios([r["replay"] for r in reps], fork).fmt(0, "×"),
        ratios([r["cold"] for r in reps], fork).fmt(0, "×"),
    ]]  # fmt: skip
    header = ["depth", "snapshot ms", "restore ms", "replay ms (search cache warm)",
              "replay ms (cache cleared)", "new env + restore ms", "replay / fork (warm)",
              "replay / fork (cold)"]  # fmt: skip
    intro = (f"SearchQA, default world with {args.people} people ({reps[0]['passages']} "
             f"passages), depth {DEPTH}, {REPETITIONS} repetitions of medians over "
             f"{args.repeats} calls (snapshot/restore: {10 * args.repeats}).")  # fmt: skip
    headline = (f"ratio at depth {DEPTH}: "
                f"{ratios([r['cold'] for r in reps], fork).median:,.0f}× (replay with the "
                "search cache cleared / native snapshot + restore)")  # fmt: skip
    print_sections([Section("searchqa_forking", "SearchQA: snapshot + restore vs replay",
                            intro, header, rows, headline=headline)])  # fmt: skip


if __name__ == "__main__":
    main()
