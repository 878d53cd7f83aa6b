"""One ALFWorld game loaded on fast-downward: positions, applicable commands, feedback text.

This is TextWorld's ``PddlEnv`` (``textworld/envs/pddl``) taken apart so that a position in the
game is a *value*: fast-downward's state id (an index into the append-only state registry of
this game's copy of ``libdownward.so``) plus the Python-side facts the text grammar reads. Any
number of positions of one game coexist, and going back to one is a ``set_state_id`` call — the
library exports ``get_state_id``/``set_state_id`` but TextWorld's ctypes wrapper does not
declare them; :func:`_new_library` does. The registry only grows: every distinct state visited
stays until the game is dropped (≈120 bytes each, measured on a generated kitchen).

**Creating a game is expensive** (measured on a generated kitchen: ≈0.3 s to translate the
PDDL to SAS, a 33 MB library copy, the grammar parse): create one per task and process, and
rewind it. :func:`load_game` keeps games in a weak cache keyed by content, so envs and forks of
one task in a process share one game; a snapshot holds its game alive.

Semantics mirror ``PddlEnv`` + ALFWorld's ``AlfredDemangler`` line by line (same operator
order, same "first applicable operator wins" command lookup, same fact updates including the
``not_*`` facts TextWorld adds for negative effects, names like "cabinet 3" from alfworld's own
``Demangler``); only the text derivation is replaced, by :class:`~.alfworld_grammar.FastGrammar`.

What reaches the C code is guarded: the SAS comes from fast-downward's own translator (run on a
file :mod:`.alfworld_files` validated), operator ids only from the library's own applicable list,
state ids only from this game's registry, all under a lock (ctypes releases the GIL, and the
library's state is global).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
import threading
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import fast_downward
from textworld.envs.pddl.logic import Atom, GameLogic
from textworld.generator.game import EntityInfo
from textworld.logic import Placeholder, Proposition, State, Type, Variable

from . import alfworld_assets
from .alfworld_files import GameFile
from .alfworld_grammar import FastGrammar
from .errors import GameFileError

NOTHING_HAPPENS = "Nothing happens."
#: The one-variable SAS task fast-downward's translator emits instead of a problem it has solved
#: by itself (``translate.trivial_task``); its goal value says which way.
_TRIVIAL_TASK = "Atom dummy(val1)\nAtom dummy(val2)"
_UNREACHABLE_GOAL = "begin_goal\n1\n0 1\nend_goal"


@dataclass(frozen=True, eq=False)
class Position:
    """A point in one game. ``facts`` is never mutated once the position exists."""

    state_id: int
    facts: Facts


@dataclass(frozen=True, eq=False)
class Choice:
    """One applicable operator as the player sees it."""

    op_id: int
    n_effects: int
    action: str  # the domain action's (lowercase) name
    mapping: dict[Placeholder, Variable]


@dataclass(frozen=True, eq=False)
class Options:
    """What can be done at a position: ``choices`` maps each command to its first operator."""

    choices: dict[str, Choice]
    admissible: tuple[str, ...]
    won: bool


def translate(domain: str, problem: str, *, optimize: bool = False) -> tuple[Any, str]:
    """fast-downward's PDDL -> SAS translation with its global side effects undone and its
    failures (some raise ``SystemExit``) turned into :class:`GameFileError`."""
    argv = sys.argv
    try:
        return fast_downward.pddl2sas(domain, problem, optimize=optimize)
    except (Exception, SystemExit) as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else "its parser rejects the text"
        raise GameFileError(f"fast-downward cannot translate the PDDL: {detail}") from None
    finally:
        sys.argv = argv


_IDLE_LIBRARIES: list[Any] = []
_IDLE_LOCK = threading.RLock()  # a finalizer may release a library during an acquire


def _acquire_library() -> Any:
    """A copy of libdownward for one game (its state is global): an idle one, else a new copy
    with the state-id calls declared. Copies are recycled, never unloaded: ``dlclose`` of one
    and ``dlopen`` of the next crashes the process (seen here, inside ``LoadLibrary``)."""
    with _IDLE_LOCK:
        if _IDLE_LIBRARIES:
            return _IDLE_LIBRARIES.pop()
    return _new_library()


def _new_library() -> Any:
    lib = fast_downward.load_lib()
    lib.get_state_id.argtypes = []
    lib.get_state_id.restype = ctypes.c_int
    lib.set_state_id.argtypes = [ctypes.c_int]
    lib.set_state_id.restype = None
    return lib


def _release_library(lib: Any) -> None:
    """Free a dead game's state registry and keep its library copy for the next game."""
    lib.cleanup()
    with _IDLE_LOCK:
        _IDLE_LIBRARIES.append(lib)


