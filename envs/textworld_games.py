"""Making TextWorld games offline, deterministically, into a cache folder.

A *game spec* names a TextWorld generator and its parameters, as a string
``"tw-cooking:recipe=2,take=1,go=6,seed=1"`` or a mapping ``{"challenge": "tw-cooking",
"recipe": 2, ..., "seed": 1}``. Generators: ``custom`` (``world_size``, ``nb_objects``,
``quest_length``, ``quest_breadth``, ``nb_parallel_quests``, ``theme``) and TextWorld's
challenges ``tw-simple``, ``tw-cooking``, ``tw-coin_collector``, ``tw-treasure_hunter`` with
the parameters ``tw-make`` takes for them.

Generation runs TextWorld's own generator and Inform 7 compiler (shipped inside the
``textworld`` package, no network) in a child process with ``PYTHONHASHSEED=0``: TextWorld
iterates over sets of strings while generating, so without a fixed hash seed the same spec
gives different games from one process to the next. Games land in
``$TREEGYM_CACHE/textworld/<slug>/game.{z8,json}`` (default cache ``~/.cache/treegym``),
written to a temporary folder first and renamed into place, so concurrent makers of the
same spec never see half a game.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GameGenerationError

CUSTOM_PARAMS: dict[str, type] = {
    "world_size": int,
    "nb_objects": int,
    "quest_length": int,
    "quest_breadth": int,
    "nb_parallel_quests": int,
    "theme": str,
}
CUSTOM_DEFAULTS: dict[str, Any] = {"world_size": 5, "nb_objects": 10, "quest_length": 5}
GENERATION_TIMEOUT_S = 600
#: Largest seed: every generator seeds numpy's ``RandomState``, which takes 0..2**32-1.
MAX_SEED = 2**32 - 1
#: Inclusive ranges TextWorld checks only inside its generators (once a child process has
#: started), so they are checked here first; a string bound names another parameter.
BOUNDS: dict[str, dict[str, tuple[int | str, int | str]]] = {
    "tw-coin_collector": {"level": (1, 300)},
    "tw-treasure_hunter": {"level": (1, 30)},
    "tw-cooking": {"recipe": (1, 5), "take": (0, "recipe"), "recipe_seed": (0, MAX_SEED)},
}
#: What a game file (not a spec) ends with; see ``textworld_env.validate_game_file``.
_GAME_SUFFIX = re.compile(r"\.(z[1-8]|ulx|json)$", re.IGNORECASE)
#: First line of the generator child's one-line failure reason on stderr.
_REASON_PREFIX = "treegym-generator-error: "


def challenge_names() -> list[str]:
    """Names accepted as a spec's generator."""
    import textworld.challenges

    return ["custom", *sorted(textworld.challenges.CHALLENGES)]


def cache_dir() -> Path:
    """Root of treegym's cache (``$TREEGYM_CACHE`` or ``~/.cache/treegym``)."""
    return Path(os.environ.get("TREEGYM_CACHE") or Path.home() / ".cache" / "treegym")


@dataclass(frozen=True)
class GameSpec:
    """A validated generator spec; equal specs make byte-identical games."""

    challenge: str
    seed: int
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any]) -> GameSpec:
        if isinstance(spec, str):
            name, _, rest = spec.partition(":")
            raw: dict[str, Any] = {}
            for item in filter(None, (p.strip() for p in rest.split(","))):
                key, eq, value = item.partition("=")
                if not eq:
                    raise GameGenerationError(
                        f"bad game spec {spec!r}: expected key=value, got {item!r}"
                    )
                raw[key.strip().replace("-", "_")] = value.strip()
            raw["challenge"] = name.strip()
        elif isinstance(spec, Mapping):
            raw = {str(k).replace("-", "_"): v for k, v in spec.items()}
        else:
            raise GameGenerationError(f"a game spec is a str or a mapping, got {spec!r}")
        challenge = raw.pop("challenge", None)
        names = challenge_names()
        if challenge not in names:
            raise _unknown_generator(challenge, names)
        seed = _to_int(raw.pop("seed", 0), "seed")
        if not 0 <= seed <= MAX_SEED:
            raise GameGenerationError(
                f"game spec seed must be in [0, {MAX_SEED}] (numpy's RandomState), got {seed}"
            )
        if challenge == "custom":
            params = _validate_custom(raw)
        else:
            params = _check_bounds(challenge, _validate_challenge(challenge, raw))
        return cls(challenge, seed, tuple(sorted(params.items())))

    @property
    def canonical(self) -> str:
        """The spec as a string, parameters sorted: ``tw-cooking:go=6,recipe=2,seed=1``."""
        items = [f"{k}={_fmt(v)}" for k, v in self.params] + [f"seed={self.seed}"]
        return f"{self.challenge}:{','.join(items)}"

    @property
    def slug(self) -> str:
        """Folder name: generator, seed, and a hash of the spec and TextWorld version.

        Kept short: the Z-machine interpreter prints "Filename too long" for long paths.
        """
        import textworld

        digest = hashlib.sha256(f"{self.canonical}|{textworld.__version__}".encode()).hexdigest()
        return f"{self.challenge}-s{self.seed}-{digest[:10]}"


