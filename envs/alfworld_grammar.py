"""TextWorld's PDDL text grammar, derived without re-parsing: same text, a fraction of the cost.

TextWorld's ``ContextSensitiveGrammar.derive`` (``textworld/envs/pddl/textgen``) turns a rule
such as ``"#examineReceptacle.feedback#"`` into text. Profiling the stock ``PddlEnv.step``
(pyinstrument, 30 random steps on a generated kitchen, ~60 ms a step) puts ~95% of the time in
it, for three reasons, none of which depends on the game state:

* every call re-parses its start string with tatsu (~40% of a step) — and a step derives one
  command template per applicable action, plus the feedback;
* every condition and list query re-parses its logic expression with tatsu (~20%);
* every context copy ``deepcopy``s its variables and mapping, which hold ``EntityInfo``,
  ``Placeholder`` and ``Variable`` objects that derivation never mutates (~30%).

:class:`FastGrammar` runs the same derivation algorithm — the same rule choice (first rule whose
condition has an assignment in the state), the same assignment order (``State.all_assignments``),
the same list joining and ``eval`` of ``{...}`` expressions — over symbols parsed once and
contexts that are shared instead of deep-copied (a context is never mutated in place here; a
query makes new dicts). ``tests/test_alfworld_speed.py`` checks the observations, admissible
commands and rewards against the stock ``PddlEnv`` on random walks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textworld.envs.pddl import textgen
from textworld.logic import Rule, State

# Node kinds of a parsed symbol: ("T", text), ("N", name), ("E", source, code),
# ("C", expression_node, given_query), ("L", inner_node).
Node = tuple[Any, ...]
Context = tuple[Mapping[str, Any], Mapping[Any, Any]]  # (variables, mapping)


def _convert(symbol: textgen.Symbol) -> Node:
    if isinstance(symbol, textgen.TerminalSymbol):
        return ("T", symbol.symbol)
    if isinstance(symbol, textgen.NonterminalSymbol):
        return ("N", symbol.symbol)
    if isinstance(symbol, textgen.EvalSymbol):
        return ("E", symbol.expression, compile(symbol.expression, "<grammar>", "eval"))
    if isinstance(symbol, textgen.ConditionalSymbol):
        return ("C", _convert(symbol.expression), symbol.given)
    if isinstance(symbol, textgen.ListSymbol):
        return ("L", _convert(symbol.symbol))
    raise NotImplementedError(f"Unknown symbol: {type(symbol)}")


class FastGrammar:
    """Derives text from a parsed ``ContextSensitiveGrammar`` (see the module docstring)."""

    def __init__(self, grammar: textgen.ContextSensitiveGrammar) -> None:
        self._rules = {
            name: [(rule.condition, tuple(_convert(s) for s in rule.rhs)) for rule in rules]
            for name, rules in grammar._rules.items()
        }
        self._parsed: dict[str, tuple[Node, ...]] = {}
        self._queries: dict[str, Rule] = {}

    def parse(self, start: str) -> tuple[Node, ...]:
        nodes = self._parsed.get(start)
        if nodes is None:
            symbols = textgen._parse_and_convert(start, rule_name="symbols")
            nodes = self._parsed[start] = tuple(_convert(s) for s in symbols)
        return nodes

    def query(self, expression: str) -> Rule:
        rule = self._queries.get(expression)
        if rule is None:
            rule = self._queries[expression] = Rule.parse_conjunctive_query(expression)
        return rule

    def derive(
        self,
        start: str,
        state: State,
        entity_infos: Mapping[str, Any],
        variables: Mapping[str, Any],
        mapping: Mapping[Any, Any],
    ) -> str:
        """The text ``ContextSensitiveGrammar.derive(start, context)`` returns for the same
        ``state``, ``entity_infos``, ``variables`` and ``mapping``."""
        ctx: Context = (variables, mapping)
        stack = [(node, ctx) for node in reversed(self.parse(start))]
        out: list[str] = []
        while stack:
            node, ctx = stack.pop()
            kind = node[0]
            if kind == "T":
                out.append(str(node[1]))
            elif kind == "N":
                stack.extend((n, ctx) for n in reversed(self._replace(node[1], ctx, state)))
            elif kind == "E":
                out.append(str(self._eval(node, ctx)))
            else:
                stack.extend(reversed(self._expand(node, ctx, state, entity_infos)))
        return "".join(out)

    # ------------------------------------------------------------------ symbol semantics
    def _replace(self, name: str, ctx: Context, state: State) -> tuple[Node, ...]:
        rules = self._rules.get(name)
        if not rules:
            raise textgen.CSGUnknownSymbolError(textgen.NonterminalSymbol(name))
        for condition, rhs in rules:
            if not condition or any(
                True for _ in state.all_assignments(self.query(condition), ctx[1])
            ):
                return rhs
        raise IndexError(f"no production of #{name}# applies in this state")

    @staticmethod
    def _eval(node: Node, ctx: Context) -> Any:
        return eval(node[2], vars(textgen), dict(ctx[0]))

    def _expand(
        self, node: Node, ctx: Context, state: State, entity_infos: Mapping[str, Any]
    ) -> list[tuple[Node, Context]]:
        """What ``ConditionalSymbol.derive``/``ListSymbol.derive`` put on the stack."""
        if node[0] == "C":
            _, expression, given = node
            if not given:
                return [(expression, ctx)]
            contexts = []
            for assignment in state.all_assignments(self.query(given), ctx[1]):
                new_vars = {ph.name: entity_infos[var.name] for ph, var in assignment.items()}
                contexts.append(({**ctx[0], **new_vars}, {**ctx[1], **assignment}))
            return [(expression, c) for c in contexts]
        if node[0] == "L":
            inner = node[1]
            if inner[0] == "E":
                items = [(("T", self._eval(inner, ctx)), ctx)]
            else:
                items = self._expand(inner, ctx, state, entity_infos)
            return _display_list(items, ctx)
        raise NotImplementedError(f"Unknown symbol kind {node[0]!r}")


def _display_list(items: list[tuple[Node, Context]], ctx: Context) -> list[tuple[Node, Context]]:
    """``textgen.display_list``: "a, b, and c" through the list_* rules; "nothing" when empty."""
    if not items:
        return [(("N", "list_empty"), ctx)]
    if len(items) == 1:
        return items
    out = []
    for item in items[:-1]:
        out += [item, (("N", "list_separator"), ctx)]
    out[-1] = (("N", "list_last_separator"), ctx)
    return [*out, items[-1]]
