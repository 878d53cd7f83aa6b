"""Portable snapshot encoding: round trip, and every kind of corruption detected."""

from __future__ import annotations

import dataclasses
import json

import pytest

from treegym.envs import CorruptSnapshotError, Snapshot
from treegym.envs.snapshot import PORTABLE_MAGIC


def _snap(**kw) -> Snapshot:
    base = dict(
        env_type="pkg.Env",
        fingerprint="abc",
        seed=7,
        options='{"task":1}',
        actions=("go east", "take key"),
        ended=None,
        rng_state={"bit_generator": "PCG64", "state": {"state": 2**100 + 3, "inc": 5}},
        native=object(),
    )
    return Snapshot(**{**base, **kw})


def test_portable_round_trip_drops_native_and_keeps_everything_else():
    snap = _snap(ended="truncated")
    back = Snapshot.from_portable(snap.portable())
    assert back.native is None and not back.is_native
    for f in dataclasses.fields(Snapshot):
        if f.name != "native":
            assert getattr(back, f.name) == getattr(snap, f.name), f.name
    assert back.depth == 2


def test_snapshot_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _snap().seed = 3


@pytest.mark.parametrize("position", [len(PORTABLE_MAGIC) + 3, len(PORTABLE_MAGIC) + 70, -1])
def test_bit_flip_anywhere_is_detected(position):
    data = bytearray(_snap().portable())
    data[position] ^= 0x01
    with pytest.raises(CorruptSnapshotError):
        Snapshot.from_portable(bytes(data))


@pytest.mark.parametrize("cut", [0, 5, len(PORTABLE_MAGIC) + 10, -1])
def test_truncation_is_detected(cut):
    data = _snap().portable()
    with pytest.raises(CorruptSnapshotError):
        Snapshot.from_portable(data[:cut])


def test_foreign_bytes_and_types_are_rejected_with_reason():
    with pytest.raises(CorruptSnapshotError, match="header"):
        Snapshot.from_portable(b"\x80\x04pickle-bytes")
    with pytest.raises(CorruptSnapshotError, match="must be bytes"):
        Snapshot.from_portable("text")  # type: ignore[arg-type]


def _forge(payload: object) -> bytes:
    import hashlib

    body = json.dumps(payload).encode()
    return PORTABLE_MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def test_well_checksummed_but_malformed_payloads_are_rejected():
    good = json.loads(_snap().portable().split(b"\n", 2)[2])
    with pytest.raises(CorruptSnapshotError, match="not a JSON object"):
        Snapshot.from_portable(_forge([1, 2]))
    with pytest.raises(CorruptSnapshotError, match="missing"):
        Snapshot.from_portable(_forge({k: v for k, v in good.items() if k != "seed"}))
    with pytest.raises(CorruptSnapshotError, match="'seed'"):
        Snapshot.from_portable(_forge({**good, "seed": "7"}))
    with pytest.raises(CorruptSnapshotError, match="strings only"):
        Snapshot.from_portable(_forge({**good, "actions": ["ok", 3]}))
    with pytest.raises(CorruptSnapshotError, match="ended"):
        Snapshot.from_portable(_forge({**good, "ended": "exploded"}))


def test_semantically_impossible_payloads_are_rejected():
    good = json.loads(_snap().portable().split(b"\n", 2)[2])
    with pytest.raises(CorruptSnapshotError, match="options"):
        Snapshot.from_portable(_forge({**good, "options": "[1]"}))
    with pytest.raises(CorruptSnapshotError, match="options"):
        Snapshot.from_portable(_forge({**good, "options": "{bad"}))
    with pytest.raises(CorruptSnapshotError, match="before any step"):
        Snapshot.from_portable(_forge({**good, "actions": [], "ended": "terminated"}))
    with pytest.raises(CorruptSnapshotError, match="negative"):
        Snapshot.from_portable(_forge({**good, "seed": -5}))
