"""``TextEnv``: the environment contract every treegym environment implements.

A ``TextEnv`` is a plain ``gymnasium.Env`` over strings (observation and action spaces are
:class:`~treegym.envs.spaces.TextSpace`) with three additions the tree harness needs:

* ``snapshot() -> Snapshot`` and ``restore(snapshot)``: capture and put back *everything*
  needed to continue — game state, RNG state, step counter, episode bookkeeping;
* ``fork() -> TextEnv``: an independent env at the same state;
* a replay recipe in every snapshot, so an env without a native state copy is still forkable,
  and snapshots can travel to other processes (:meth:`Snapshot.portable`).

Subclasses implement the small hooks ``_reset``, ``_step`` and, for fast snapshots,
``_get_native``/``_set_native``. The public ``reset``/``step`` around them do what every env
would otherwise repeat: argument validation with clear errors, episode-seed bookkeeping (so a
``reset(seed=None)`` episode is still replayable), truncation at ``max_episode_steps``, and the
refusal to step an ended episode. Keeping truncation inside the env (instead of gymnasium's
``TimeLimit`` wrapper) is deliberate: a wrapper's step counter would not be in the snapshot.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium

from .errors import (
    CorruptSnapshotError,
    EpisodeEndedError,
    InvalidActionError,
    InvalidOptionsError,
    ReplayDivergenceError,
    ResetNeededError,
    SnapshotMismatchError,
)
from .snapshot import Snapshot
from .spaces import TextSpace


@dataclass(frozen=True)
class EnvRecipe:
    """How to build an env again: its class and constructor arguments.

    Recorded automatically for every ``TextEnv`` (see ``TextEnv.__new__``); used by ``fork``
    and to rebuild the env in another process (portable-snapshot checks, env worker pools).
    Arguments must be picklable for the cross-process uses.
    """

    module: str
    qualname: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> TextEnv:
        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return obj(*self.args, **self.kwargs)


@dataclass
class _Episode:
    """Bookkeeping of the running episode: its replay recipe and whether it has ended."""

    seed: int
    options: str
    actions: list[str]
    ended: str | None = None
    broken: str | None = None  # set when a step raised: the env state is then unknown


def canonical_options(options: Mapping[str, Any] | None) -> str:
    """Canonical JSON of reset options; raises :class:`InvalidOptionsError` (a ``TypeError``)
    naming what cannot be encoded.

    Options must be JSON values because they are part of portable snapshots.
    """
    if options is None:
        return "{}"
    if not isinstance(options, Mapping):
        raise InvalidOptionsError(
            f"reset options must be a mapping such as {{'task': ...}}, got {options!r}"
        )
    try:
        return json.dumps(dict(options), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidOptionsError(
            f"reset options must be JSON values (they are stored in snapshots): {exc}"
        ) from None


class TextEnv(gymnasium.Env[str, str]):
    """Base class of treegym's text environments (see the module docstring for the contract).

    Subclass hooks:

    * ``_reset(seed, options) -> (obs, info)`` — start an episode (``options`` is a dict).
    * ``_step(action) -> (obs, reward, terminated, info)`` — ``action`` is already validated
      and normalised; truncation is added by the base class.
    * ``_get_native() -> Any`` / ``_set_native(native)`` — optional fast in-process state
      copy. The default ``None`` makes replay-only snapshots.
    * ``_state_digest(native) -> str | None`` — a short hash of the state that randomness or
      game logic outside ``np_random`` lives in (an interpreter's memory); replays must
      reproduce it, so nondeterminism there is detected instead of silently diverging.
    * ``_select_task(options)`` — load the task of ``options`` (envs whose tasks are files).
    * ``_fingerprint_parts() -> dict`` — what makes two envs interchangeable for a snapshot
      (game content hash, options that change observations). Defaults to the constructor
      arguments.
    * ``_normalize_action(action) -> str`` — env-specific clean-up of a valid string.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    #: Longest accepted action (characters). Longer actions raise ``InvalidActionError``.
    max_action_length: ClassVar[int] = 1024
    #: Upper bound of the observation space (characters).
    max_observation_length: ClassVar[int] = 1 << 20

    recipe: EnvRecipe

    def __new__(cls, *args: Any, **kwargs: Any) -> TextEnv:
        env = super().__new__(cls)
        env.recipe = EnvRecipe(cls.__module__, cls.__qualname__, args, dict(kwargs))
        return env

    def __init__(self, *, max_episode_steps: int | None = None) -> None:
        if max_episode_steps is not None and (
            not isinstance(max_episode_steps, int)
            or isinstance(max_episode_steps, bool)
            or max_episode_steps <= 0
        ):
            raise ValueError(
                f"max_episode_steps must be a positive int or None, got {max_episode_steps!r}"
            )
        self.max_episode_steps = max_episode_steps
        self.observation_space = TextSpace(self.max_observation_length)
        self.action_space = TextSpace(self.max_action_length)
        self._episode: _Episode | None = None
        self._fingerprint_cache: tuple[Any, str] | None = None

    # ------------------------------------------------------------------ subclass hooks
    @classmethod
    def validate_task(cls, options: Mapping[str, Any]) -> None:
        """Refuse reset ``options`` whose task cannot load, cheaply and without an instance
        (``treegym collect`` checks every task before workers start); raise a
        :class:`TextEnvError` naming the problem. The default accepts anything (``reset``
        finds out)."""

    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        raise NotImplementedError

    def _get_native(self) -> Any:
        return None

    def _set_native(self, native: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} makes replay-only snapshots")

    def _state_digest(self, native: Any) -> str | None:
        return None

    def _select_task(self, options: dict[str, Any]) -> None:
        """Load the task ``options`` names without starting an episode (envs with tasks)."""

    def _fingerprint_parts(self) -> dict[str, Any]:
        return {"args": self.recipe.args, "kwargs": self.recipe.kwargs}

    def _normalize_action(self, action: str) -> str:
        return action

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise TypeError(f"seed must be a non-negative int or None, got {seed!r}")
        options_json = canonical_options(options)
        if seed is None:
            # Draw the episode seed from the env's RNG so the episode stays replayable.
            seed = int(self.np_random.integers(0, 2**31 - 1))
        super().reset(seed=seed)
        self._episode = None  # a failing _reset leaves no half-started episode behind
        obs, info = self._reset(seed, json.loads(options_json))
        self._episode = _Episode(seed=seed, options=options_json, actions=[])
        return obs, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        episode = self._running_episode()
        action = self._validate_action(action)
        try:
            obs, reward, terminated, info = self._step(action)
        except BaseException as exc:  # incl. KeyboardInterrupt: the interpreter may have moved
            episode.broken = f"{type(exc).__name__}: {exc}"
            raise
        episode.actions.append(action)
        terminated = bool(terminated)
        truncated = (
            not terminated
            and self.max_episode_steps is not None
            and len(episode.actions) >= self.max_episode_steps
        )
        if terminated or truncated:
            episode.ended = "terminated" if terminated else "truncated"
        return obs, float(reward), terminated, truncated, info

    # ------------------------------------------------------------------ snapshots
    @property
    def fingerprint(self) -> str:
        """Short hash of what must match for a snapshot to be restored here."""
        parts = self._fingerprint_parts()
        key = json.dumps(
            {"type": self.env_type, "max_episode_steps": self.max_episode_steps, **parts},
            sort_keys=True,
            default=repr,
        )
        if self._fingerprint_cache is None or self._fingerprint_cache[0] != key:
            self._fingerprint_cache = (key, hashlib.sha256(key.encode()).hexdigest()[:16])
        return self._fingerprint_cache[1]

    @property
    def env_type(self) -> str:
        return f"{type(self).__module__}.{type(self).__qualname__}"

    @property
    def episode_depth(self) -> int:
        """Steps taken in the current episode (0 right after reset)."""
        return len(self._require_episode("episode_depth").actions)

    def snapshot(self) -> Snapshot:
        """Capture the current state (including ended episodes) as an immutable value."""
        episode = self._require_episode("snapshot()")
        native = self._get_native()
        return Snapshot(
            env_type=self.env_type,
            fingerprint=self.fingerprint,
            seed=episode.seed,
            options=episode.options,
            actions=tuple(episode.actions),
            ended=episode.ended,
            rng_state=self._np_random.bit_generator.state if self._np_random is not None else None,
            state_digest=self._state_digest(native),
            native=native,
        )

    def restore(self, snapshot: Snapshot | bytes) -> None:
        """Put the env back exactly at ``snapshot`` (a ``Snapshot`` or its portable bytes).

        Native snapshots restore in place from their state copy (switching to the snapshot's
        task first if it is another one); replay-only and portable ones restore by resetting
        with the recorded seed and options and replaying the actions, then verifying the RNG
        state and the env's state digest match (else :class:`ReplayDivergenceError`). A native
        snapshot refused for a mismatch leaves the running episode untouched unless its task
        had to be loaded to find out.
        """
        if isinstance(snapshot, (bytes, bytearray, memoryview)):
            snapshot = Snapshot.from_portable(bytes(snapshot))
        if not isinstance(snapshot, Snapshot):
            raise TypeError(
                f"restore() takes a Snapshot or its portable bytes, got {type(snapshot).__name__}"
            )
        if snapshot.env_type != self.env_type:
            raise SnapshotMismatchError(
                f"snapshot was taken in a {snapshot.env_type} env; this env is a {self.env_type}. "
                "Restore it into an env of the same type."
            )
        if self.max_episode_steps is not None and snapshot.depth > self.max_episode_steps:
            raise SnapshotMismatchError(
                f"snapshot is {snapshot.depth} steps deep but this env truncates episodes at "
                f"{self.max_episode_steps} steps: it was made with another max_episode_steps"
            )
        if snapshot.native is not None:
            before = self.fingerprint
            if snapshot.fingerprint != before:
                self._select_task(json.loads(snapshot.options))
                if self.fingerprint != before:
                    self._episode = None  # another task is loaded: the old episode is gone
                self._check_fingerprint(snapshot)
            self._episode = None
            self._set_native(snapshot.native)
        else:
            self._episode = None
            self._replay(snapshot)
        if snapshot.rng_state is not None:
            self.np_random.bit_generator.state = snapshot.rng_state
        self._episode = _Episode(
            seed=snapshot.seed,
            options=snapshot.options,
            actions=list(snapshot.actions),
            ended=snapshot.ended,
        )

    def fork(self) -> TextEnv:
        """An independent env at the same state (stepping one never affects the other)."""
        twin = self._spawn_twin()
        if self._episode is not None:
            twin.restore(self.snapshot())
        return twin

    def _spawn_twin(self) -> TextEnv:
        """A new, unstarted env interchangeable with this one. Override to share immutable
        data (parsed game files) between forks."""
        return self.recipe.build()

    # ------------------------------------------------------------------ internals
    def _check_fingerprint(self, snapshot: Snapshot) -> None:
        if snapshot.fingerprint != self.fingerprint:
            raise SnapshotMismatchError(
                f"snapshot fingerprint {snapshot.fingerprint} does not match this env's "
                f"{self.fingerprint} ({self._describe_fingerprint()}): it was taken on another "
                "game, task or configuration. Restore it into an env made with the same "
                "arguments and task."
            )

    def _describe_fingerprint(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._fingerprint_parts().items())

    def _replay(self, snapshot: Snapshot) -> None:
        gymnasium.Env.reset(self, seed=snapshot.seed)
        self._reset(snapshot.seed, json.loads(snapshot.options))
        self._check_fingerprint(snapshot)
        n = len(snapshot.actions)
        for i, recorded in enumerate(snapshot.actions):
            # Portable snapshots may come from elsewhere: actions pass the same guard as step().
            action = self._validate_action(recorded)
            if action != recorded:
                raise CorruptSnapshotError(
                    f"snapshot action {i + 1} ({recorded!r:.80}) is not in normalised form: "
                    "the snapshot was not made by a treegym env"
                )
            _, _, terminated, _ = self._step(action)
            last = i == n - 1
            truncated = self.max_episode_steps is not None and i + 1 >= self.max_episode_steps
            if (terminated or truncated) and not last:
                raise ReplayDivergenceError(
                    f"replaying the snapshot ended the episode at step {i + 1} of {n} "
                    f"(action {action!r}): the env is not deterministic for seed {snapshot.seed}"
                )
            if last and (terminated or truncated) != (snapshot.ended is not None):
                raise ReplayDivergenceError(
                    f"replay reached step {n} with episode ended={terminated or truncated}, "
                    f"but the snapshot recorded ended={snapshot.ended!r}"
                )
        if (
            snapshot.rng_state is not None
            and self._np_random is not None
            and self._np_random.bit_generator.state != snapshot.rng_state
        ):
            raise ReplayDivergenceError(
                f"replay of {n} actions left the env's RNG in a different state than recorded: "
                "the env draws randomness outside self.np_random or is not deterministic"
            )
        if snapshot.state_digest is not None:
            digest = self._state_digest(self._get_native())
            if digest != snapshot.state_digest:
                raise ReplayDivergenceError(
                    f"replay of {n} actions reached state {digest}, not the recorded "
                    f"{snapshot.state_digest}: the env is not deterministic for seed "
                    f"{snapshot.seed}"
                )

    def _require_episode(self, what: str) -> _Episode:
        """The current episode, unless there is none or a failed step left its state unknown."""
        if self._episode is None:
            raise ResetNeededError(f"{what} needs a running episode: call reset() or restore()")
        if self._episode.broken:
            raise ResetNeededError(
                f"{what}: the previous step raised ({self._episode.broken}), so the env state "
                "is unknown; call reset() or restore() a snapshot"
            )
        return self._episode

    def _running_episode(self) -> _Episode:
        episode = self._require_episode("step()")
        if episode.ended is not None:
            raise EpisodeEndedError(
                f"the episode {episode.ended} after {len(episode.actions)} steps; "
                "call reset() or restore() a snapshot taken before the end"
            )
        return episode

    def _validate_action(self, action: Any) -> str:
        if not isinstance(action, str):
            raise InvalidActionError(
                f"action must be a str command such as 'go north', got {type(action).__name__} "
                f"({action!r:.80})"
            )
        if len(action) > self.max_action_length:
            raise InvalidActionError(
                f"action is {len(action)} characters long; the limit is "
                f"{self.max_action_length} (action_space.max_length)"
            )
        return self._normalize_action(action)