def is_spec(task: Any) -> bool:
    """Whether ``task`` is meant as a generator spec rather than a game file path.

    A string is a spec unless it reads as a file: a folder part, a game-file suffix, or an
    existing path. So a mistyped spec (``tw-cookin:recipe=1``, ``tw-cooking recipe=1``) is
    parsed, and refused as an unknown generator, rather than looked up as a missing file.
    """
    if isinstance(task, Mapping):
        return True
    if not isinstance(task, str):
        return False
    if task.partition(":")[0].strip() in challenge_names():
        return True
    text = task.strip()
    return not ("/" in text or os.sep in text or _GAME_SUFFIX.search(text) or Path(text).exists())


def make_game(spec: str | Mapping[str, Any] | GameSpec, cache: Path | None = None) -> Path:
    """Path of the ``.z8`` game for ``spec``, generating it into the cache if missing."""
    spec = spec if isinstance(spec, GameSpec) else GameSpec.parse(spec)
    root = (cache or cache_dir()) / "textworld"
    final = root / spec.slug
    game = final / "game.z8"
    if game.is_file() and (final / "game.json").is_file():
        return game
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.slug[:40]}-", dir=root))
    try:
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        proc = subprocess.run(
            [sys.executable, "-m", "treegym.envs.textworld_games", json.dumps(_spec_json(spec))],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=GENERATION_TIMEOUT_S,
        )
        if proc.returncode != 0 or not (tmp / "game.z8").is_file():
            raise GameGenerationError(
                f"TextWorld could not make {spec.canonical!r}: {_failure_reason(proc)}"
            )
        for extra in tmp.iterdir():
            if extra.name not in ("game.z8", "game.json"):
                extra.unlink() if extra.is_file() else shutil.rmtree(extra)
        try:
            os.rename(tmp, final)
        except OSError:
            if not game.is_file():  # not a lost race: a real error
                raise
    except subprocess.TimeoutExpired:
        raise GameGenerationError(
            f"TextWorld took over {GENERATION_TIMEOUT_S}s to make {spec.canonical!r}"
        ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return game


def _failure_reason(proc: subprocess.CompletedProcess[str]) -> str:
    """The generator's own one-line reason (see ``__main__``), else its output's last line."""
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    reasons = [line[len(_REASON_PREFIX) :] for line in lines if line.startswith(_REASON_PREFIX)]
    if reasons:
        return reasons[-1]
    return lines[-1] if lines else f"the generator exited with status {proc.returncode}"


# ---------------------------------------------------------------------------- validation
def _unknown_generator(name: Any, names: list[str]) -> GameGenerationError:
    """The error for a spec whose generator is not one of ``names``, with the likely fix (a
    typo, or a space where the colon goes: ``tw-cooking recipe=1``)."""
    words = str(name).split()
    close = difflib.get_close_matches(words[0], names, n=1) if words else []
    hint = ""
    if close and len(words) > 1:
        hint = f"; did you mean '{close[0]}:{','.join(words[1:])}'? (a spec is NAME:key=value,...)"
    elif close:
        hint = f"; did you mean {close[0]!r}?"
    return GameGenerationError(
        f"unknown TextWorld generator {name!r}; choose one of {', '.join(names)}{hint}"
    )


def _check_bounds(name: str, params: dict[str, Any]) -> dict[str, Any]:
    for key, (low, high) in BOUNDS.get(name, {}).items():
        lo = params[low] if isinstance(low, str) else low
        hi = params[high] if isinstance(high, str) else high
        if not lo <= params[key] <= hi:
            named = f" (at most {high!r})" if isinstance(high, str) else ""
            raise GameGenerationError(
                f"{name!r} parameter {key!r} must be in [{lo}, {hi}]{named}, got {params[key]}"
            )
    return params


def _to_int(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise GameGenerationError(
            f"game spec parameter {name!r} must be an int, got {value!r}"
        ) from None


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _to_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes"):
        return True
    if str(value).lower() in ("0", "false", "no"):
        return False
    raise GameGenerationError(f"game spec flag {name!r} must be true/false, got {value!r}")


def _validate_custom(raw: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(raw) - set(CUSTOM_PARAMS))
    if unknown:
        raise GameGenerationError(
            f"unknown parameter(s) {unknown} for 'custom'; allowed: {sorted(CUSTOM_PARAMS)}"
        )
    params = {**CUSTOM_DEFAULTS, **raw}
    out: dict[str, Any] = {}
    for key, value in params.items():
        out[key] = _to_int(value, key) if CUSTOM_PARAMS[key] is int else str(value)
        if CUSTOM_PARAMS[key] is int and out[key] < 1:
            raise GameGenerationError(f"'custom' parameter {key!r} must be >= 1, got {value!r}")
    return out


def _validate_challenge(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Validate against the argparse options TextWorld itself declares for the challenge."""
    import textworld.challenges

    parser = argparse.ArgumentParser()
    textworld.challenges.CHALLENGES[name][2](parser)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    unknown = sorted(set(raw) - set(actions))
    if unknown:
        raise GameGenerationError(
            f"unknown parameter(s) {unknown} for {name!r}; allowed: {sorted(actions)}"
        )
    out: dict[str, Any] = {}
    for dest, action in actions.items():
        if dest not in raw:
            if action.required:
                choices = f" (one of {action.choices})" if action.choices else ""
                raise GameGenerationError(f"{name!r} needs parameter {dest!r}{choices}")
            out[dest] = action.default
            continue
        value = raw[dest]
        if isinstance(action, argparse._StoreTrueAction):
            value = _to_bool(value, dest)
        elif action.type is int:
            value = _to_int(value, dest)
        else:
            value = str(value)
        if action.choices is not None and value not in action.choices:
            raise GameGenerationError(
                f"{name!r} parameter {dest!r} must be one of {list(action.choices)}, got {value!r}"
            )
        out[dest] = value
    return out


def _spec_json(spec: GameSpec) -> dict[str, Any]:
    return {"challenge": spec.challenge, "seed": spec.seed, "params": dict(spec.params)}


# ---------------------------------------------------------------------------- child process
def _generate_here(spec: dict[str, Any]) -> None:
    """Make ``game.z8``/``game.json`` in the current folder (runs in the child process)."""
    import textworld
    import textworld.challenges
    from textworld.generator import compile_game

    options = textworld.GameOptions()
    options.seeds = spec["seed"]
    options.path = "./game.z8"
    options.file_ext = ".z8"
    options.force_recompile = True
    params = spec["params"]
    if spec["challenge"] == "custom":
        options.nb_rooms = params["world_size"]
        options.nb_objects = params["nb_objects"]
        options.nb_parallel_quests = params.get("nb_parallel_quests", 1)
        length = params["quest_length"]
        options.chaining.min_length = options.chaining.max_length = length
        options.chaining.max_depth = length
        if "quest_breadth" in params:
            options.chaining.min_breadth = options.chaining.max_breadth = params["quest_breadth"]
        if "theme" in params:
            options.grammar.theme = params["theme"]
        textworld.make(options)
    else:
        make = textworld.challenges.CHALLENGES[spec["challenge"]][1]
        settings = {"subcommand": spec["challenge"], "seed": spec["seed"], **params}
        compile_game(make(settings=settings, options=options), options)


if __name__ == "__main__":
    try:
        _generate_here(json.loads(sys.argv[1]))
    except Exception as exc:  # the parent reports this line, not a traceback tail
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(f"{_REASON_PREFIX}{reason}", file=sys.stderr)
        sys.exit(1)
