"""Recording and comparing trajectories: what ``check_env`` compares, and how it counts.

Two plays of an env are the same when every step agrees on the action, observation, reward,
both end flags and every ``info`` field (``admissible_commands`` included), with ``info``
normalised to JSON values so a tuple and a list, or two equal dicts, compare equal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .core import TextEnv


@dataclass(frozen=True)
class StepRecord:
    """One step as compared by the checker (``info`` normalised to JSON values)."""

    action: str
    obs: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]

    @property
    def ended(self) -> bool:
        return self.terminated or self.truncated


@dataclass(frozen=True)
class Divergence:
    """The first place two trajectories differ."""

    step: int
    field: str
    expected: Any
    got: Any

    def __str__(self) -> str:
        return (
            f"step {self.step}, field {self.field!r}: expected {short(self.expected)}, "
            f"got {short(self.got)}"
        )


@dataclass
class Coverage:
    """What the checks compared: the evidence behind a pass (printed with the report)."""

    seeds: list[int] = field(default_factory=list)
    states: int = 0
    """Steps compared between two plays (each step is one state reached both ways)."""
    deepest: int = 0
    """Deepest episode depth (steps since reset) at which two plays were compared."""
    branch_points: int = 0
    branches: int = 0

    def count(self, records: list[StepRecord], offset: int) -> None:
        self.states += len(records)
        if records:
            self.deepest = max(self.deepest, offset + len(records))

    def __str__(self) -> str:
        return (
            f"{self.states} states compared, deepest depth {self.deepest}, seeds {self.seeds}, "
            f"{self.branches} branches from {self.branch_points} branch points"
        )


def short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def jsonable(info: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(info, sort_keys=True, default=repr))


def play(env: TextEnv, actions: Iterable[str]) -> list[StepRecord]:
    """Step ``env`` through ``actions`` (stopping at the episode's end) and record each step."""
    records = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        records.append(StepRecord(action, obs, reward, terminated, truncated, jsonable(info)))
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