@functools.lru_cache(maxsize=16)
def _logic(domain: str, grammar: str) -> GameLogic:
    return GameLogic(domain=domain, grammar=grammar)


class Facts(State):
    """TextWorld's ``State``, with each signature's facts sorted once.

    ``State.all_assignments`` — which answers every grammar condition and list query — sorts
    the facts of a signature on every call, with ``Proposition.__lt__`` in Python; in a kitchen
    with 30 drawers that is most of a step (each "go to" command queries every receptacle's
    location). Handing it an already sorted tuple makes that sort a linear check, and the order,
    so the text, stays the same. The cache is dropped whenever a fact changes.
    """

    def facts_with_signature(self, sig: Any) -> Any:
        cached = self._sorted.get(sig)
        if cached is None:
            cached = self._sorted[sig] = tuple(sorted(self._facts.get(sig, ())))
        return cached

    def add_fact(self, prop: Proposition) -> None:
        self._sorted.pop(prop.signature, None)
        super().add_fact(prop)

    def remove_fact(self, prop: Proposition) -> None:
        self._sorted.pop(prop.signature, None)
        super().remove_fact(prop)


def empty_facts(logic: GameLogic) -> Facts:
    """An empty ``Facts`` (``State()`` itself insists on textworld's generator logic, so this
    sets the fields the way ``PddlState.__init__`` does)."""
    state = object.__new__(Facts)
    state._facts, state._vars_by_name = defaultdict(set), {}
    state._vars_by_type, state._var_counts = defaultdict(set), Counter()
    state._logic, state._sorted = logic, {}
    return state


def copy_facts(state: Facts) -> Facts:
    """An independent copy (all the containers ``add_fact``/``remove_fact`` touch)."""
    out = object.__new__(Facts)
    out.__dict__.update(state.__dict__)
    out._facts = defaultdict(set, {k: v.copy() for k, v in state._facts.items()})
    out._vars_by_name = state._vars_by_name.copy()
    out._vars_by_type = defaultdict(set, {k: v.copy() for k, v in state._vars_by_type.items()})
    out._var_counts = state._var_counts.copy()
    out._sorted = dict(state._sorted)  # sorted tuples are immutable: share until a change
    return out


