"""Native snapshots of TextWorld's wrapper stack: copy only what changes.

``textworld.start`` builds ``TWInform7 → StateTracking → Inform7Data → GameData →
JerichoEnv``. Their mutable state is small: the Z-machine (Jericho ``get_state``: RAM, stack,
registers, RNG), the per-step ``GameState`` dicts, and ``StateTracking``'s quest tracker
(``GameProgression``: world facts plus one dependency tree per quest event). Everything else
(the parsed ``Game``, the Inform 7 helper, the knowledge base) never changes after load and is
shared by reference.

Why not TextWorld's own copies: ``env.copy()`` builds a new interpreter (≈110 ms here);
``GameState.copy()`` deep-copies the whole ``Game`` object; even ``GameProgression.copy()``
re-derives the initial world state and every applicable action before throwing them away, and
re-pushes each event's actions into a fresh tree before replacing it (≈0.2–1.2 ms).
:func:`copy_progression` copies exactly the fields those methods end up with, in ≈10–80 µs.
A test checks it against ``GameProgression.copy()``; textworld is pinned to the version this
was written against.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from textworld.core import GameState
from textworld.envs.wrappers.tw_inform7 import GameData, Inform7Data, StateTracking
from textworld.envs.zmachine.jericho import JerichoEnv
from textworld.generator.game import EventProgression, GameProgression, QuestProgression
from textworld.logic import State

_new = object.__new__


def _copy_world_state(state: State) -> State:
    out = _new(State)
    out.__dict__.update(state.__dict__)
    out._facts = defaultdict(set, {k: v.copy() for k, v in state._facts.items()})
    out._vars_by_name = state._vars_by_name.copy()
    out._vars_by_type = defaultdict(set, {k: v.copy() for k, v in state._vars_by_type.items()})
    out._var_counts = state._var_counts.copy()
    return out


def _copy_event(event: EventProgression) -> EventProgression:
    out = _new(EventProgression)
    out.__dict__.update(event.__dict__)
    out._tree = event._tree.copy()
    return out


def _copy_quest(quest: QuestProgression) -> QuestProgression:
    out = _new(QuestProgression)
    out.__dict__.update(quest.__dict__)
    out.win_events = [_copy_event(e) for e in quest.win_events]
    out.fail_events = [_copy_event(e) for e in quest.fail_events]
    return out


def copy_progression(progression: GameProgression) -> GameProgression:
    """An independent copy of a ``GameProgression`` (same result as its ``copy()``, faster).

    ``_valid_actions`` is shared: ``GameProgression.update`` replaces the list, never mutates it.
    """
    out = _new(GameProgression)
    out.__dict__.update(progression.__dict__)
    out.state = _copy_world_state(progression.state)
    out.quest_progressions = [_copy_quest(q) for q in progression.quest_progressions]
    return out


@dataclass(frozen=True)
class Layers:
    """The wrapper stack of one loaded game, by role."""

    tracking: StateTracking
    inform7: Inform7Data
    gamedata: GameData
    jericho: JerichoEnv

    @classmethod
    def of(cls, env: Any) -> Layers:
        chain = []
        layer = env._wrapped_env
        while layer is not None:
            chain.append(layer)
            layer = getattr(layer, "_wrapped_env", None) if "_wrapped_env" in vars(layer) else None
        types = [type(x) for x in chain]
        if types != [StateTracking, Inform7Data, GameData, JerichoEnv]:
            raise RuntimeError(
                "unexpected TextWorld wrapper stack "
                f"{[t.__name__ for t in types]}: treegym's native snapshots support textworld 1.7"
            )
        return cls(*chain)


@dataclass(frozen=True, eq=False)
class TextWorldNative:
    """Immutable copy of the mutable parts of a TextWorld stack (plus treegym's score)."""

    zmachine: tuple[Any, ...]
    state: dict[str, Any]
    prev_state: dict[str, Any] | None
    tracked_infos: tuple[str, ...]
    last_action: Any
    previous_winning_policy: Any
    current_winning_policy: Any
    moves: int
    progression: GameProgression
    score: int


def _detached(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """Shallow copy without the live ``GameProgression`` reference (it keeps changing)."""
    if state is None:
        return None
    out = dict(state)
    out.pop("_game_progression", None)
    return out


def digest(native: TextWorldNative) -> str:
    """Hash of the Z-machine's memory, stack, registers and RNG: what a replay must reproduce
    (the game's randomness lives there, not in the env's ``np_random``)."""
    ram, stack, pc, sp, fp, frames, opcode, rng, narrative = native.zmachine
    h = hashlib.blake2b(digest_size=8)
    h.update(ram.tobytes())
    # The stack grows down from its end; words below ``sp`` are dead and keep old garbage.
    h.update(stack.tobytes()[2 * int(sp) :])
    registers = (pc, sp, fp, frames, opcode, rng, narrative)
    h.update(repr((registers, native.moves, native.score)).encode())
    return h.hexdigest()


def capture(layers: Layers, score: int) -> TextWorldNative:
    t, i7 = layers.tracking, layers.inform7
    _check_shared_state(layers)
    return TextWorldNative(
        zmachine=layers.jericho._jericho.get_state(),
        state=_detached(t.state),
        prev_state=_detached(i7._prev_state),
        tracked_infos=tuple(i7._tracked_infos),
        last_action=t._last_action,
        previous_winning_policy=_freeze(t._previous_winning_policy),
        current_winning_policy=_freeze(t._current_winning_policy),
        moves=t._moves,
        progression=copy_progression(t._game_progression),
        score=score,
    )


def apply(layers: Layers, native: TextWorldNative) -> None:
    """Put ``native`` into the stack; the snapshot itself stays untouched (copies are made)."""
    t, i7 = layers.tracking, layers.inform7
    layers.jericho._jericho.set_state(native.zmachine)
    layers.jericho._reset = True
    progression = copy_progression(native.progression)
    state = GameState(native.state)
    state["_game_progression"] = progression
    for layer in (t, i7, layers.gamedata, layers.jericho):
        layer.state = state  # one dict shared by every layer, as after a TextWorld step
    i7._prev_state = GameState(native.prev_state) if native.prev_state is not None else None
    i7._tracked_infos = list(native.tracked_infos)
    t._last_action = native.last_action
    t._previous_winning_policy = native.previous_winning_policy
    t._current_winning_policy = native.current_winning_policy
    t._moves = native.moves
    t._game_progression = progression


def _freeze(policy: Any) -> Any:
    return tuple(policy) if policy is not None else None


def _check_shared_state(layers: Layers) -> None:
    s = layers.tracking.state
    if not (s is layers.inform7.state is layers.gamedata.state is layers.jericho.state):
        raise RuntimeError(
            "TextWorld layers no longer share one GameState; snapshot would be wrong"
        )
