"""treegym/TextWorld-v0 on real generated games: conformance, snapshots, bad input."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import treegym
from treegym.envs import (
    EpisodeEndedError,
    GameFileError,
    InvalidActionError,
    SnapshotMismatchError,
    UnknownTaskError,
    check_env,
)
from treegym.envs.textworld_env import TextWorldEnv
from treegym.envs.textworld_state import copy_progression


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cooking", "simple", "coin", "treasure", "custom"])
def test_check_env_passes_on_generated_games(games, name):
    report = check_env(
        "treegym/TextWorld-v0", env_kwargs={"game": games[name]}, trials=3, horizon=15
    )
    assert report.passed, str(report)


def test_walkthrough_wins_and_info_has_the_contract_keys(cooking_game):
    env = TextWorldEnv(cooking_game)
    _, info = env.reset(seed=0)
    assert {
        "admissible_commands",
        "won",
        "lost",
        "score",
        "max_score",
        "moves",
        "task_id",
        "expert_plan",
    } <= set(info)
    total, steps = 0.0, 0
    while info["expert_plan"]:
        _, r, terminated, _, info = env.step(info["expert_plan"][0])
        total += r
        steps += 1
    assert terminated and info["won"] and not info["lost"]
    assert total == info["score"] == info["max_score"] > 0
    assert info["moves"] == steps
    with pytest.raises(EpisodeEndedError, match="terminated"):
        env.step("look")


def test_truncation_and_step_limit(cooking_game):
    env = TextWorldEnv(cooking_game, max_episode_steps=2)
    env.reset(seed=0)
    assert env.step("look")[3] is False
    assert env.step("look")[3] is True
    with pytest.raises(EpisodeEndedError):
        env.step("look")


def test_actions_are_normalised_before_the_interpreter(cooking_game):
    env = TextWorldEnv(cooking_game)
    _, info = env.reset(seed=0)
    first = info["expert_plan"][0]
    snap = env.snapshot()
    clean = env.step(first)
    # A newline would make the interpreter run two commands; a NUL hangs it.
    env.restore(snap)
    env.step(f"  {first}\n\x00\\look  ")
    assert env.snapshot().actions[-1] == f"{first} look"  # one command, no control bytes
    after_messy = env.step("inventory")
    # No second command was left buffered: a fresh env given the recorded action agrees.
    fresh = TextWorldEnv(cooking_game)
    fresh.reset(seed=0)
    fresh.step(f"{first} look")
    assert fresh.step("inventory") == after_messy
    env.restore(snap)
    assert env.step(first.replace(" ", "\t")) == clean


@pytest.mark.parametrize("bad", [None, 7, b"look", ("go", "north")])
def test_non_string_action(cooking_game, bad):
    env = TextWorldEnv(cooking_game)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="must be a str"):
        env.step(bad)


def test_nonsense_commands_get_the_games_answer(cooking_game):
    env = TextWorldEnv(cooking_game)
    env.reset(seed=0)
    for cmd in ("xyzzy", "", "é漢字", "x" * 1000):
        obs, r, terminated, _, _ = env.step(cmd)
        assert isinstance(obs, str) and r == 0 and not terminated


def test_snapshot_from_another_game_is_refused(games):
    a, b = TextWorldEnv(games["cooking"]), TextWorldEnv(games["simple"])
    a.reset(seed=0)
    b.reset(seed=0)
    with pytest.raises(SnapshotMismatchError, match="game"):
        b.restore(a.snapshot())
    # The portable form replays in b's own game: the content hash differs, so it is refused too.
    with pytest.raises(SnapshotMismatchError):
        b.restore(a.snapshot().portable())


def test_snapshot_of_toy_env_into_textworld_is_refused(cooking_game):
    toy = treegym.make("treegym/ToyRooms-v0")
    toy.reset(seed=0)
    env = TextWorldEnv(cooking_game)
    with pytest.raises(SnapshotMismatchError, match="ToyRoomsEnv"):
        env.restore(toy.snapshot())


def test_reset_options_switch_games_and_portable_snapshots_follow(games):
    env = TextWorldEnv(games["cooking"])
    _, info = env.reset(seed=0, options={"task": games["coin"]})
    assert info["task_id"] == "tw-coin_collector-s3-" + info["task_id"].rsplit("-", 1)[1]
    env.step(info["expert_plan"][0])
    data = env.snapshot().portable()
    env.reset(seed=0)  # back on the constructor's game
    env.restore(data)  # replay loads the snapshot's task again
    assert env.snapshot().actions == (info["expert_plan"][0],)
    with pytest.raises(UnknownTaskError):
        env.reset(options={"task": 12})


def test_missing_and_unsupported_game_files(tmp_path, cooking_game):
    with pytest.raises(GameFileError, match="not found"):
        TextWorldEnv(str(tmp_path / "nope.z8"))
    with pytest.raises(GameFileError, match="Glulx"):
        TextWorldEnv(str(tmp_path / "game.ulx"))
    with pytest.raises(GameFileError, match=r"not a Z-machine game"):
        TextWorldEnv(str(tmp_path / "game.txt"))
    lonely = tmp_path / "lonely.z8"
    shutil.copy(cooking_game, lonely)
    with pytest.raises(GameFileError, match=r"lonely\.json"):
        TextWorldEnv(str(lonely))


def _copy_game(src: str, dst_dir, data: bytes | None = None, meta: bytes | None = None) -> str:
    src_path, dst = Path(src), dst_dir / "g.z8"
    dst.write_bytes(data if data is not None else src_path.read_bytes())
    meta = meta if meta is not None else src_path.with_suffix(".json").read_bytes()
    dst.with_suffix(".json").write_bytes(meta)
    return str(dst)


def test_corrupt_game_files_are_caught_before_the_interpreter(tmp_path, cooking_game):
    raw = Path(cooking_game).read_bytes()
    rng = random.Random(0)
    cases = {
        "random bytes": bytes(rng.randrange(256) for _ in range(4096)),
        "truncated": raw[: len(raw) // 3],
        "bit flip": raw[:5000] + bytes([raw[5000] ^ 0x10]) + raw[5001:],
        "tiny": b"\x08abc",
    }
    for label, data in cases.items():
        d = tmp_path / label.replace(" ", "_")
        d.mkdir()
        with pytest.raises(GameFileError):
            TextWorldEnv(_copy_game(cooking_game, d, data=data))
    d = tmp_path / "badjson"
    d.mkdir()
    with pytest.raises(GameFileError, match="cannot load"):
        TextWorldEnv(_copy_game(cooking_game, d, meta=b"{not json"))


def test_copy_progression_matches_textworlds_own_copy(cooking_game):
    env = TextWorldEnv(cooking_game)
    _, info = env.reset(seed=0)
    rng = random.Random(1)
    for _ in range(12):
        progression = env._layers.tracking._game_progression
        ours, theirs = copy_progression(progression), progression.copy()
        assert ours.state == theirs.state
        assert ours.winning_policy == theirs.winning_policy
        assert ours.valid_actions == theirs.valid_actions
        assert [q.nb_completions for q in ours.quest_progressions] == [
            q.nb_completions for q in theirs.quest_progressions
        ]
        # and the copy is independent: updating it leaves the original alone
        before = set(progression.state.facts)
        if ours.valid_actions:
            ours.update(ours.valid_actions[0])
        assert set(progression.state.facts) == before
        cmds = info["admissible_commands"]
        _, _, done, trunc, info = env.step(rng.choice(cmds))
        if done or trunc:
            break


def test_restored_env_equals_a_fresh_replay_of_the_action_path(cooking_game):
    """Every snapshot point, restored natively, gives the same next steps as a fresh env."""
    env, fresh = TextWorldEnv(cooking_game), TextWorldEnv(cooking_game)
    _, info = env.reset(seed=5)
    rng = random.Random(5)
    snaps = []
    for _ in range(10):
        snaps.append(env.snapshot())
        _, _, done, _, info = env.step(rng.choice(info["admissible_commands"]))
        if done:
            break
    for snap in reversed(snaps):
        env.restore(snap)
        fresh.reset(seed=5)
        for a in snap.actions:
            fresh.step(a)
        for cmd in ("look", "inventory"):
            assert env.step(cmd) == fresh.step(cmd)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), seed=st.integers(0, 10_000), replay=st.booleans())
def test_property_random_walks_and_snapshot_depths(cooking_game, data, seed, replay):
    env = _shared_env(cooking_game)
    _, info = env.reset(seed=seed)
    depth = data.draw(st.integers(0, 12), label="depth")
    tail = data.draw(st.integers(1, 8), label="tail")
    walk = []
    for i in range(depth + tail):
        cmds = [*info["admissible_commands"], "xyzzy"]
        action = data.draw(st.sampled_from(cmds), label=f"a{i}")
        if i == depth:
            snap = env.snapshot()
        step = env.step(action)
        walk.append((action, *step))
        _, _, done, trunc, info = step
        if done or trunc:
            break
    if len(walk) <= depth:
        return
    env.restore(snap.replay_only() if replay else snap)
    for action, *expected in walk[depth:]:
        assert list(env.step(action)) == expected


_ENVS: dict[str, TextWorldEnv] = {}


def _shared_env(game: str) -> TextWorldEnv:
    if game not in _ENVS:
        _ENVS[game] = TextWorldEnv(game)
    return _ENVS[game]


# ---------------------------------------------------------------- found in review
@pytest.mark.parametrize(
    "cmd",
    [
        "save",
        "restore",
        "restart",
        "undo",
        "script",
        "transcript",
        "quit",
        "tw-trace-actions",
        "tw-extra-infos score",
    ],
)
def test_interpreter_meta_commands_do_not_touch_the_game(cooking_game, tmp_path, monkeypatch, cmd):
    monkeypatch.chdir(tmp_path)  # Frotz writes save/script files into the working directory
    env = TextWorldEnv(cooking_game)
    _, info = env.reset(seed=3)
    for a in info["expert_plan"][:2]:
        _, _, _, _, info = env.step(a)
    before = env.snapshot()
    obs, reward, terminated, _, after = env.step(cmd)
    assert "disabled" in obs and reward == 0 and not terminated
    assert after == info  # tracking untouched
    assert env.snapshot().state_digest == before.state_digest
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("action", ["take " + "é" * 100, "look \ud800", "漢" * 80])
def test_multibyte_and_surrogate_actions_are_cut_safely(cooking_game, action):
    env = TextWorldEnv(cooking_game)
    env.reset(seed=0)
    obs, *_ = env.step(action)
    recorded = env.snapshot().actions[-1]
    assert isinstance(obs, str) and len(recorded.encode("utf-8")) <= 198
    env.step("look")  # the episode is not broken
    env.restore(env.snapshot().replay_only())  # and replays


def test_refused_native_snapshot_leaves_the_episode_running(games):
    a, b = TextWorldEnv(games["cooking"]), TextWorldEnv(games["simple"])
    a.reset(seed=0)
    b.reset(seed=1)
    b.step("look")
    with pytest.raises(SnapshotMismatchError):
        b.restore(a.snapshot())
    assert b.episode_depth == 1
    b.step("look")


def test_native_restore_switches_to_the_snapshots_task(games):
    env = TextWorldEnv(games["cooking"])
    _, info = env.reset(seed=0, options={"task": games["coin"]})
    env.step(info["expert_plan"][0])
    snap = env.snapshot()
    expected = env.step("look")
    env.reset(seed=0)  # back on the cooking game
    env.restore(snap)  # native: loads the coin game again
    assert env.step("look") == expected
    fresh = TextWorldEnv(games["cooking"])
    fresh.restore(snap)
    assert fresh.step("look") == expected


def test_replay_divergence_in_interpreter_state_is_detected(cooking_game):
    import dataclasses

    from treegym.envs import ReplayDivergenceError

    env = TextWorldEnv(cooking_game)
    env.reset(seed=0)
    env.step("look")
    forged = dataclasses.replace(env.snapshot().replay_only(), state_digest="0" * 16)
    with pytest.raises(ReplayDivergenceError, match="not deterministic"):
        env.restore(forged)


def test_snapshot_deeper_than_the_step_limit_is_refused(cooking_game):
    long_env = TextWorldEnv(cooking_game, max_episode_steps=10)
    long_env.reset(seed=0)
    for _ in range(5):
        long_env.step("look")
    short = TextWorldEnv(cooking_game, max_episode_steps=3)
    with pytest.raises(SnapshotMismatchError, match="max_episode_steps"):
        short.restore(long_env.snapshot().portable())


def test_restore_after_close(cooking_game):
    env = TextWorldEnv(cooking_game)
    env.reset(seed=0)
    snap = env.snapshot()
    expected = env.step("look")
    env.close()
    env.restore(snap)
    assert env.step("look") == expected
