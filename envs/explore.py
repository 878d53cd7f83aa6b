"""Restore equivalence by exploration: the part of ``check_env`` that finds wrong snapshots.

A native state that leaves out one field is wrong only where that field matters: some steps
after the restore, or off the path the expert takes. One reference path per seed, which often
ends within a few steps, passes such envs on most seeds. So, for each of several seeds:

1. a long *trunk* walk is played from reset (expert steps mixed with random admissible
   commands and some nonsense), then played again in the same env, which must agree step by
   step (else the env is not deterministic, reported as the first differing step and field),
   taking native snapshots at several *branch depths* spread over the trunk;
2. from each branch depth, several *branches* — the trunk's own continuation, and random walks
   that leave it with another admissible command — are played uninterrupted from reset in a
   fresh instance;
3. each branch is played again after a native restore into the checked env (which has just
   played something else, so state a snapshot forgot is stale), after a replay restore, and in
   a fresh instance restored from the snapshot (a fork): all compared with the uninterrupted
   play at every step — observation, reward, both end flags, every ``info`` field (the
   admissible commands included) — and the restored env's own snapshot with the one restored.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .core import TextEnv
from .errors import TextEnvError
from .snapshot import Snapshot
from .trajectory import Coverage, Divergence, StepRecord, first_divergence, play

NONSENSE_COMMANDS = ("xyzzy", "dance wildly with the ceiling", "take the moon", "", "go")
#: Shares of a walk's steps taken from the expert's plan: the trunk follows it often enough to
#: reach the game's later states, branches rarely (they wander off the expert's path, for
#: long). Of the other steps, ``NONSENSE_SHARE`` are nonsense (the parser's refusals are state
#: too); the rest are random admissible commands.
TRUNK_EXPERT_SHARE = 0.3
BRANCH_EXPERT_SHARE = 0.1
NONSENSE_SHARE = 0.1


@dataclass(frozen=True)
class Trunk:
    """A seed's reset and its trunk walk, played uninterrupted."""

    seed: int
    obs: str
    info: dict[str, Any]
    records: list[StepRecord]

    def actions(self, start: int = 0, stop: int | None = None) -> list[str]:
        return [r.action for r in self.records[start:stop]]


@dataclass(frozen=True)
class Failure:
    detail: str
    divergence: Divergence | None = None


def choose(
    rng: random.Random,
    info: dict[str, Any],
    env: TextEnv,
    avoid: str | None = None,
    expert_share: float = TRUNK_EXPERT_SHARE,
) -> str:
    """One walk step's action (``avoid``: an action not to take, to leave a known path)."""
    plan = [a for a in info.get("expert_plan") or [] if a != avoid][:1]
    admissible = info.get("admissible_commands") or []
    choices = [a for a in admissible if a != avoid]
    if plan and rng.random() < expert_share:
        return plan[0]
    if not admissible:
        return env.action_space.sample()
    if rng.random() < NONSENSE_SHARE or not choices:
        return rng.choice(NONSENSE_COMMANDS)
    return rng.choice(choices)


def walk(
    env: TextEnv,
    info: dict[str, Any],
    rng: random.Random,
    steps: int,
    *,
    avoid: str | None = None,
    expert_share: float = TRUNK_EXPERT_SHARE,
) -> list[StepRecord]:
    """Play up to ``steps`` chosen actions from the env's current state (``info`` is its last
    info); the first action is not ``avoid``."""
    records: list[StepRecord] = []
    for _ in range(steps):
        records += play(env, [choose(rng, info, env, avoid, expert_share)])
        info, avoid = records[-1].info, None
        if records[-1].ended:
            break
    return records