class PddlGame:
    """A loaded game (see the module docstring). Thread-safe; positions are values."""

    def __init__(self, game: GameFile) -> None:
        self.game = game
        try:
            logic = _logic(game.domain, game.grammar)
        except Exception as exc:
            raise GameFileError(f"{game.path}: cannot parse the grammar: {exc}") from None
        self.logic = logic
        try:
            self.task, sas = translate(game.domain, game.problem)
        except GameFileError as exc:
            raise GameFileError(f"{game.path}: {exc}") from None
        if _TRIVIAL_TASK in sas:  # translate.trivial_task: FD decided the problem alone
            raise GameFileError(
                f"{game.path}: unsolvable, fast-downward's translator finds the goal unreachable"
                if _UNREACHABLE_GOAL in sas
                else f"{game.path}: the goal holds before any action, there is nothing to do"
            )
        self._schemas = {a.name: a for a in self.task.actions}
        self.name2type = {o.name: o.type_name for o in self.task.objects}
        for t in self.task.types:
            # ValueError: already known (the logic is shared by games with the same grammar)
            with contextlib.suppress(ValueError):
                logic.types.add(Type(t.name, t.supertype_names))
        self._lock = threading.RLock()
        self._lib = _acquire_library()
        weakref.finalize(self, _release_library, self._lib)
        self._lib.load_sas(sas.encode("utf-8"))
        facts = self._initial_facts()
        self.entity_infos = self._demangled_infos(facts)
        self.names = {k: info.name for k, info in self.entity_infos.items()}
        self.grammar = FastGrammar(logic.grammar)
        self.initial = Position(self._lib.get_state_id(), facts)

    # ------------------------------------------------------------------ loading
    def _initial_facts(self) -> Facts:
        """``PddlState.__init__``'s facts: the problem's init, then every true SAS atom."""
        state = empty_facts(self.logic)
        state.add_facts(p for p in map(self._init_fact, self.task.init) if p is not None)
        atoms = (Atom * self._lib.get_state_size())()
        self._lib.get_state(atoms)
        true_atoms = (a.get_fact(self.name2type) for a in atoms)
        state.add_facts(p for p in true_atoms if not p.is_negation)
        return state

    def _init_fact(self, atom: Any) -> Proposition | None:
        pddl = fast_downward.translate.pddl
        if isinstance(atom, pddl.conditions.Atom):
            if atom.predicate == "=":
                return None
            return Proposition(atom.predicate, [Variable(a, self.name2type[a]) for a in atom.args])
        if isinstance(atom, pddl.f_expression.Assign):
            name = f"{atom.expression.value}"
            if atom.fluent.symbol == "total-cost" or str.isdigit(name):
                return None
            return Proposition(name, [Variable(a, self.name2type[a]) for a in atom.fluent.args])
        return None

    def _demangled_infos(self, facts: Facts) -> dict[str, EntityInfo]:
        """``PddlEnv._get_entity_infos`` renamed by ALFWorld's ``AlfredDemangler``."""
        infos = {v.name: EntityInfo(v.name, v.type) for f in facts.facts for v in f.arguments}
        for info in infos.values():
            info.name, info.definite, info.indefinite = info.id, "the", "a"
        demangler = alfworld_assets.alfworld_module("agents.utils.misc").Demangler(
            game_infos=infos, shuffle=False
        )
        for info in infos.values():
            info.name = demangler.demangle_alfred_name(info.id)
        return infos

    # ------------------------------------------------------------------ playing
    @functools.cached_property
    def intro(self) -> str:
        """The text at reset: "-= Welcome to TextWorld, ALFRED! =-", the room, the task."""
        return self.grammar.derive("#intro#", self.initial.facts, self.entity_infos, {}, {})

    def options(self, position: Position) -> Options:
        """``PddlEnv._gather_infos``: the commands of every applicable operator, and won."""
        with self._lock:
            self._lib.set_state_id(position.state_id)
            count = self._lib.get_applicable_operators_count()
            operators = (fast_downward.Operator * count)()
            self._lib.get_applicable_operators(operators)
            won = bool(self._lib.check_goal())
        choices: dict[str, Choice] = {}
        seen: set[str] = set()
        for op in operators:
            name = op.name
            if name in seen:
                continue
            seen.add(name)
            action, *args = name.split()
            params = self._schemas[action].parameters
            mapping = {
                Placeholder(p.name.strip("?"), p.type_name): Variable(arg, p.type_name)
                for p, arg in zip(params, args, strict=False)
            }
            variables = {ph.name: self.entity_infos[var.name] for ph, var in mapping.items()}
            template = self.logic.actions[action].template
            command = self.grammar.derive(
                template, position.facts, self.entity_infos, variables, mapping
            )
            if "{" in command or "}" in command:  # Action.format_command, a no-op otherwise
                command = command.format(**self.names)
            choices.setdefault(command, Choice(op.id, op.nb_effect_atoms, action, mapping))
        return Options(choices, tuple(sorted(choices)), won)

    def apply(self, position: Position, choice: Choice) -> tuple[Position, str]:
        """``PddlState.apply`` then the action's feedback text (``PddlEnv.step``)."""
        effects = (Atom * choice.n_effects)()
        with self._lock:
            self._lib.set_state_id(position.state_id)
            self._lib.apply_operator(choice.op_id, effects)
            state_id = self._lib.get_state_id()
        facts = copy_facts(position.facts)
        for effect in effects:
            prop = effect.get_fact(self.name2type)
            facts.remove_fact(prop.negate())
            facts.add_fact(prop)
        variables = {ph.name: self.entity_infos[var.name] for ph, var in choice.mapping.items()}
        rule = self.logic.actions[choice.action].feedback_rule
        feedback = self.grammar.derive(rule, facts, self.entity_infos, variables, choice.mapping)
        return Position(state_id, facts), feedback

    def solve(self, sas: str) -> list[str] | None:
        """Operator names of fast-downward's plan for another task (``solve_sas``), or None."""
        with self._lock:
            if not self._lib.solve_sas(sas.encode("utf-8"), False):
                return None
            operators = (fast_downward.Operator * self._lib.get_last_plan_length())()
            self._lib.get_last_plan(operators)
        return [op.name for op in operators]

    def commands_of_plan(self, plan: list[str]) -> tuple[str, ...]:
        """``PddlState.plan_to_templated_actions``: operator names -> player commands."""
        commands = []
        for step in plan:
            action, *args = step.split()
            params = [p.name.replace("?", "") for p in self._schemas[action].parameters]
            values = {p: self.entity_infos[a].name for p, a in zip(params, args, strict=False)}
            template = self.logic.actions[action].template
            commands.append(
                ("go to {r}" if action == "gotolocation" else template).format(**values)
            )
        return tuple(commands)


_GAMES: weakref.WeakValueDictionary[str, PddlGame] = weakref.WeakValueDictionary()
_GAMES_LOCK = threading.Lock()


def load_game(game: GameFile) -> PddlGame:
    """The loaded game for ``game``'s content, shared while anything in the process uses it."""
    with _GAMES_LOCK:
        loaded = _GAMES.get(game.sha)
        if loaded is None:
            loaded = _GAMES[game.sha] = PddlGame(game)
        return loaded
