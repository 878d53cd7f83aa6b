"""Multi-hop questions about a synthetic world, HotpotQA's two kinds, with their evidence.

* **bridge** (2–4 hops) — a chain of relations from a named entity: "In which country is the
  birthplace of the creator of The Glass Tide?" (creator → born_in → country). Each hop's fact
  is stated in another passage than the previous hop's (the passage of that hop's subject).
* **comparison** (2–4 hops) — two entities compared on a year, each named directly or through
  one relation ("Who was born earlier, Ada Velmora or the founder of Orrin Press?"; the answer is
  a name), or "Were A and B born in the same country?" (yes / no, four facts in two passages).

Every question records its ``chain``: per hop, the subject's name (the search a perfect agent
makes, knowing the previous answer) and the passages holding the fact (``World.fact_docs``).

Splits partition the entities a question starts from — 80% ``train``, 10% ``dev``, 10%
``test`` — so held-out questions ask about entities no training question started from.
"""

from __future__ import annotations

import random
from dataclasses import replace

from .searchqa_data import Hop, Question
from .searchqa_world import RELATIONS, World

QUESTIONS_PER_SPLIT = {"train": 1000, "dev": 100, "test": 200}
SPLIT_SHARES = {"train": 0.8, "dev": 0.1, "test": 0.1}
TEMPLATES = {
    "born_in": ("the birthplace of {}", "In which city was {} born?"),
    "birth_year": ("", "In which year was {} born?"),
    "employer": ("the employer of {}", "Which organisation did {} work for?"),
    "founder": ("the founder of {}", "Who founded {}?"),
    "headquarters": ("the headquarters city of {}", "In which city is {} headquartered?"),
    "founded_year": ("", "In which year was {} founded?"),
    "country": ("the country of {}", "In which country is {}?"),
    "capital": ("the capital of {}", "What is the capital of {}?"),
    "creator": ("the creator of {}", "Who created {}?"),
    "publisher": ("the publisher of {}", "Which organisation released {}?"),
    "release_year": ("", "In which year was {} released?"),
}
"""relation → (noun phrase for an inner hop, question for the last hop)."""
YEARS = {"person": ("birth_year", "Who was born earlier"),
         "org": ("founded_year", "Which was founded earlier"),
         "work": ("release_year", "Which was released earlier")}  # fmt: skip
"""kind → (its year relation, the comparison's question)."""


def split_starts(world: World, split: str) -> list[str]:
    """Keys of the entities questions of ``split`` start from."""
    keys = sorted(world.entities)
    random.Random(f"searchqa-splits:{world.spec.seed}:{world.spec.people}").shuffle(keys)
    lo = 0.0
    for name, share in SPLIT_SHARES.items():
        if name == split:
            return sorted(keys[int(lo * len(keys)) : int((lo + share) * len(keys))])
        lo += share
    raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_SHARES)}")


def generate_questions(world: World, split: str, n: int | None = None) -> list[Question]:
    """Up to ``n`` distinct questions of ``split`` (default :data:`QUESTIONS_PER_SPLIT`)."""
    n = QUESTIONS_PER_SPLIT[split] if n is None else n
    rng = random.Random(f"searchqa-questions:{world.spec.seed}:{world.spec.people}:{split}")
    starts = split_starts(world, split)
    out: dict[str, Question] = {}
    for _ in range(50 * n):
        if len(out) >= n:
            break
        hops = rng.choice((2, 3, 4))
        make = _bridge if rng.random() < 0.6 else _comparison
        q = make(world, rng, starts, hops)
        if q is not None and q.question not in out:
            out[q.question] = replace(q, id=f"{split}-{len(out)}")
    return list(out.values())


def _hop(world: World, subject: str, relation: str) -> Hop:
    return Hop(world.entities[subject].name, tuple(world.fact_docs[(subject, relation)]))