def branch_depths(length: int, trials: int, rng: random.Random) -> list[int]:
    """``trials`` depths in ``range(length)``, one from each of as many equal stretches (so
    branches start early, midway and late), sorted and distinct."""
    bins = min(trials, length)
    edges = [i * length // bins for i in range(bins + 1)] if bins else []
    return sorted({rng.randrange(lo, hi) for lo, hi in itertools.pairwise(edges)})


def snapshot_mismatch(expected: Snapshot, got: Snapshot, depth: int) -> Divergence | None:
    """A restored env must snapshot to the same recipe and digest it was restored from."""
    for name in ("actions", "ended", "rng_state", "state_digest", "fingerprint"):
        if getattr(expected, name) != getattr(got, name):
            return Divergence(
                depth, f"snapshot.{name}", getattr(expected, name), getattr(got, name)
            )
    return None


class Explorer:
    """Runs the exploration of the module docstring on ``env``; ``coverage`` counts what was
    compared. ``close()`` closes the fresh instances it made."""

    def __init__(
        self, env: TextEnv, coverage: Coverage, *, trials: int, branches: int, horizon: int
    ) -> None:
        self.env, self.coverage = env, coverage
        self.trials, self.branches, self.horizon = trials, branches, horizon
        self._trunks: dict[int, Trunk] = {}
        self._ref: TextEnv | None = None

    def trunk(self, seed: int) -> Trunk:
        """The trunk of ``seed``, played uninterrupted in the env (once)."""
        if seed not in self._trunks:
            obs, info = self.env.reset(seed=seed)
            records = walk(self.env, info, random.Random(seed), self.horizon)
            self._trunks[seed] = Trunk(seed, obs, info, records)
        return self._trunks[seed]

    def run(self, seeds: list[int]) -> Failure | None:
        for seed in seeds:
            failure = self._explore(seed)
            if failure is not None:
                return failure
        return None

    def depths(self, seed: int) -> list[int]:
        """The branch depths of ``seed``'s trunk."""
        length = len(self.trunk(seed).records)
        return branch_depths(length, self.trials, random.Random(f"depths/{seed}"))

    def _explore(self, seed: int) -> Failure | None:
        trunk = self.trunk(seed)
        depths = self.depths(seed)
        snaps = self._follow(seed, trunk, depths)
        if isinstance(snaps, Failure):
            return snaps
        for depth in depths:
            self.coverage.branch_points += 1
            for j in range(self.branches):
                failure = self._branch(seed, depth, snaps[depth], j)
                if failure is not None:
                    return failure
        return None

    def _compare(
        self, expected: list[StepRecord], got: list[StepRecord], offset: int
    ) -> Divergence | None:
        self.coverage.count(got, offset)
        return first_divergence(expected, got, offset)

    def _follow(self, seed: int, trunk: Trunk, depths: list[int]) -> dict[int, Snapshot] | Failure:
        """Play the trunk again in the env, snapshotting at ``depths``."""
        self.env.reset(seed=seed)
        snaps, done = {}, 0
        for depth in [*depths, len(trunk.records)]:
            got = play(self.env, trunk.actions(done, depth))
            div = self._compare(trunk.records[done:depth], got, done)
            if div is not None:
                return Failure(
                    f"the same seed ({seed}) and actions played differently in one env: "
                    "it is not deterministic, so no snapshot of it can be checked",
                    div,
                )
            snaps[depth], done = self.env.snapshot(), depth
        return snaps

    def _branch(self, seed: int, depth: int, snap: Snapshot, j: int) -> Failure | None:
        reference = self.reference(seed, depth, j)
        if isinstance(reference, Failure):
            return reference
        self.coverage.branches += 1
        for label, target, restored in self._variants(snap):
            where = f"{label} at depth {depth} (seed {seed}, branch {j})"
            try:
                target.restore(restored)
                mismatch = snapshot_mismatch(snap, target.snapshot(), depth)
                if mismatch is not None:
                    return Failure(where, mismatch)
                div = self._compare(reference, play(target, [r.action for r in reference]), depth)
            except TextEnvError as exc:
                return Failure(f"{where}: {type(exc).__name__}: {exc}")
            if div is not None:
                return Failure(where, div)
        return None

    def _variants(self, snap: Snapshot) -> Iterator[tuple[str, TextEnv, Snapshot]]:
        if snap.is_native:
            yield "native restore", self.env, snap
        yield "replay restore", self.env, snap.replay_only()
        fork = self.env._spawn_twin()
        try:
            yield "fork", fork, snap
        finally:
            fork.close()

    def close(self) -> None:
        if self._ref is not None:
            self._ref.close()

    def reference(self, seed: int, depth: int, j: int) -> list[StepRecord] | Failure:
        """Branch ``j`` from ``depth``, played uninterrupted from reset in a fresh instance
        (branch 0 is the trunk's own continuation)."""
        trunk = self.trunk(seed)
        if j == 0:
            return trunk.records[depth:]
        if self._ref is None:
            self._ref = self.env._spawn_twin()
        _, info = self._ref.reset(seed=seed)
        prefix = play(self._ref, trunk.actions(0, depth))
        div = self._compare(trunk.records[:depth], prefix, 0)
        if div is not None:
            return Failure(
                f"a fresh instance played seed {seed}'s trunk differently: the env is not "
                "deterministic, so no snapshot of it can be checked",
                div,
            )
        info = prefix[-1].info if prefix else info
        rng = random.Random(f"branch/{seed}/{depth}/{j}")
        avoid = trunk.records[depth].action
        return walk(
            self._ref, info, rng, self.horizon, avoid=avoid, expert_share=BRANCH_EXPERT_SHARE
        )
