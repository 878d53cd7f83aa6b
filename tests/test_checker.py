"""check_env must catch broken envs and name the first divergence, not just pass good ones."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from treegym.envs import check_env
from treegym.envs.toy import ToyRoomsEnv


class ForgetsRngToy(ToyRoomsEnv):
    """Restore puts the game state back but re-seeds the RNG, so later slips differ."""

    def restore(self, snapshot):
        super().restore(snapshot)
        self.np_random.bit_generator.state = type(self.np_random.bit_generator)(99).state


class SharedStateToy(ToyRoomsEnv):
    """Forks share one mutable state holder with their parent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.box = {"state": self.state}

    @property
    def state(self):
        return self.box["state"] if hasattr(self, "box") else self._early

    @state.setter
    def state(self, value):
        if hasattr(self, "box"):
            self.box["state"] = value
        else:
            self._early = value

    def _spawn_twin(self):
        twin = super()._spawn_twin()
        twin.box = self.box
        return twin


class NondeterministicToy(ToyRoomsEnv):
    """Every fresh instance numbers its rooms differently."""

    _instances = itertools.count()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layout = replace(
            self.layout, rooms=tuple(f"{r}{next(self._instances)}" for r in self.layout.rooms)
        )

    def _reset(self, seed, options):
        return super()._reset(seed, {})


class SilentBadInputToy(ToyRoomsEnv):
    """Swallows non-string actions instead of refusing them."""

    def _validate_action(self, action):
        return action if isinstance(action, str) else "look"


