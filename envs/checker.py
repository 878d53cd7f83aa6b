"""``check_env``: does an environment keep the snapshot/restore contract?

Run it before spending rollouts on a new env (``treegym check ENV_ID`` from the shell). Each
check plays seeded trajectories and compares them step by step — observation, reward, flags and
every ``info`` field — reporting the *first divergence* (step, field, both values):

* ``gymnasium_api`` — gymnasium's own ``check_env`` on a fresh instance;
* ``determinism`` — two fresh instances, same seed, same actions: identical trajectories;
* ``restore_equivalence`` — the exploration of :mod:`.explore`: long walks from several seeds,
  branches (random admissible commands, not only the expert's) from several depths, each
  played uninterrupted, after a native restore, after a replay restore and in a fork;
* ``fork_isolation`` — stepping a fork never changes its parent, and the reverse;
* ``portable_snapshot`` — snapshots' bytes restored in another process play on identically;
* ``bad_input`` — non-string actions, nonsense commands, foreign and corrupt snapshots, steps
  after the end or before reset: each gives the game's answer or a clear treegym error.

The report says what was covered (:class:`~.trajectory.Coverage`: states compared, deepest
depth, seeds, branches), so a pass can be weighed.
"""

from __future__ import annotations

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
from .explore import NONSENSE_COMMANDS, Explorer, Failure, choose
from .snapshot import Snapshot
from .trajectory import Coverage, Divergence, StepRecord, first_divergence, jsonable, play

PORTABLE_TIMEOUT_S = 300


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
    coverage: Coverage = field(default_factory=Coverage)

    @property
    def passed(self) -> bool:
        return all(r.passed or r.skipped for r in self.results)

    def __str__(self) -> str:
        lines = [f"check_env({self.env}): {'passed' if self.passed else 'FAILED'}"]
        for r in self.results:
            lines.append(f"  {r.status:8} {r.name}" + (f" — {r.detail}" if r.detail else ""))
            if r.divergence is not None:
                lines.append(f"           first divergence: {r.divergence}")
        lines.append(f"  coverage: {self.coverage}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    """How much ``check_env`` explores (the defaults run in well under a minute on each
    built-in env)."""

    seed: int = 0
    """First seed; ``seeds`` consecutive seeds are checked."""
    seeds: int = 3
    trials: int = 3
    """Branch depths per seed (and snapshot depths of the fork and portable checks)."""
    branches: int = 3
    """Branches per depth: the trunk's continuation and ``branches - 1`` random walks."""
    horizon: int = 30
    """Steps of each walk (trunk and branches), unless the episode ends first."""

    def __post_init__(self) -> None:
        for name in ("seeds", "trials", "branches", "horizon"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"check_env {name} must be a positive int, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"check_env seed must be a non-negative int, got {self.seed!r}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))


def check_env(
    env: TextEnv | str,
    *,
    seed: int = Plan.seed,
    seeds: int = Plan.seeds,
    trials: int = Plan.trials,
    branches: int = Plan.branches,
    horizon: int = Plan.horizon,
    env_kwargs: dict[str, Any] | None = None,
    skip: Iterable[str] = (),
) -> CheckReport:
    """Run every check on ``env`` (an instance, or a registered id built with ``env_kwargs``).

    ``seed`` ... ``horizon`` are :class:`Plan`'s fields. The env passed in is used and left
    in an arbitrary state; fresh instances are built from its recipe for the checks that need
    them. ``skip`` names checks not to run.
    """
    settings = Plan(seed, seeds, trials, branches, horizon)
    if isinstance(env, str):
        from .registry import make

        env = make(env, **(env_kwargs or {}))
    if not isinstance(env, TextEnv):
        raise TypeError(f"check_env needs a treegym TextEnv, got {type(env).__name__}")
    report = CheckReport(env=env.spec.id if env.spec is not None else env.env_type)
    ctx = _Context(env, settings, report.coverage)
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
def _play_portable(
    recipe: EnvRecipe, cases: list[tuple[bytes, list[str]]]
) -> list[list[StepRecord]]:
    """Child-process side of ``portable_snapshot``: restore each snapshot's bytes in one fresh
    env and play its actions."""
    env = recipe.build()
    try:
        out = []
        for data, actions in cases:
            env.restore(data)
            out.append(play(env, actions))
        return out
    finally:
        env.close()


