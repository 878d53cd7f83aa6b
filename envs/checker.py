"""``check_env``: does an environment keep the snapshot/restore contract?

Run it before spending rollouts on a new env (``treegym check ENV_ID`` from the shell). Each
check plays seeded trajectories and compares them step by step — observation, reward, flags and
every ``info`` field — reporting the *first divergence* (step, field, both values):

* ``gymnasium_api`` — gymnasium's own ``check_env`` on a fresh instance;
* ``determinism`` — two fresh instances, same seed, same actions: identical trajectories;
* ``restore_equivalence`` — snapshot at a random depth, play on, restore, replay the same
  actions: identical (twice from one snapshot, and once from its replay-only form);
* ``fork_isolation`` — stepping a fork never changes its parent, and the reverse;
* ``portable_snapshot`` — the snapshot's bytes restored in another process play on identically;
* ``bad_input`` — non-string actions, nonsense commands, foreign and corrupt snapshots, steps
  after the end or before reset: each gives the game's answer or a clear treegym error.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import traceback
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from .core import EnvRecipe, TextEnv
from .errors import (
    CorruptSnapshotError,
    EpisodeEndedError,
    InvalidActionError,
    ResetNeededError,
    SnapshotMismatchError,
)
from .snapshot import Snapshot

NONSENSE_COMMANDS = ("xyzzy", "dance wildly with the ceiling", "take the moon", "", "go")
PORTABLE_TIMEOUT_S = 300


@dataclass(frozen=True)
class StepRecord:
    """One step as compared by the checker (``info`` normalised to JSON values)."""

    action: str
    obs: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


@dataclass(frozen=True)
class Divergence:
    """The first place two trajectories differ."""

    step: int
    field: str
    expected: Any
    got: Any

    def __str__(self) -> str:
        return (
            f"step {self.step}, field {self.field!r}: expected {_short(self.expected)}, "
            f"got {_short(self.got)}"
        )


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""
    divergence: Divergence | None = None
    skipped: bool = False

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else ("passed" if self.passed else "FAILED")


@dataclass
class CheckReport:
    env: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed or r.skipped for r in self.results)

    def __str__(self) -> str:
        lines = [f"check_env({self.env}): {'passed' if self.passed else 'FAILED'}"]
        for r in self.results:
            lines.append(f"  {r.status:8} {r.name}" + (f" — {r.detail}" if r.detail else ""))
            if r.divergence is not None:
                lines.append(f"           first divergence: {r.divergence}")
        return "\n".join(lines)


def check_env(
    env: TextEnv | str,
    *,
    seed: int = 0,
    trials: int = 3,
    horizon: int = 20,
    env_kwargs: dict[str, Any] | None = None,
    skip: Iterable[str] = (),
) -> CheckReport:
    """Run every check on ``env`` (an instance, or a registered id built with ``env_kwargs``).

    The env passed in is used and left in an arbitrary state; fresh instances are built from
    its recipe for the checks that need them. ``skip`` names checks not to run.
    """
    if isinstance(env, str):
        from .registry import make

        env = make(env, **(env_kwargs or {}))
    if not isinstance(env, TextEnv):
        raise TypeError(f"check_env needs a treegym TextEnv, got {type(env).__name__}")
    report = CheckReport(env=env.spec.id if env.spec is not None else env.env_type)
    ctx = _Context(env, seed, trials, horizon)
    checks: list[tuple[str, Callable[[], CheckResult]]] = [
        ("gymnasium_api", ctx.gymnasium_api),
        ("determinism", ctx.determinism),
        ("restore_equivalence", ctx.restore_equivalence),
        ("fork_isolation", ctx.fork_isolation),
        ("portable_snapshot", ctx.portable_snapshot),
        ("bad_input", ctx.bad_input),
    ]
    skipped = set(skip)
    for name, run in checks:
        if name in skipped:
            report.results.append(CheckResult(name, True, "skipped on request", skipped=True))
            continue
        try:
            result = run()
        except Exception as exc:
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            result = CheckResult(
                name, False, f"raised {type(exc).__name__}: {exc} (at {tb.filename}:{tb.lineno})"
            )
        result.name = name
        report.results.append(result)
    ctx.close()
    return report


# ---------------------------------------------------------------------------- helpers
def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(info, sort_keys=True, default=repr))


def play(env: TextEnv, actions: Iterable[str]) -> list[StepRecord]:
    """Step ``env`` through ``actions`` (stopping at the episode's end) and record each step."""
    records = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        records.append(StepRecord(action, obs, reward, terminated, truncated, _jsonable(info)))
        if terminated or truncated:
            break
    return records


def first_divergence(
    expected: list[StepRecord], got: list[StepRecord], offset: int = 0
) -> Divergence | None:
    """Compare two trajectories field by field; ``offset`` numbers steps from the episode start."""
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        step = offset + i + 1
        for name in ("action", "obs", "reward", "terminated", "truncated"):
            if getattr(a, name) != getattr(b, name):
                return Divergence(step, name, getattr(a, name), getattr(b, name))
        for key in sorted(set(a.info) | set(b.info)):
            if a.info.get(key, "<missing>") != b.info.get(key, "<missing>"):
                return Divergence(
                    step, f"info.{key}", a.info.get(key, "<missing>"), b.info.get(key, "<missing>")
                )
    if len(expected) != len(got):
        return Divergence(
            offset + min(len(expected), len(got)) + 1, "length", len(expected), len(got)
        )
    return None


def _snapshot_mismatch(expected: Snapshot, got: Snapshot, depth: int) -> Divergence | None:
    """A restored env must snapshot to the same recipe and digest it was restored from."""
    for name in ("actions", "ended", "rng_state", "state_digest", "fingerprint"):
        if getattr(expected, name) != getattr(got, name):
            return Divergence(
                depth, f"snapshot.{name}", getattr(expected, name), getattr(got, name)
            )
    return None


def _play_portable(recipe: EnvRecipe, data: bytes, actions: list[str]) -> list[StepRecord]:
    """Child-process side of ``portable_snapshot``."""
    env = recipe.build()
    try:
        env.restore(data)
        return play(env, actions)
    finally:
        env.close()


class _Context:
    """State shared by the checks: the env, its seeded reference trajectory, fresh twins."""

    def __init__(self, env: TextEnv, seed: int, trials: int, horizon: int) -> None:
        self.env, self.seed, self.trials, self.horizon = env, seed, trials, horizon
        self.rng = random.Random(seed)
        self._twins: list[TextEnv] = []
        self.reset_obs, self.reset_info = env.reset(seed=seed)
        self.reference = self._rollout(env, self.reset_info)

    def close(self) -> None:
        for twin in self._twins:
            twin.close()

    def twin(self) -> TextEnv:
        twin = self.env._spawn_twin()
        self._twins.append(twin)
        return twin

    # ------------------------------------------------------------------ action choice
    def choose(self, rng: random.Random, info: dict[str, Any], env: TextEnv) -> str:
        plan = info.get("expert_plan") or []
        admissible = info.get("admissible_commands") or []
        roll = rng.random()
        if plan and roll < 0.4:
            return plan[0]
        if roll < 0.55 or not admissible:
            return rng.choice(NONSENSE_COMMANDS) if admissible else env.action_space.sample()
        return rng.choice(admissible)

    def _rollout(self, env: TextEnv, info: dict[str, Any]) -> list[StepRecord]:
        rng = random.Random(self.seed + 1)
        records: list[StepRecord] = []
        for _ in range(self.horizon):
            records += play(env, [self.choose(rng, info, env)])
            info = records[-1].info
            if records[-1].terminated or records[-1].truncated:
                break
        return records

    def actions(self, start: int = 0) -> list[str]:
        return [r.action for r in self.reference[start:]]

    def at_depth(self, env: TextEnv, depth: int) -> None:
        env.reset(seed=self.seed)
        play(env, self.actions()[:depth])

    def random_depth(self) -> int:
        return self.rng.randrange(0, max(1, len(self.reference)))

    def alternative_actions(self, depth: int, n: int = 4) -> list[str]:
        """Actions differing from the reference continuation (to perturb a fork)."""
        info = self.reference[depth - 1].info if depth else self.reset_info
        admissible = [
            a for a in info.get("admissible_commands") or [] if a not in self.actions(depth)[:1]
        ]
        pool = admissible or list(NONSENSE_COMMANDS[:3])
        return [self.rng.choice(pool) for _ in range(n)]

    # ------------------------------------------------------------------ checks
    def gymnasium_api(self) -> CheckResult:
        from gymnasium.utils.env_checker import check_env as gym_check_env

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gym_check_env(self.twin(), skip_render_check=True, skip_close_check=True)
        notes = sorted({str(w.message).splitlines()[0][:120] for w in caught})
        return CheckResult(
            "", True, f"{len(notes)} warning(s): {'; '.join(notes)}" if notes else ""
        )

    def determinism(self) -> CheckResult:
        other = self.twin()
        obs, info = other.reset(seed=self.seed)
        first = StepRecord("", self.reset_obs, 0.0, False, False, _jsonable(self.reset_info))
        div = first_divergence(
            [first], [StepRecord("", obs, 0.0, False, False, _jsonable(info))], -1
        )
        if div is not None:
            return CheckResult("", False, "reset differs for the same seed", div)
        div = first_divergence(self.reference, play(other, self.actions()))
        return CheckResult("", div is None, f"{len(self.reference)} steps, seed {self.seed}", div)

    def restore_equivalence(self) -> CheckResult:
        env = self.env
        depths = []
        for _ in range(self.trials):
            depth = self.random_depth()
            depths.append(depth)
            self.at_depth(env, depth)
            snap = env.snapshot()
            expected = play(env, self.actions(depth))
            for label, s in (
                ("native", snap),
                ("native again", snap),
                ("replay", snap.replay_only()),
            ):
                env.restore(s)
                mismatch = _snapshot_mismatch(snap, env.snapshot(), depth)
                if mismatch is not None:
                    return CheckResult("", False, f"{label} restore at depth {depth}", mismatch)
                div = first_divergence(expected, play(env, self.actions(depth)), depth)
                if div is not None:
                    return CheckResult("", False, f"{label} restore at depth {depth}", div)
        kind = "native+replay" if snap.is_native else "replay-only"
        return CheckResult("", True, f"{kind} snapshots at depths {depths}")

    def fork_isolation(self) -> CheckResult:
        env = self.env
        for _ in range(self.trials):
            depth = self.random_depth()
            expected = self.reference[depth:]
            self.at_depth(env, depth)
            snap = env.snapshot()
            for perturbed, checked in (("fork", "parent"), ("parent", "fork")):
                env.restore(snap)
                fork = env.fork()
                self._twins.append(fork)
                roles = {"parent": env, "fork": fork}
                play(roles[perturbed], self.alternative_actions(depth))
                div = first_divergence(expected, play(roles[checked], self.actions(depth)), depth)
                if div is not None:
                    detail = f"{checked} changed by stepping its {perturbed} (depth {depth})"
                    return CheckResult("", False, detail, div)
        return CheckResult("", True, f"{self.trials} fork pairs")

    def portable_snapshot(self) -> CheckResult:
        depth = self.random_depth()
        self.at_depth(self.env, depth)
        data = self.env.snapshot().portable()
        expected = self.reference[depth:]
        decoded = Snapshot.from_portable(data)
        self.env.restore(decoded)
        div = first_divergence(expected, play(self.env, self.actions(depth)), depth)
        if div is not None:
            return CheckResult(
                "", False, f"portable bytes restored in this process (depth {depth})", div
            )
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            future = pool.submit(_play_portable, self.env.recipe, data, self.actions(depth))
            got = future.result(timeout=PORTABLE_TIMEOUT_S)
        div = first_divergence(expected, got, depth)
        return CheckResult(
            "", div is None, f"{len(data)} bytes at depth {depth}, restored in a child process", div
        )

    def bad_input(self) -> CheckResult:
        env = self.env
        problems: list[str] = []
        passed: list[str] = []

        def expect(label: str, error: type[Exception], fn: Callable[[], Any]) -> None:
            try:
                fn()
            except error as exc:
                if str(exc).strip():
                    passed.append(label)
                else:
                    problems.append(f"{label}: {type(exc).__name__} without a message")
            except Exception as exc:
                problems.append(
                    f"{label}: expected {error.__name__}, got {type(exc).__name__}: {exc}"
                )
            else:
                problems.append(f"{label}: no error raised")

        env.reset(seed=self.seed)
        for bad in (None, 42, b"look", ["look"]):
            expect(f"action {bad!r}", InvalidActionError, lambda bad=bad: env.step(bad))
        expect(
            "over-long action",
            InvalidActionError,
            lambda: env.step("x" * (env.max_action_length + 1)),
        )
        for nonsense in ("xyzzy plugh", "\x00\n\tlook\x7f", "é漢字 ☃"):
            env.reset(seed=self.seed)
            obs, *_ = env.step(nonsense)
            if isinstance(obs, str):
                passed.append(f"nonsense {nonsense!r}")
            else:
                problems.append(f"nonsense {nonsense!r} returned {type(obs).__name__}, not str")
        env.reset(seed=self.seed)
        snap = env.snapshot()
        expect(
            "snapshot of another env type",
            SnapshotMismatchError,
            lambda: env.restore(replace(snap, env_type="some.other.Env")),
        )
        expect(
            "snapshot of another game/config",
            SnapshotMismatchError,
            lambda: env.restore(
                replace(snap, fingerprint="0" * 16, native=snap.native or object())
            ),
        )
        data = snap.portable()
        flipped = bytearray(data)
        flipped[-2] ^= 0x20
        expect(
            "bit-flipped portable snapshot",
            CorruptSnapshotError,
            lambda: env.restore(bytes(flipped)),
        )
        expect(
            "truncated portable snapshot",
            CorruptSnapshotError,
            lambda: env.restore(data[: len(data) // 2]),
        )
        expect("not a snapshot", TypeError, lambda: env.restore("snapshot"))
        expect("step before reset", ResetNeededError, lambda: self.twin().step("look"))
        ended = self._ended_episode(env)
        if ended is None:
            passed.append("step after the end (skipped: no ending reached in 300 steps)")
        else:
            expect(f"step after the episode {ended}", EpisodeEndedError, lambda: env.step("look"))
        detail = f"{len(passed)} cases ok" + (f"; {'; '.join(problems)}" if problems else "")
        return CheckResult("", not problems, detail)

    def _ended_episode(self, env: TextEnv) -> str | None:
        """Drive ``env`` to the end of an episode (expert plan first, else random actions)."""
        _, info = env.reset(seed=self.seed)
        rng = random.Random(self.seed + 2)
        for _ in range(300):
            plan = info.get("expert_plan") or []
            action = plan[0] if plan else self.choose(rng, info, env)
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                return "terminated" if terminated else "truncated"
        return None
