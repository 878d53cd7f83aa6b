"""Fuzz inputs, timed: how long one env step takes on the hostile actions the fault suite fuzzes
(a 1 MB string, control characters, bidi and escape sequences, random bytes), in ToyRooms and
TextWorld. ``tests/faults/test_fuzz.py`` checks the answers (the env's, or a treegym error);
how fast they come is a wall-clock figure of this machine, so it is measured here.

    python bench/fuzz_step_time.py [--game SPEC] [--repeats N]

Prints the median and worst milliseconds per input and env; the headline is the worst of all.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time

from treegym.envs import TextEnv, TextEnvError, make
from treegym.envs.textworld_games import make_game

DEFAULT_GAME = "tw-simple:rewards=dense,goal=detailed,seed=1234"
INPUTS = {
    "1 MB of commands": "go north " * 120_000 + "\x00\x1b[2J\u202e" * 1000,
    "control characters": "".join(chr(i) for i in range(32)) * 30,
    "random bytes (latin-1)": bytes(random.Random(0).randrange(256) for _ in range(4096)).decode(
        "latin-1"
    ),
    "empty": "",
}


def step_seconds(env: TextEnv, action: str, reset: dict, repeats: int) -> list[float]:
    """Wall seconds of ``env.step(action)`` from a fresh reset, ``repeats`` times (a treegym
    error counts as an answer: it is what the env gives back)."""
    out = []
    for _ in range(repeats):
        env.reset(seed=0, **reset)
        t = time.perf_counter()
        with contextlib.suppress(TextEnvError):
            env.step(action)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--game", default=DEFAULT_GAME, help="TextWorld game spec or .z8 path")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    envs = {
        "ToyRooms": (make("treegym/ToyRooms-v0"), {"options": {"task": 0}}),
        "TextWorld": (make("treegym/TextWorld-v0", game=str(make_game(args.game))), {}),
    }
    worst = 0.0
    print(f"{'env':10} {'input':24} {'median ms':>10} {'worst ms':>10}")
    for name, (env, reset) in envs.items():
        for label, action in INPUTS.items():
            times = step_seconds(env, action, reset, args.repeats)
            worst = max(worst, max(times))
            ms = [1000 * t for t in times]
            print(f"{name:10} {label:24} {statistics.median(ms):10.3f} {max(ms):10.3f}")
        env.close()
    print(f"slowest fuzz step: {1000 * worst:.3f} ms")


if __name__ == "__main__":
    main()