def _walk(world: World, rng: random.Random, start: str, length: int) -> list[str] | None:
    """A random chain of ``length`` relations from ``start`` that revisits no entity and only
    ends on a year."""
    path, seen, here = [], {start}, start
    for i in range(length):
        kind = world.entities[here].kind
        last = i == length - 1
        options = [r for r, (s, o) in RELATIONS.items() if s == kind and (o != "year" or last)]
        if not options:
            return None
        relation = rng.choice(options)
        value = world.facts[(here, relation)]
        if value in seen:
            return None
        path.append(relation)
        if isinstance(value, str):
            seen.add(value)
            here = value
    return path


def _bridge(world: World, rng: random.Random, starts: list[str], hops: int) -> Question | None:
    start = rng.choice(starts)
    path = _walk(world, rng, start, hops)
    if path is None:
        return None
    phrase, chain, here = world.entities[start].name, [], start
    for i, relation in enumerate(path):
        chain.append(_hop(world, here, relation))
        noun, ask = TEMPLATES[relation]
        phrase = ask.format(phrase) if i == len(path) - 1 else noun.format(phrase)
        here = world.facts[(here, relation)]
    return Question("", phrase, (world.name(here),), "bridge", hops, tuple(chain))


def _side(world: World, rng: random.Random, starts: list[str], kind: str, bridged: bool):
    """``(entity, phrase naming it, hops to reach it)`` of a comparison side of ``kind``."""
    if not bridged:
        options = [s for s in starts if world.entities[s].kind == kind]
        if not options:
            return None
        entity = rng.choice(options)
        return entity, world.entities[entity].name, []
    relations = [r for r, (_, o) in RELATIONS.items() if o == kind]
    options = [s for s in starts if any((s, r) in world.facts for r in relations)]
    if not relations or not options:
        return None
    start = rng.choice(options)
    relation = next(r for r in relations if (start, r) in world.facts)
    phrase = TEMPLATES[relation][0].format(world.entities[start].name)
    return world.facts[(start, relation)], phrase, [_hop(world, start, relation)]


def _comparison(world: World, rng: random.Random, starts: list[str], hops: int):
    if hops == 4 and rng.random() < 0.5:
        return _same_country(world, rng, starts)
    kind = rng.choice(list(YEARS) if hops == 2 else ["person", "org"])
    bridged = {2: (False, False), 3: rng.choice([(True, False), (False, True)]),
               4: (True, True)}[hops]  # fmt: skip
    sides = [_side(world, rng, starts, kind, b) for b in bridged]
    if None in sides or sides[0][0] == sides[1][0]:
        return None
    relation, ask = YEARS[kind]
    years = [world.facts[(entity, relation)] for entity, _, _ in sides]
    if years[0] == years[1]:
        return None
    earlier = sides[0][0] if years[0] < years[1] else sides[1][0]
    chain = [h for e, _, before in sides for h in (*before, _hop(world, e, relation))]
    text = f"{ask}, {sides[0][1]} or {sides[1][1]}?"
    return Question("", text, (world.entities[earlier].name,), "comparison", hops, tuple(chain))


def _same_country(world: World, rng: random.Random, starts: list[str]) -> Question | None:
    people = [s for s in starts if world.entities[s].kind == "person"]
    if len(people) < 2:
        return None

    def country(person: str) -> str:
        return world.facts[(world.facts[(person, "born_in")], "country")]

    a = rng.choice(people)
    same = [p for p in people if p != a and country(p) == country(a)]
    b = rng.choice(same if same and rng.random() < 0.5 else [p for p in people if p != a])
    answer = "yes" if country(a) == country(b) else "no"
    chain = []
    for p in (a, b):
        city = world.facts[(p, "born_in")]
        chain += [_hop(world, p, "born_in"), _hop(world, city, "country")]
    names = [world.entities[p].name for p in (a, b)]
    text = f"Were {names[0]} and {names[1]} born in the same country?"
    return Question("", text, (answer,), "comparison", 4, tuple(chain))
