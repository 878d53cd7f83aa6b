"""check_env must catch broken envs and name the first divergence, not just pass good ones."""

from __future__ import annotations

import itertools
from dataclasses import replace

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
