"""Errors raised by treegym environments.

Every error names the problem and, where there is one, the fix. They subclass the builtin
exception a caller would already catch for that kind of mistake (``TypeError`` for a wrong
action type, ``FileNotFoundError`` for a missing game), so generic handlers keep working.
"""

from __future__ import annotations


class TextEnvError(Exception):
    """Base class of every error raised by a treegym environment."""


class InvalidActionError(TextEnvError, ValueError):
    """The action is not a string the environment can be given (wrong type, too long)."""


class InvalidOptionsError(TextEnvError, TypeError):
    """``reset(options=...)`` is not a mapping of JSON values (options go into snapshots)."""


class ResetNeededError(TextEnvError, RuntimeError):
    """``step``/``snapshot`` was called before ``reset`` (or ``restore``)."""


class EpisodeEndedError(TextEnvError, RuntimeError):
    """``step`` was called after the episode terminated or was truncated."""


class SnapshotMismatchError(TextEnvError, ValueError):
    """A snapshot was restored into an environment of another type, game or configuration."""


class CorruptSnapshotError(TextEnvError, ValueError):
    """Portable snapshot bytes are truncated, altered, or not a treegym snapshot."""


class ReplayDivergenceError(TextEnvError, RuntimeError):
    """Replaying a snapshot's action history did not reach the recorded state.

    This means the environment is not deterministic given its seed, so replay-based
    snapshots (and ``treegym check``'s determinism check) cannot be trusted for it.
    """


class GameFileError(TextEnvError, FileNotFoundError):
    """A game or task file is missing, unreadable, or not in a supported format."""


class UnknownTaskError(TextEnvError, KeyError):
    """``reset(options={"task": ...})`` named a task the environment does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class GameGenerationError(TextEnvError, RuntimeError):
    """A game generator spec is invalid or the generator failed."""
