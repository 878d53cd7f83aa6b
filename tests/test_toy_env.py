"""ToyRooms and the TextEnv base contract (validation, truncation, snapshots, forks)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import treegym
from treegym.envs import (
    EpisodeEndedError,
    InvalidActionError,
    ReplayDivergenceError,
    ResetNeededError,
    SnapshotMismatchError,
    UnknownTaskError,
    check_env,
)
from treegym.envs.toy import ToyRoomsEnv

COMMANDS = [
    "go east", "go west", "take key", "unlock chest with key", "open chest", "take coin",
    "jump into pit", "look", "inventory", "dance", "",
]  # fmt: skip


def trajectory(env, actions):
    out = []
    for a in actions:
        if env._episode.ended:
            break
        out.append(env.step(a))
    return out


def test_expert_plan_wins_every_task():
    env = ToyRoomsEnv(slip_prob=0.0, max_episode_steps=None)
    for task in range(20):
        _, info = env.reset(seed=task, options={"task": task})
        total = 0.0
        while info["expert_plan"]:
            _, r, terminated, truncated, info = env.step(info["expert_plan"][0])
            total += r
        assert terminated and info["won"] and total == 1.0 and not truncated


def test_truncation_at_max_episode_steps_then_step_refused():
    env = ToyRoomsEnv(max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step("look")[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    with pytest.raises(EpisodeEndedError, match="truncated after 3 steps"):
        env.step("look")


def test_reset_without_seed_is_replayable_and_seeded_reset_is_deterministic():
    env = ToyRoomsEnv(slip_prob=0.5)
    env.reset()  # seed drawn from the env's RNG and recorded
    trajectory(env, ["go east"] * 6)
    snap = env.snapshot()
    expected = trajectory(env, ["go east", "go west"] * 3)
    env.restore(snap.replay_only())
    assert trajectory(env, ["go east", "go west"] * 3) == expected


def test_slips_come_from_the_env_rng_so_restore_must_restore_it():
    env = ToyRoomsEnv(slip_prob=0.5, max_episode_steps=None)
    env.reset(seed=1)
    snap = env.snapshot()
    first = [env.step("go east")[0] for _ in range(8)]
    assert any("slip" in o for o in first) and any("slip" not in o for o in first)
    env.restore(snap)
    assert [env.step("go east")[0] for _ in range(8)] == first


def test_unknown_task_and_bad_constructor_arguments():
    env = ToyRoomsEnv()
    with pytest.raises(UnknownTaskError, match="toy-<n>"):
        env.reset(options={"task": "castle"})
    with pytest.raises(ValueError, match="slip_prob"):
        ToyRoomsEnv(slip_prob=1.5)
    with pytest.raises(ValueError, match="max_episode_steps"):
        ToyRoomsEnv(max_episode_steps=0)
    with pytest.raises(TypeError, match="JSON"):
        env.reset(options={"task": object()})


def test_step_and_snapshot_need_an_episode():
    env = ToyRoomsEnv()
    with pytest.raises(ResetNeededError, match="reset"):
        env.step("look")
    with pytest.raises(ResetNeededError):
        env.snapshot()


@pytest.mark.parametrize("bad", [None, 3, 2.5, b"look", ["look"], {"a": 1}])
def test_non_string_actions_are_refused_and_do_not_count(bad):
    env = ToyRoomsEnv()
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="must be a str"):
        env.step(bad)
    assert env.episode_depth == 0


def test_a_step_that_raises_marks_the_episode_broken_until_restore():
    env = ToyRoomsEnv()
    env.reset(seed=0)
    snap = env.snapshot()
    original = env._step
    env._step = lambda action: 1 / 0  # an env bug mid-step
    with pytest.raises(ZeroDivisionError):
        env.step("look")
    env._step = original
    with pytest.raises(ResetNeededError, match="ZeroDivisionError"):
        env.step("look")
    env.restore(snap)
    assert env.step("look")[0].startswith("-=")


def test_snapshot_from_other_layout_or_type_is_refused():
    a, b = ToyRoomsEnv(task=0), ToyRoomsEnv(task=1)
    a.reset(seed=0)
    b.reset(seed=0)
    with pytest.raises(SnapshotMismatchError, match="another game, task or configuration"):
        b.restore(a.snapshot())
    other = ToyRoomsEnv(n_rooms=5)
    other.reset(seed=0)
    with pytest.raises(SnapshotMismatchError):
        a.restore(other.snapshot())


class ClockSeededToy(ToyRoomsEnv):
    """Draws from the env RNG a varying number of times: replay cannot reproduce it."""

    def _step(self, action):
        for _ in range(next(self._calls)):  # more draws on every call, replays included
            self.np_random.random()
        return super()._step(action)


def test_replay_detects_a_nondeterministic_env():
    import itertools

    env = ClockSeededToy(slip_prob=0.5)
    env._calls = itertools.count()
    env.reset(seed=3)
    trajectory(env, ["go east"] * 5)
    snap = env.snapshot().replay_only()
    with pytest.raises(ReplayDivergenceError, match="RNG"):
        env.restore(snap)


def test_gymnasium_make_builds_the_registered_env():
    import gymnasium

    env = gymnasium.make("treegym/ToyRooms-v0", n_rooms=3)
    assert isinstance(env.unwrapped, ToyRoomsEnv) and env.unwrapped.n_rooms == 3
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, str)
    snap = env.unwrapped.snapshot()
    env.step("look")
    env.unwrapped.restore(snap)
    assert env.unwrapped.episode_depth == 0


def test_check_env_passes_on_toyrooms():
    report = check_env("treegym/ToyRooms-v0", trials=4, horizon=25)
    assert report.passed, str(report)
    assert [r.name for r in report.results] == [
        "gymnasium_api", "determinism", "restore_equivalence", "fork_isolation",
        "portable_snapshot", "bad_input",
    ]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.lists(st.sampled_from(COMMANDS), max_size=12),
    suffix=st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=12),
    seed=st.integers(0, 2**31 - 2),
    task=st.integers(0, 50),
    replay=st.booleans(),
)
def test_restore_then_replay_is_identical(prefix, suffix, seed, task, replay):
    env = ToyRoomsEnv(slip_prob=0.3, max_episode_steps=20)
    env.reset(seed=seed, options={"task": task})
    trajectory(env, prefix)
    snap = env.snapshot()
    expected = trajectory(env, suffix)
    env.restore(snap.replay_only() if replay else snap)
    assert trajectory(env, suffix) == expected
    assert env.snapshot().actions == snap.actions + tuple(suffix[: len(expected)])


@settings(max_examples=100, deadline=None)
@given(
    prefix=st.lists(st.sampled_from(COMMANDS), max_size=10),
    mine=st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=8),
    theirs=st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=8),
    seed=st.integers(0, 1000),
)
def test_forks_are_isolated(prefix, mine, theirs, seed):
    env = treegym.make("treegym/ToyRooms-v0", slip_prob=0.3, max_episode_steps=None)
    env.reset(seed=seed)
    trajectory(env, prefix)
    snap = env.snapshot()
    expected = trajectory(env, mine)
    env.restore(snap)
    fork = env.fork()
    trajectory(fork, theirs)
    assert trajectory(env, mine) == expected