class AchingLegsToy(ToyRoomsEnv):
    """Counts the rooms walked into, outside the native state; from the 8th, every room says
    'Your legs ache.' A native restore keeps the count the env had, so the text is wrong only
    several moves after the restore (and never within the expert's short path)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.walked = 0

    def _reset(self, seed, options):
        self.walked = 0
        return super()._reset(seed, options)

    def _step(self, action):
        before = self.state.room
        obs, reward, terminated, info = super()._step(action)
        self.walked += self.state.room != before
        return obs + ("\nYour legs ache." if self.walked >= 8 else ""), reward, terminated, info


class PocketsToy(ToyRoomsEnv):
    """'inventory' (never in the expert's plan) makes later looks mention the pockets; that
    memory is not in the native state, so only off-path play after a restore shows it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.checked = False

    def _reset(self, seed, options):
        self.checked = False
        return super()._reset(seed, options)

    def _step(self, action):
        obs, reward, terminated, info = super()._step(action)
        if action == "look" and self.checked:
            obs += "\nYou know your pockets by heart."
        self.checked = self.checked or action == "inventory"
        return obs, reward, terminated, info


class AliasedVisitsToy(ToyRoomsEnv):
    """Rooms seen before say so; the native state hands out the live set of visited rooms
    instead of a copy, so a snapshot changes as the env plays on after taking it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.visited = {0}

    def _reset(self, seed, options):
        self.visited = {0}
        return super()._reset(seed, options)

    def _get_native(self):
        return (self.state, self.visited)

    def _set_native(self, native):
        self.state, self.visited = native

    def _step(self, action):
        before = self.state.room
        obs, reward, terminated, info = super()._step(action)
        if self.state.room != before:
            obs += "\nYou have been here before." if self.state.room in self.visited else ""
            self.visited.add(self.state.room)
        return obs, reward, terminated, info


class UnseededReplayOnlyToy(ToyRoomsEnv):
    """No native snapshots, and the floor slips by Python's global RNG (not ``np_random``):
    the same seed plays differently, so replay-based restores cannot be exact."""

    def _get_native(self):
        return None

    def _step(self, action):
        if action.startswith("go ") and random.random() < 0.5:
            return "You slip on the wet floor.", 0.0, False, self._info()
        return super()._step(action)


class ProcessLocalToy(ToyRoomsEnv):
    """Keeps part of its configuration in a class attribute set at run time instead of in its
    constructor arguments: a portable snapshot restored in another process sees the default."""

    wall_colour = "white"

    def _describe(self):
        return super()._describe() + f"\nThe walls are {self.wall_colour}."


class ReusedInfoToy(ToyRoomsEnv):
    """Returns one info dict, updated in place, from every step (callers keeping the info of
    an earlier step see it change): gymnasium's own checker catches that."""

    def _info(self):
        shared = self.__dict__.setdefault("_shared_info", {})
        shared.update(super()._info())
        return shared


def _result(report, name):
    return next(r for r in report.results if r.name == name)


def test_good_env_passes_everything():
    assert check_env(ToyRoomsEnv()).passed


def test_restore_that_loses_rng_state_is_caught_with_divergence():
    report = check_env(ForgetsRngToy(slip_prob=0.5), horizon=25)
    result = _result(report, "restore_equivalence")
    assert not result.passed and not report.passed
    # The restored env's own snapshot already shows the lost RNG state, before any step.
    assert result.divergence is not None and result.divergence.field == "snapshot.rng_state"
    assert "first divergence" in str(report)


def test_forks_sharing_state_are_caught():
    report = check_env(SharedStateToy(slip_prob=0.0), horizon=25, skip=["portable_snapshot"])
    result = _result(report, "fork_isolation")
    assert not result.passed
    assert "changed by stepping" in result.detail and result.divergence is not None


def test_nondeterministic_env_fails_determinism():
    report = check_env(NondeterministicToy(), skip=["portable_snapshot", "gymnasium_api"])
    result = _result(report, "determinism")
    assert not result.passed
    assert result.divergence is not None and result.divergence.field == "obs"


def test_missing_bad_input_errors_are_reported():
    report = check_env(SilentBadInputToy(), skip=["portable_snapshot"])
    result = _result(report, "bad_input")
    assert not result.passed and "action None: no error raised" in result.detail


def test_skip_marks_checks_skipped():
    report = check_env(ToyRoomsEnv(), skip=["portable_snapshot", "gymnasium_api"])
    assert [r.name for r in report.results if r.skipped] == ["gymnasium_api", "portable_snapshot"]
    assert report.passed


#: Seeds on which the single-reference-path checker this replaced passed all three envs below.
SEEDS_ONE_PATH_MISSED = (1, 3, 5)


@pytest.mark.parametrize("seed", SEEDS_ONE_PATH_MISSED)
@pytest.mark.parametrize(
    "broken", [AchingLegsToy, PocketsToy, AliasedVisitsToy], ids=lambda c: c.__name__
)
def test_native_state_missing_what_shows_only_later_or_off_path_is_caught(broken, seed):
    report = check_env(broken(), seed=seed, skip=["portable_snapshot", "gymnasium_api"])
    result = _result(report, "restore_equivalence")
    assert not result.passed, str(report)
    assert result.divergence is not None and result.divergence.field == "obs", str(report)
    assert result.detail.startswith(("native restore", "fork")), result.detail


def test_nondeterministic_replay_only_env_gets_a_divergence_not_a_crash():
    report = check_env(UnseededReplayOnlyToy(), skip=["portable_snapshot", "gymnasium_api"])
    result = _result(report, "restore_equivalence")
    assert not result.passed
    assert "raised" not in result.detail and "EpisodeEndedError" not in result.detail
    assert result.divergence is not None and result.divergence.field in ("obs", "info.moves")
    assert result.divergence.step >= 1


def test_exploration_covers_several_seeds_branches_and_deep_states():
    report = check_env(ToyRoomsEnv(), seed=5, skip=["portable_snapshot"])
    assert report.passed, str(report)
    cov = report.coverage
    assert cov.seeds == [5, 6, 7] and cov.branch_points >= 6 and cov.branches >= 12
    assert cov.deepest == 30 and cov.states > 500  # walks reach the truncation at 30 steps
    assert f"{cov.states} states compared, deepest depth {cov.deepest}" in str(report)


def test_portable_snapshot_check_catches_state_that_stays_in_this_process():
    ProcessLocalToy.wall_colour = "blue"
    try:
        report = check_env(ProcessLocalToy(), skip=["gymnasium_api"])
    finally:
        ProcessLocalToy.wall_colour = "white"
    result = _result(report, "portable_snapshot")
    assert not result.passed and "child process" in result.detail, str(report)
    assert result.divergence is not None and "walls are" in str(result.divergence.expected)
    others = [r for r in report.results if r.name != "portable_snapshot"]
    assert all(r.passed for r in others), str(report)  # only another process can tell


def test_gymnasium_api_check_catches_reused_info_dicts():
    report = check_env(ReusedInfoToy(), skip=["portable_snapshot"])
    result = _result(report, "gymnasium_api")
    assert not result.passed and "info" in result.detail, str(report)


@pytest.mark.parametrize("bad", [{"seeds": 0}, {"horizon": -3}, {"branches": True}, {"seed": -1}])
def test_bad_plan_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=f"check_env {next(iter(bad))} must be"):
        check_env(ToyRoomsEnv(), **bad)
