"""Snapshots: immutable values that put an environment back exactly where it was.

A :class:`Snapshot` always carries the *replay recipe* of its state — the environment type and
fingerprint, the episode seed and reset options, the action history, and the RNG state — and
optionally a *native handle*: an in-process state copy the environment can restore directly
(Jericho's ``get_state`` plus the tracking state, say). The native handle is fast but lives
only in this process; :meth:`Snapshot.portable` drops it and encodes the recipe as bytes that
another process restores by deterministic replay. An environment that has no native state
copy (the default) makes replay-only snapshots, which is what makes any deterministic
environment forkable.

The portable encoding is JSON behind a magic line and a SHA-256 checksum: it cannot execute
code when loaded (no pickle), and truncation or bit flips are detected and reported.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import CorruptSnapshotError

PORTABLE_MAGIC = b"treegym-snapshot/1\n"
_DIGEST_HEX_LEN = 64


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The complete state of a :class:`~treegym.envs.TextEnv` at one point of an episode.

    Snapshots are values: restoring one never changes it, so one snapshot can be restored any
    number of times, into the env that made it or into any env of the same type, game and
    configuration in this process (native form) or in another process (portable form).
    """

    env_type: str
    """Qualified class name of the environment that made the snapshot."""
    fingerprint: str
    """Identity of the environment's configuration and current game/task content.
    Restoring into an env whose fingerprint differs raises :class:`SnapshotMismatchError`."""
    seed: int
    """Seed the episode was reset with (drawn from the env's RNG when ``reset(seed=None)``)."""
    options: str
    """Canonical JSON of the ``reset`` options (e.g. ``{"task": ...}``)."""
    actions: tuple[str, ...]
    """Normalised actions applied since reset, in order: the replay recipe."""
    ended: str | None
    """``"terminated"``/``"truncated"`` if the episode is over at this point, else ``None``."""
    rng_state: dict[str, Any] | None
    """State of the env's ``np_random`` bit generator (``None`` if the env never used it)."""
    state_digest: str | None = None
    """Hash of the env's own state (e.g. interpreter memory) that a replay must reproduce."""
    native: Any = field(default=None, repr=False)
    """Environment-specific in-process state handle, or ``None`` for a replay-only snapshot."""

    @property
    def depth(self) -> int:
        """Number of steps taken since reset."""
        return len(self.actions)

    @property
    def is_native(self) -> bool:
        """Whether this snapshot restores from a state copy (fast) rather than by replay."""
        return self.native is not None

    def replay_only(self) -> Snapshot:
        """The same snapshot without its native handle (restores by replay)."""
        return replace(self, native=None) if self.native is not None else self

    def portable(self) -> bytes:
        """Encode as bytes that restore in another process (by deterministic replay)."""
        payload = json.dumps(
            {
                "env_type": self.env_type,
                "fingerprint": self.fingerprint,
                "seed": self.seed,
                "options": self.options,
                "actions": list(self.actions),
                "ended": self.ended,
                "rng_state": self.rng_state,
                "state_digest": self.state_digest,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode("utf-8")
        digest = hashlib.sha256(payload).hexdigest().encode("ascii")
        return PORTABLE_MAGIC + digest + b"\n" + payload

    @classmethod
    def from_portable(cls, data: bytes) -> Snapshot:
        """Decode bytes made by :meth:`portable`; raise :class:`CorruptSnapshotError` if bad."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CorruptSnapshotError(
                f"portable snapshot must be bytes, got {type(data).__name__}"
            )
        data = bytes(data)
        if not data.startswith(PORTABLE_MAGIC):
            raise CorruptSnapshotError(
                "not a treegym portable snapshot: missing the 'treegym-snapshot/1' header "
                f"(first bytes: {data[:24]!r})"
            )
        body = data[len(PORTABLE_MAGIC) :]
        digest, sep, payload = body.partition(b"\n")
        if not sep or len(digest) != _DIGEST_HEX_LEN:
            raise CorruptSnapshotError("portable snapshot is truncated: checksum line incomplete")
        if hashlib.sha256(payload).hexdigest().encode("ascii") != digest:
            raise CorruptSnapshotError(
                f"portable snapshot checksum mismatch ({len(payload)} payload bytes): "
                "the bytes were truncated or altered after encoding"
            )
        try:
            obj = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptSnapshotError(
                f"portable snapshot payload is not valid JSON: {exc}"
            ) from None
        return cls(**_validated_fields(obj))


def _validated_fields(obj: Any) -> dict[str, Any]:
    """Check the decoded JSON has every field with the right type (checksums can collide with
    hand-written files; a clear error beats an AttributeError deep inside restore)."""
    expected: dict[str, tuple[type, ...]] = {
        "env_type": (str,),
        "fingerprint": (str,),
        "seed": (int,),
        "options": (str,),
        "actions": (list,),
        "ended": (str, type(None)),
        "rng_state": (dict, type(None)),
        "state_digest": (str, type(None)),
    }
    if not isinstance(obj, dict):
        raise CorruptSnapshotError("portable snapshot payload is not a JSON object")
    missing = sorted(set(expected) - set(obj))
    extra = sorted(set(obj) - set(expected))
    if missing or extra:
        raise CorruptSnapshotError(
            f"portable snapshot fields do not match: missing {missing}, unexpected {extra}"
        )
    for name, types in expected.items():
        if not isinstance(obj[name], types) or (isinstance(obj[name], bool) and name == "seed"):
            raise CorruptSnapshotError(
                f"portable snapshot field {name!r} has type {type(obj[name]).__name__}"
            )
    if not all(isinstance(a, str) for a in obj["actions"]):
        raise CorruptSnapshotError("portable snapshot field 'actions' must hold strings only")
    if obj["ended"] not in (None, "terminated", "truncated"):
        raise CorruptSnapshotError(f"portable snapshot field 'ended' is {obj['ended']!r}")
    if obj["ended"] is not None and not obj["actions"]:
        raise CorruptSnapshotError("portable snapshot says the episode ended before any step")
    if obj["seed"] < 0:
        raise CorruptSnapshotError(f"portable snapshot seed is negative ({obj['seed']})")
    try:
        options = json.loads(obj["options"])
    except json.JSONDecodeError:
        options = None
    if not isinstance(options, dict):
        raise CorruptSnapshotError("portable snapshot field 'options' is not a JSON object")
    return {**obj, "actions": tuple(obj["actions"])}