class _Context:
    """State shared by the checks: the env, the explorer (whose first trunk is the reference
    trajectory of the other checks), fresh twins, and the coverage counter."""

    def __init__(self, env: TextEnv, plan: Plan, coverage: Coverage) -> None:
        self.env, self.plan, self.coverage = env, plan, coverage
        self.seed, self.trials = plan.seed, plan.trials
        coverage.seeds = plan.seed_list
        self.rng = random.Random(plan.seed)
        self._twins: list[TextEnv] = []
        self.explorer = Explorer(
            env, coverage, trials=plan.trials, branches=plan.branches, horizon=plan.horizon
        )
        trunk = self.explorer.trunk(plan.seed)
        self.reset_obs, self.reset_info, self.reference = trunk.obs, trunk.info, trunk.records

    def close(self) -> None:
        self.explorer.close()
        for twin in self._twins:
            twin.close()

    def twin(self) -> TextEnv:
        twin = self.env._spawn_twin()
        self._twins.append(twin)
        return twin

    def compare(
        self, expected: list[StepRecord], got: list[StepRecord], offset: int = 0
    ) -> Divergence | None:
        self.coverage.count(got, offset)
        return first_divergence(expected, got, offset)

    # ------------------------------------------------------------------ reference paths
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
        first = StepRecord("", self.reset_obs, 0.0, False, False, jsonable(self.reset_info))
        div = first_divergence(
            [first], [StepRecord("", obs, 0.0, False, False, jsonable(info))], -1
        )
        if div is not None:
            return CheckResult("", False, "reset differs for the same seed", div)
        div = self.compare(self.reference, play(other, self.actions()))
        return CheckResult("", div is None, f"{len(self.reference)} steps, seed {self.seed}", div)

    def restore_equivalence(self) -> CheckResult:
        failure = self.explorer.run(self.plan.seed_list)
        if failure is not None:
            return CheckResult("", False, failure.detail, failure.divergence)
        cov = self.coverage
        kinds = "native/replay/fork" if self.env.snapshot().is_native else "replay/fork"
        return CheckResult(
            "", True, f"{cov.branches} branches from {cov.branch_points} depths of "
            f"{len(cov.seeds)} seeds, each {kinds}-restored"
        )  # fmt: skip

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
                div = self.compare(expected, play(roles[checked], self.actions(depth)), depth)
                if div is not None:
                    detail = f"{checked} changed by stepping its {perturbed} (depth {depth})"
                    return CheckResult("", False, detail, div)
        return CheckResult("", True, f"{self.trials} fork pairs")

    def portable_snapshot(self) -> CheckResult:
        """A snapshot of each seed (at its middle branch depth) as bytes, restored here and in
        one child process, each playing a long random branch (not only the trunk's end)."""
        cases, expected = self._portable_cases()
        if isinstance(cases, Failure):
            return CheckResult("", False, cases.detail, cases.divergence)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            future = pool.submit(_play_portable, self.env.recipe, cases)
            plays = future.result(timeout=PORTABLE_TIMEOUT_S)
        for (where, depth, reference), got in zip(expected, plays, strict=True):
            div = self.compare(reference, got, depth)
            if div is not None:
                return CheckResult("", False, f"{where} restored in a child process", div)
        size = max(len(data) for data, _ in cases)
        return CheckResult(
            "", True, f"{len(cases)} snapshots (up to {size} bytes) restored in a child process"
        )

    def _portable_cases(self):
        """``([(bytes, actions)], [(label, depth, expected records)])``, each case checked in
        this process first, or the first :class:`Failure`."""
        branch = 1 if self.plan.branches > 1 else 0
        cases, expected = [], []
        for seed in self.plan.seed_list:
            trunk, depths = self.explorer.trunk(seed), self.explorer.depths(seed)
            for depth in depths[len(depths) // 2 :][:1]:
                reference = self.explorer.reference(seed, depth, branch)
                if isinstance(reference, Failure):
                    return reference, []
                where = f"bytes of depth {depth} (seed {seed}, branch {branch})"
                self.env.reset(seed=seed)
                play(self.env, trunk.actions(0, depth))
                data = self.env.snapshot().portable()
                self.env.restore(Snapshot.from_portable(data))
                actions = [r.action for r in reference]
                div = self.compare(reference, play(self.env, actions), depth)
                if div is not None:
                    return Failure(f"{where} restored in this process", div), []
                cases.append((data, actions))
                expected.append((where, depth, reference))
        return cases, expected

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
            action = plan[0] if plan else choose(rng, info, env)
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                return "terminated" if terminated else "truncated"
        return None
