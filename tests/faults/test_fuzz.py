"""Fuzzing with bounded budgets (hypothesis): action strings (unicode, control characters,
megabyte strings) into ToyRooms and TextWorld, env reset options, ``collect`` config files,
and portable snapshots (bit flips, truncation). The process never crashes or hangs: the env
answers, or a treegym error (its own type, with a message) comes back. Each fuzz target is one
run of the "fuzz" line in the fault summary, counted as passed or failed by the conftest; how
long the extreme inputs take per step is measured by ``bench/fuzz_step_time.py``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from treegym.config import ConfigError, resolve_config
from treegym.envs import make
from treegym.envs.errors import CorruptSnapshotError, TextEnvError
from treegym.envs.snapshot import Snapshot

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))  # fmt: skip

ACTIONS = st.one_of(
    st.text(max_size=200),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=50),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
)
MEGABYTE = "go north " * 120_000 + "\x00\x1b[2J\u202e" * 1000


def _answers_or_clear_error(env, action) -> None:
    try:
        obs, reward, terminated, truncated, info = env.step(action)
    except TextEnvError as exc:
        assert str(exc).strip()
        env.reset(seed=0, options={"task": 0} if "Toy" in type(env).__name__ else None)
    else:
        assert isinstance(obs, str) and isinstance(reward, float) and isinstance(info, dict)
        if terminated or truncated:
            env.reset(seed=0, options={"task": 0} if "Toy" in type(env).__name__ else None)


@pytest.fixture(scope="module")
def toy():
    env = make("treegym/ToyRooms-v0")
    env.reset(seed=0, options={"task": 0})
    return env


@FUZZ
@given(action=ACTIONS)
@example(action=MEGABYTE)
@example(action="")
@example(action="\x00")
def test_fuzz_toyrooms_actions(toy, action):
    _answers_or_clear_error(toy, action)


@pytest.fixture(scope="module")
def textworld(games):
    env = make("treegym/TextWorld-v0", game=games["simple"])
    env.reset(seed=0)
    return env


@settings(FUZZ, max_examples=40)
@given(action=ACTIONS)
@example(action=MEGABYTE)
@example(action="restart")
@example(action="quit\nlook")
def test_fuzz_textworld_actions(textworld, action):
    _answers_or_clear_error(textworld, action)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@FUZZ
@given(options=st.dictionaries(st.sampled_from(["task", "seed", "x", ""]), JSON, max_size=3))
@example(options={"task": -1})
@example(options={"task": "../../etc/passwd"})
@example(options={"task": 10**30})
@example(options={"task": {1, 2}})  # not a JSON value
@example(options="task=1")  # not a mapping
def test_fuzz_env_options(toy, options):
    try:
        obs, info = toy.reset(seed=0, options=options)
    except TextEnvError as exc:  # treegym's own error type, never a bare ValueError/TypeError
        assert str(exc).strip()
    else:
        assert isinstance(obs, str) and isinstance(info, dict)


TOML_VALUE = st.one_of(st.integers(-5, 10**6), st.text(max_size=12), st.booleans(),
                       st.floats(allow_nan=False, allow_infinity=False))  # fmt: skip
KEYS = st.sampled_from(["env", "sampler", "policy", "n_tasks", "workers", "seed", "concurrency",
                        "tasks", "max_new_tokens", "bogus"])  # fmt: skip


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


@FUZZ
@given(pairs=st.dictionaries(KEYS, TOML_VALUE, max_size=5), junk=st.text(max_size=40))
@example(pairs={}, junk="[[[")
@example(pairs={"n_tasks": -1}, junk="")
def test_fuzz_config_files(tmp_path_factory, pairs, junk):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    text = "".join(f"{k} = {_toml(v)}\n" for k, v in pairs.items())
    path.write_text(text + junk, encoding="utf-8", errors="surrogatepass")
    try:
        resolve_config(path, {})
    except ConfigError as exc:
        assert str(exc).strip()


@pytest.fixture(scope="module")
def portable(toy):
    toy.reset(seed=3, options={"task": 1})
    for action in ("look", "go east", "take key"):
        toy.step(action)
    return toy.snapshot().portable()


@FUZZ
@given(data=st.data())
def test_fuzz_portable_snapshots(toy, portable, data):
    kind = data.draw(st.sampled_from(["flip", "truncate", "append"]))
    blob = bytearray(portable)
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        blob += data.draw(st.binary(min_size=1, max_size=64))
    if bytes(blob) == portable:
        return
    with pytest.raises(CorruptSnapshotError) as info:
        Snapshot.from_portable(bytes(blob))
    assert str(info.value).strip()
    with pytest.raises(CorruptSnapshotError) as info:
        toy.restore(bytes(blob))
    assert str(info.value).strip()
