"""Registering environments: gymnasium's registry, treegym's bookkeeping, plugins.

treegym registers into gymnasium's own registry, so ``gymnasium.make("treegym/TextWorld-v0")``
works. :func:`register` adds what gymnasium does not track: where each env came from (built-in,
a plugin package, user code) and a one-line description for ``treegym envs``.

Third-party packages publish envs with an entry point in the ``treegym.envs`` group whose value
is a callable that registers them (gymnasium's own plugin convention)::

    [project.entry-points."treegym.envs"]
    mypkg = "mypkg.envs:register_envs"

Plugins are loaded once, when ``treegym`` has finished importing (its ``__init__`` calls
:func:`load_plugins` last, so ``import treegym; treegym.register(...)`` and ``from treegym import
register`` both work in a plugin): registration only records string entry points, so the
plugin's env code is imported when an env is made, not before. A plugin that fails to load is
reported by ``treegym envs`` and never breaks the import.
"""

from __future__ import annotations

import difflib
import sys
import warnings
from dataclasses import dataclass, replace
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import gymnasium
from gymnasium.envs.registration import load_env_creator

from .core import TextEnv

PLUGIN_GROUP = "treegym.envs"


@dataclass(frozen=True)
class EnvEntry:
    """One registered environment as ``treegym envs`` shows it."""

    id: str
    entry_point: str
    source: str
    description: str


_ENTRIES: dict[str, EnvEntry] = {}
_PLUGIN_ERRORS: dict[str, str] = {}
_DEFERRED: set[str] = set()  # plugins whose module was mid-import at the last load
_current_source = "user"


def register(
    id: str,
    entry_point: str,
    *,
    description: str = "",
    kwargs: dict[str, Any] | None = None,
    **gym_kwargs: Any,
) -> None:
    """Register a ``TextEnv`` with gymnasium and treegym.

    ``entry_point`` is ``"module:Class"`` (a string, so nothing is imported until ``make``);
    ``kwargs`` are default constructor arguments. gymnasium's ``OrderEnforcing`` wrapper is
    off by default: ``TextEnv`` enforces reset-before-step itself, and the wrapper's flag would
    not survive ``restore`` into a fresh env.
    """
    if not isinstance(entry_point, str) or ":" not in entry_point:
        raise ValueError(f"entry_point must be 'module:Class', got {entry_point!r}")
    gym_kwargs.setdefault("order_enforce", False)
    gymnasium.register(id=id, entry_point=entry_point, kwargs=dict(kwargs or {}), **gym_kwargs)
    _ENTRIES[id] = EnvEntry(id, entry_point, _current_source, description)


def load_plugins() -> dict[str, str]:
    """Call every ``treegym.envs`` entry point once; return ``{plugin: error}`` for failures.

    ``treegym/__init__`` calls this as its last statement, so a plugin can use the whole
    public API (``treegym.register``). A plugin whose module is itself being imported right now
    (it imported treegym at its top, which is what loads plugins) is left for the next registry
    query: calling into a half-run module fails."""
    _DEFERRED.clear()
    for ep in entry_points(group=PLUGIN_GROUP):
        name = f"{ep.dist.name if ep.dist else '?'}:{ep.name}"
        if name in _PLUGIN_ERRORS or any(e.source == f"plugin {name}" for e in _ENTRIES.values()):
            continue
        if _importing(ep.module):
            _DEFERRED.add(name)
            continue
        _load_plugin(ep, name)
    return dict(_PLUGIN_ERRORS)


def _importing(module: str) -> bool:
    spec = getattr(sys.modules.get(module), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _load_plugin(ep: EntryPoint, name: str) -> None:
    global _current_source
    before = set(gymnasium.registry)
    _current_source = f"plugin {name}"
    try:
        ep.load()()
    except Exception as exc:
        _PLUGIN_ERRORS[name] = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"treegym env plugin {name} failed to load: {exc}", stacklevel=3)
    finally:
        _current_source = "user"
    for env_id in set(gymnasium.registry) - before:
        if env_id not in _ENTRIES:  # registered with gymnasium.register directly
            spec = gymnasium.registry[env_id]
            _ENTRIES[env_id] = EnvEntry(env_id, str(spec.entry_point), f"plugin {name}", "")


def _load_deferred() -> None:
    if _DEFERRED:
        load_plugins()


def registered_envs() -> list[EnvEntry]:
    """Every env registered through treegym (built-in, plugins, user), sorted by id."""
    _load_deferred()
    return sorted(_ENTRIES.values(), key=lambda e: e.id)


def plugin_errors() -> dict[str, str]:
    _load_deferred()
    return dict(_PLUGIN_ERRORS)


def make(env_id: str, **kwargs: Any) -> TextEnv:
    """Build the raw ``TextEnv`` for ``env_id`` (no gymnasium wrappers around it).

    Unlike ``gymnasium.make`` this returns the env itself, so ``snapshot``/``restore``/``fork``
    are directly available, and an unknown id gets close matches in the error.
    """
    _load_deferred()
    if env_id not in gymnasium.registry:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `treegym envs`"
        raise gymnasium.error.NameNotFound(f"no environment registered as {env_id!r}{hint}")
    spec = gymnasium.registry[env_id]
    creator = spec.entry_point if callable(spec.entry_point) else load_env_creator(spec.entry_point)
    merged = {**spec.kwargs, **kwargs}
    env = creator(**merged)
    if not isinstance(env, TextEnv):
        raise TypeError(
            f"{env_id} builds a {type(env).__name__}, not a treegym TextEnv; "
            "treegym's snapshot/restore contract needs a TextEnv subclass"
        )
    env.spec = replace(spec, kwargs=merged)
    return env
