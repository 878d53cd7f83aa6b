"""``treegym/TextWorld-v0``: TextWorld games (Z-machine via Jericho) with native snapshots.

A task is a game: a ``.z8`` file with its ``.json`` beside it, or a generator spec (see
:mod:`treegym.envs.textworld_games`) that is made offline into the cache on first use. Pick it
with the constructor (``game=``) or per episode with ``reset(options={"task": ...})``.

Observations are the game's own text (TextWorld's ``feedback``). The reward is the change in
game score; ``terminated`` means won or lost; ``truncated`` comes at ``max_episode_steps``.
``info`` holds ``admissible_commands``, ``won``, ``lost``, ``score``, ``max_score``, ``moves``,
``task_id`` and, with ``expert_plan=True``, the remaining ``expert_plan`` (TextWorld's winning
policy from the current state; computing it is most of a step's cost on larger games).

Snapshots are native (:mod:`treegym.envs.textworld_state`): Jericho's state plus the tracking
wrappers' mutable parts. Actions are normalised before they reach the interpreter: control
characters, line breaks and backslashes become spaces (a newline would otherwise be read as two
commands, desynchronising the transcript; a NUL byte hangs the interpreter; a backslash starts
a dumb-frotz meta-command).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jericho
import textworld
from textworld.core import EnvInfos

from . import textworld_state
from .core import TextEnv
from .errors import GameFileError, UnknownTaskError
from .textworld_games import GameSpec, is_spec, make_game

DEFAULT_GAME = "tw-simple:rewards=dense,goal=detailed,seed=1234"
# Control characters and backslashes (dumb-frotz reads "\\x" as an interpreter meta-command).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_Z_VERSIONS = range(1, 9)
_Z_LENGTH_SCALE = {1: 2, 2: 2, 3: 2, 4: 4, 5: 4, 6: 8, 7: 8, 8: 8}
_VALIDATED: dict[tuple[str, int, int], str] = {}
#: Jericho's input buffer, in UTF-8 bytes; longer commands are cut (at a character boundary).
_INPUT_BYTES = 198
#: Interpreter meta-commands that act outside the tracked game state: saving and restoring go
#: through files in the working directory (shared by every branch), restart/undo rewind the
#: Z-machine behind TextWorld's tracker, and ``tw-*`` toggle TextWorld's own instrumentation.
#: The env answers them itself and leaves the game untouched.
META_COMMANDS = frozenset(
    {"save", "restore", "restart", "undo", "oops", "quit", "q", "script", "unscript"}
    | {"noscript", "transcript", "verify", "recording", "replay"}
)
META_ANSWER = "[That command controls the interpreter, not the game, and is disabled here.]"


def resolve_game(task: Any) -> Path:
    """Path of the ``.z8`` file for a task (a path, or a spec made on demand)."""
    if is_spec(task):
        return make_game(GameSpec.parse(task))
    if not isinstance(task, (str, os.PathLike)):
        raise UnknownTaskError(
            f"a TextWorld task is a .z8 path or a generator spec such as {DEFAULT_GAME!r}, "
            f"got {task!r}"
        )
    return Path(task).expanduser()


def validate_game_file(path: Path) -> str:
    """Check a Z-machine game before Jericho sees it; return its content hash.

    Jericho's interpreter calls ``exit()`` on a file it cannot run (killing the whole
    process), so the header, length and checksum are verified here first. Results are cached
    by (path, size, mtime): resets that switch between known games skip the work.
    """
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None
    if key in _VALIDATED:
        return _VALIDATED[key]
    digest = _validate_game_file(path)
    if key is not None:
        _VALIDATED[key] = digest
    return digest


def _validate_game_file(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".ulx":
        raise GameFileError(
            f"{path}: Glulx (.ulx) games are not playable with textworld 1.7 (Jericho runs "
            "Z-machine games only); make the game as .z8 instead"
        )
    if not re.fullmatch(r"\.z[1-8]", suffix):
        raise GameFileError(f"{path}: not a Z-machine game file (.z1–.z8 expected)")
    if not path.is_file():
        raise GameFileError(f"game file not found: {path}")
    json_path = path.with_suffix(".json")
    if not json_path.is_file():
        raise GameFileError(
            f"{path}: the TextWorld metadata {json_path.name} is missing beside it "
            "(treegym/TextWorld-v0 plays games made by TextWorld, which writes both files)"
        )
    try:
        data = path.read_bytes()
        meta = json_path.read_bytes()
    except OSError as exc:
        raise GameFileError(f"cannot read {path}: {exc}") from None
    if len(data) < 64 or data[0] not in _Z_VERSIONS:
        raise GameFileError(f"{path}: not a Z-machine story (bad header)")
    length = int.from_bytes(data[0x1A:0x1C], "big") * _Z_LENGTH_SCALE[data[0]]
    if length > len(data) or (length and length < 64):
        raise GameFileError(
            f"{path}: truncated story file ({len(data)} bytes, header says {length})"
        )
    checksum = int.from_bytes(data[0x1C:0x1E], "big")
    if length and checksum and sum(data[0x40:length]) & 0xFFFF != checksum:
        raise GameFileError(f"{path}: story file checksum mismatch (corrupted game file)")
    return hashlib.sha256(data + b"\0" + meta).hexdigest()[:16]


class TextWorldEnv(TextEnv):
    """See the module docstring."""

    def __init__(
        self,
        game: str | os.PathLike[str] | None = None,
        *,
        max_episode_steps: int | None = 100,
        expert_plan: bool = True,
    ) -> None:
        super().__init__(max_episode_steps=max_episode_steps)
        self.expert_plan = bool(expert_plan)
        self._infos = EnvInfos(
            admissible_commands=True,
            policy_commands=self.expert_plan,
            score=True,
            max_score=True,
            won=True,
            lost=True,
            moves=True,
        )
        self._env: Any = None
        self._layers: textworld_state.Layers | None = None
        self._started = False
        self._score = 0
        self.default_task = game if game is not None else DEFAULT_GAME
        self._load(self.default_task)

    # ------------------------------------------------------------------ game loading
    @classmethod
    def validate_task(cls, options: Mapping[str, Any]) -> None:
        """A generator spec is parsed, a game file checked as :meth:`reset` would; no game is
        made."""
        task = options.get("task")
        if is_spec(task):
            GameSpec.parse(task)
        elif task is not None:
            validate_game_file(resolve_game(task))

    def _load(self, task: Any) -> None:
        path = resolve_game(task)
        digest = validate_game_file(path)
        if self._env is not None and self._game_sha == digest:
            return
        try:
            with warnings.catch_warnings():
                # Jericho's "not fully supported" targets Infocom titles; TextWorld games are fine.
                warnings.simplefilter("ignore", jericho.UnsupportedGameWarning)
                env = textworld.start(str(path), self._infos)
        except Exception as exc:  # malformed .json, unsupported content
            raise GameFileError(f"TextWorld cannot load {path}: {exc}") from None
        self.close()
        self._env, self._layers = env, textworld_state.Layers.of(env)
        self._game_path, self._game_sha = path, digest
        self._task_id = path.parent.name if path.stem == "game" else path.stem
        self._started = False

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = self._layers = None

    # ------------------------------------------------------------------ hooks
    def _fingerprint_parts(self) -> dict[str, Any]:
        return {"game_sha": self._game_sha, "expert_plan": self.expert_plan}

    def _describe_fingerprint(self) -> str:
        return f"game {self._game_path} (sha {self._game_sha})"

    def _normalize_action(self, action: str) -> str:
        text = " ".join(_CONTROL.sub(" ", action).split())
        # Lone surrogates cannot be encoded; cut to the interpreter's buffer on a char boundary.
        raw = text.encode("utf-8", "replace")[:_INPUT_BYTES]
        return raw.decode("utf-8", "ignore").strip()

    def _select_task(self, options: dict[str, Any]) -> None:
        self._load(options.get("task", self.default_task))

    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self._load(options.get("task", self.default_task))
        # Jericho treats seed 0 as "use the clock": shift into 1..2**31-1.
        self._env.seed(seed % (2**31 - 1) + 1)
        state = self._env.reset()
        self._started = True
        self._score = int(state["score"] or 0)
        return state["feedback"], self._info(state)

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        verb = action.split(" ", 1)[0].lower()
        if verb in META_COMMANDS or verb.startswith("tw-"):
            return META_ANSWER, 0.0, False, self._info(self._layers.tracking.state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Jericho warns when it truncates long input
            state, _, _ = self._env.step(action)
        score = int(state["score"] or 0)
        reward, self._score = score - self._score, score
        return (
            state["feedback"],
            float(reward),
            bool(state["won"] or state["lost"]),
            self._info(state),
        )

    def _get_native(self) -> textworld_state.TextWorldNative:
        return textworld_state.capture(self._layers, self._score)

    def _state_digest(self, native: textworld_state.TextWorldNative) -> str:
        return textworld_state.digest(native)

    def _set_native(self, native: textworld_state.TextWorldNative) -> None:
        if not isinstance(native, textworld_state.TextWorldNative):
            raise TypeError(f"not a TextWorld native snapshot: {type(native).__name__}")
        if self._env is None:  # closed: load the game again
            self._load(self._game_path)
        if not self._started:  # interpreter loaded but never started: start it once
            self._env.reset()
            self._started = True
        textworld_state.apply(self._layers, native)
        self._score = native.score

    def _spawn_twin(self) -> TextWorldEnv:
        twin = super()._spawn_twin()
        assert isinstance(twin, TextWorldEnv)
        twin._load(self._game_path)
        return twin

    def _info(self, state: Any) -> dict[str, Any]:
        info = {
            "admissible_commands": list(state["admissible_commands"] or []),
            "won": bool(state["won"]),
            "lost": bool(state["lost"]),
            "score": int(state["score"] or 0),
            "max_score": int(state["max_score"] or 0),
            "moves": int(state["moves"] or 0),
            "task_id": self._task_id,
        }
        if self.expert_plan:
            info["expert_plan"] = list(state["policy_commands"] or [])
        return info
