"""ToyRooms: a tiny pure-Python text game for fast tests and examples.

A corridor of rooms; somewhere a key, somewhere a locked chest with a coin, sometimes a pit.
Taking the coin wins (reward 1), jumping into the pit loses. The floor is wet: each ``go``
fails with probability ``slip_prob``, drawn from the env's ``np_random`` — so restoring a
snapshot must restore the RNG too, which is exactly what ``check_env`` needs to exercise.

Tasks are integers (or ``"toy-<n>"``): the task number seeds the layout. It is registered as
``treegym/ToyRooms-v0`` and steps in microseconds, so property tests can run thousands.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from .core import TextEnv
from .errors import UnknownTaskError

ROOM_NAMES = (
    "hall", "kitchen", "pantry", "study", "cellar", "attic", "library", "garden", "bathroom",
    "bedroom", "workshop", "gallery",
)  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """The immutable part of a task: which room holds what."""

    task: int
    rooms: tuple[str, ...]
    key_room: int
    chest_room: int
    pit_room: int | None


@dataclass(frozen=True)
class ToyState:
    """The mutable part, as an immutable value: it *is* the native snapshot."""

    room: int = 0
    has_key: bool = False
    unlocked: bool = False
    opened: bool = False
    has_coin: bool = False
    fell: bool = False
    moves: int = 0


def make_layout(task: int, n_rooms: int) -> Layout:
    rng = random.Random(f"toyrooms-{task}-{n_rooms}")
    rooms = tuple(rng.sample(ROOM_NAMES, n_rooms))
    key_room = rng.randrange(n_rooms)
    chest_room = rng.randrange(n_rooms)
    pit_room = rng.randrange(1, n_rooms) if n_rooms > 1 and rng.random() < 0.7 else None
    return Layout(task, rooms, key_room, chest_room, pit_room)


def parse_task(task: Any) -> int:
    if isinstance(task, bool):
        raise UnknownTaskError(f"ToyRooms task must be an int or 'toy-<n>', got {task!r}")
    if isinstance(task, int) and task >= 0:
        return task
    if isinstance(task, str) and task.isdigit():
        return int(task)
    if isinstance(task, str) and task.startswith("toy-") and task[4:].isdigit():
        return int(task[4:])
    raise UnknownTaskError(f"ToyRooms task must be a non-negative int or 'toy-<n>', got {task!r}")


class ToyRoomsEnv(TextEnv):
    """See the module docstring. ``reset(options={"task": n})`` picks the layout."""

    def __init__(
        self,
        n_rooms: int = 4,
        slip_prob: float = 0.2,
        task: int | str = 0,
        max_episode_steps: int | None = 30,
    ) -> None:
        super().__init__(max_episode_steps=max_episode_steps)
        if not isinstance(n_rooms, int) or not 1 <= n_rooms <= len(ROOM_NAMES):
            raise ValueError(f"n_rooms must be an int in [1, {len(ROOM_NAMES)}], got {n_rooms!r}")
        if not 0.0 <= float(slip_prob) < 1.0:
            raise ValueError(f"slip_prob must be in [0, 1), got {slip_prob!r}")
        self.n_rooms = n_rooms
        self.slip_prob = float(slip_prob)
        self.default_task = parse_task(task)
        self.layout = make_layout(self.default_task, n_rooms)
        self.state = ToyState()

    # ------------------------------------------------------------------ hooks
    def _fingerprint_parts(self) -> dict[str, Any]:
        return {"n_rooms": self.n_rooms, "slip_prob": self.slip_prob, "task": self.layout.task}

    def _get_native(self) -> ToyState:
        return self.state

    def _set_native(self, native: ToyState) -> None:
        if not isinstance(native, ToyState):
            raise TypeError(f"not a ToyRooms native snapshot: {type(native).__name__}")
        self.state = native

    def _normalize_action(self, action: str) -> str:
        return " ".join(action.lower().split())

    def _reset(self, seed: int, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        task = parse_task(options.get("task", self.default_task))
        if task != self.layout.task:
            self.layout = make_layout(task, self.n_rooms)
        self.state = ToyState()
        intro = (
            "Welcome to ToyRooms! Your task is to find the coin in the chest and take it. "
            "Mind the wet floor.\n\n"
        )
        return intro + self._describe(), self._info()

    def _step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        s, lay = self.state, self.layout
        here = lay.rooms[s.room]
        reward = 0.0
        if action in ("look", "l"):
            text = self._describe()
        elif action in ("inventory", "i"):
            text = "You are carrying: a key." if s.has_key else "You are carrying nothing."
        elif action in ("go east", "go west"):
            target = s.room + (1 if action == "go east" else -1)
            if not 0 <= target < len(lay.rooms):
                text = "You can't go that way."
            elif self.np_random.random() < self.slip_prob:
                text = f"You slip on the wet floor and stay in the {here}."
                s = replace(s, moves=s.moves + 1)
            else:
                s = replace(s, room=target, moves=s.moves + 1)
                self.state = s
                text = self._describe()
        elif action == "take key" and s.room == lay.key_room and not s.has_key:
            s = replace(s, has_key=True, moves=s.moves + 1)
            text = "You take the key."
        elif action == "unlock chest with key" and self._chest_here(s) and s.has_key:
            if s.unlocked:
                text = "The chest is already unlocked."
            else:
                s = replace(s, unlocked=True, moves=s.moves + 1)
                text = "You unlock the chest."
        elif action == "open chest" and self._chest_here(s):
            if not s.unlocked:
                text = "The chest is locked."
            elif s.opened:
                text = "The chest is already open."
            else:
                s = replace(s, opened=True, moves=s.moves + 1)
                text = "You open the chest. A gold coin glitters inside."
        elif action == "take coin" and self._chest_here(s) and s.opened and not s.has_coin:
            s = replace(s, has_coin=True, moves=s.moves + 1)
            reward = 1.0
            text = "You take the coin. *** You won! ***"
        elif action == "jump into pit" and s.room == lay.pit_room:
            s = replace(s, fell=True, moves=s.moves + 1)
            text = "You jump into the pit and fall into darkness. *** You lost! ***"
        else:
            text = "Nothing happens." if action else "I beg your pardon?"
        self.state = s
        return text, reward, s.has_coin or s.fell, self._info()

    # ------------------------------------------------------------------ game text
    def _chest_here(self, s: ToyState) -> bool:
        return s.room == self.layout.chest_room

    def _describe(self) -> str:
        s, lay = self.state, self.layout
        exits = [
            d for d, r in (("west", s.room - 1), ("east", s.room + 1)) if 0 <= r < len(lay.rooms)
        ]
        lines = [f"-= {lay.rooms[s.room].title()} =-", f"Exits: {', '.join(exits) or 'none'}."]
        if s.room == lay.key_room and not s.has_key:
            lines.append("A small key lies on the floor.")
        if self._chest_here(s):
            state = "open" if s.opened else ("unlocked" if s.unlocked else "locked")
            lines.append(f"There is a {state} chest here.")
        if s.room == lay.pit_room:
            lines.append("A dark pit gapes in the middle of the room.")
        return "\n".join(lines)

    def _admissible(self) -> list[str]:
        s, lay = self.state, self.layout
        cmds = ["look", "inventory"]
        if s.room > 0:
            cmds.append("go west")
        if s.room < len(lay.rooms) - 1:
            cmds.append("go east")
        if s.room == lay.key_room and not s.has_key:
            cmds.append("take key")
        if self._chest_here(s):
            cmds.append("open chest")
            if s.has_key:
                cmds.append("unlock chest with key")
            if s.opened and not s.has_coin:
                cmds.append("take coin")
        if s.room == lay.pit_room:
            cmds.append("jump into pit")
        return sorted(cmds)

    def _expert_plan(self) -> list[str]:
        s, lay = self.state, self.layout
        if s.has_coin or s.fell:
            return []
        plan: list[str] = []
        room = s.room
        if not s.unlocked and not s.has_key:
            plan += [*_walk(room, lay.key_room), "take key"]
            room = lay.key_room
        plan += _walk(room, lay.chest_room)
        if not s.unlocked:
            plan.append("unlock chest with key")
        if not s.opened:
            plan.append("open chest")
        return [*plan, "take coin"]

    def _info(self) -> dict[str, Any]:
        s = self.state
        return {
            "admissible_commands": self._admissible(),
            "won": s.has_coin,
            "lost": s.fell,
            "score": int(s.has_coin),
            "max_score": 1,
            "moves": s.moves,
            "task_id": f"toy-{self.layout.task}",
            "expert_plan": self._expert_plan(),
        }


def _walk(src: int, dst: int) -> list[str]:
    step = "go east" if dst > src else "go west"
    return [step] * abs(dst - src)
