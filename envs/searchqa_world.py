"""Synthetic worlds for SearchQA: consistent facts about invented entities, written as passages.

A world (deterministic from :class:`WorldSpec`) has countries, cities, people, organisations
and works, and one value for each of their relations (:data:`RELATIONS`): a person was born in
one city in one year and worked for one organisation; an organisation has one founder, one
headquarters and one founding year; a city lies in one country, a country has one capital; a
work has one creator, one publisher and one release year. Values are consistent (a capital
lies in its country, an organisation is founded after its founder's birth, a work is released
after its creator's). Names are invented (no model can know the answers without searching),
unique per entity, and share words on purpose: people share surnames, organisations are named
after people and cities — the distractors BM25 must rank below the right passage.

Passages (Search-R1's ``{"id", "contents"}`` with the quoted title on the first line) are
written from the facts: one per entity, holding that entity's facts, so each fact is in exactly
one passage, except a city's country, which the passages of people born there repeat ("born in
Velmora, Korland"), and a capital, which its city's passage repeats. Distractor passages state
no relation but mention entities: surname pages listing namesakes, and event reports naming
people, works, organisations and cities. :attr:`World.fact_docs` says which passages hold each
fact: the question generator (:mod:`.searchqa_questions`) takes its evidence from there.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

RELATIONS: dict[str, tuple[str, str]] = {
    "born_in": ("person", "city"),
    "birth_year": ("person", "year"),
    "employer": ("person", "org"),
    "founder": ("org", "person"),
    "headquarters": ("org", "city"),
    "founded_year": ("org", "year"),
    "country": ("city", "country"),
    "capital": ("country", "city"),
    "creator": ("work", "person"),
    "publisher": ("work", "org"),
    "release_year": ("work", "year"),
}
"""relation → (subject kind, object kind); every relation is a function of its subject."""

SYLLABLES = (
    "ka", "lo", "mi", "ra", "ven", "dor", "sel", "ti", "mar", "no", "bel", "quin", "ar", "is",
    "ul", "fen", "gra", "hal", "jor", "eth", "os", "pa", "ri", "sun", "ta", "ver", "wen", "zor",
    "cal", "dun", "el", "mor", "nes", "lin", "tor", "vas", "bra", "cor", "del", "fal",
)  # fmt: skip
FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Anton", "Aria", "Basil", "Bea", "Boris", "Cara", "Cyril", "Dara",
    "Dmitri", "Edith", "Elias", "Esme", "Felix", "Freya", "Gideon", "Greta", "Hugo", "Ida",
    "Ivo", "Jasper", "Juno", "Kasimir", "Lena", "Leon", "Lior", "Mabel", "Milo", "Nadia",
    "Nils", "Noor", "Otto", "Olga", "Pia", "Quentin", "Rosa", "Rufus", "Saskia", "Silas",
    "Tamsin", "Theo", "Una", "Viggo", "Wanda", "Xavier", "Yara", "Zeno", "Zora",
)  # fmt: skip
ORG_KINDS = ("Press", "Institute", "Records", "Studios", "Group", "Foundation", "Bank", "Works")
ORG_WORDS = {
    "Press": "publishing house", "Institute": "research institute", "Records": "record label",
    "Studios": "film studio", "Group": "company", "Foundation": "foundation", "Bank": "bank",
    "Works": "manufacturer",
}  # fmt: skip
WORK_MEDIA = ("novel", "film", "album", "play", "poem cycle", "documentary")
ADJECTIVES = (
    "Silent", "Glass", "Crimson", "Hollow", "Northern", "Last", "Burning", "Quiet", "Golden",
    "Broken", "Endless", "Pale", "Hidden", "Distant", "Iron", "Velvet", "Wandering", "Frozen",
    "Secret", "Restless", "Bitter", "Amber", "Salt", "Paper", "Winter", "Lantern", "Copper",
    "Scarlet", "Emerald", "Shifting",
)  # fmt: skip
NOUNS = (
    "Tide", "River", "Garden", "Harbour", "Mirror", "Orchard", "Bridge", "Tower", "Letter",
    "Voyage", "Forest", "Lighthouse", "Meadow", "Compass", "Island", "Season", "Crown",
    "Archive", "Valley", "Machine", "Feather", "Chorus", "Kingdom", "Shore", "Clockwork",
    "Signal", "Atlas", "Canal", "Engine", "Horizon", "Winterhouse", "Frontier", "Parade",
    "Labyrinth", "Cathedral", "Carnival", "Observatory", "Theorem", "Monsoon", "Quarry",
)  # fmt: skip
OCCUPATIONS = (
    "writer", "engineer", "painter", "physician", "architect", "composer", "economist", "chemist",
    "director", "historian", "photographer", "diplomat",
)  # fmt: skip
EVENTS = ("Festival", "Congress", "Fair", "Symposium", "Exhibition", "Summit")
COUNTRY_SUFFIXES = ("land", "ia", "mark", "stan", "ora", "eth")
CITY_SUFFIXES = ("", "", "", "ford", "ton", "by", "holm", "port", "wick")
MAX_COUNTRIES = 300


@dataclass(frozen=True)
class WorldSpec:
    """The knobs of a world: ``people`` sets its size (other kinds scale with it)."""

    seed: int = 0
    people: int = 300

    def __post_init__(self) -> None:
        for name in ("seed", "people"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"world {name} must be a non-negative int, got {value!r}")
        if self.people < 20:
            raise ValueError(f"a world needs at least 20 people, got {self.people}")

    @property
    def slug(self) -> str:
        return f"world-s{self.seed}-p{self.people}"

    @property
    def counts(self) -> dict[str, int]:
        p = self.people
        countries = min(max(4, p // 25), MAX_COUNTRIES)
        return {"country": countries, "city": max(2 * countries, p // 3), "person": p,
                "org": max(4, p // 3), "work": max(4, p // 2)}  # fmt: skip


@dataclass(frozen=True)
class Entity:
    key: str
    kind: str
    name: str


@dataclass
class World:
    """Entities, their facts (``(subject key, relation) → object key or year``), passages
    (``(id, contents)``) and where each fact is written."""

    spec: WorldSpec
    entities: dict[str, Entity] = field(default_factory=dict)
    facts: dict[tuple[str, str], str | int] = field(default_factory=dict)
    passages: list[tuple[str, str]] = field(default_factory=list)
    fact_docs: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    entity_doc: dict[str, str] = field(default_factory=dict)
    _names: set[str] = field(default_factory=set, repr=False)

    def add(self, kind: str, make: Callable[[], str] | str) -> str:
        """A new entity of ``kind`` named by ``make()`` (tried until the name is new)."""
        for _ in range(1000):
            name = make() if callable(make) else make
            if name not in self._names:
                key = f"{kind}:{len(self.entities)}"
                self.entities[key] = Entity(key, kind, name)
                self._names.add(name)
                return key
        raise RuntimeError(f"no new {kind} name in 1000 tries: the world is too large")

    def of_kind(self, kind: str) -> list[Entity]:
        return [e for e in self.entities.values() if e.kind == kind]

    def name(self, value: str | int) -> str:
        """The surface form of a fact's object: an entity's name or a year."""
        return self.entities[value].name if isinstance(value, str) else str(value)


class _Words:
    """Invented words from syllables (deterministic given the rng)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def word(self, syllables: tuple[int, int], suffixes: tuple[str, ...] = ("",)):
        """A maker of words of ``syllables`` syllables and one of ``suffixes``."""
        rng = self.rng

        def make() -> str:
            n = rng.randint(*syllables)
            return ("".join(rng.choice(SYLLABLES) for _ in range(n)) + rng.choice(suffixes)).title()

        return make


def generate_world(spec: WorldSpec) -> World:
    """The world of ``spec`` (same spec, same world, on every machine)."""
    rng = random.Random(f"searchqa-world:{spec.seed}:{spec.people}")
    world, names = World(spec), _Words(rng)
    counts = spec.counts
    surname = names.word((2, 3), ("", "son", "er", "ley"))
    surnames = sorted({surname() for _ in range(max(10, spec.people // 3))})

    countries = [world.add("country", names.word((2, 3), COUNTRY_SUFFIXES))
                 for _ in range(counts["country"])]  # fmt: skip
    cities = [world.add("city", names.word((2, 3), CITY_SUFFIXES)) for _ in range(counts["city"])]
    for i, city in enumerate(cities):
        country = countries[i] if i < len(countries) else rng.choice(countries)
        world.facts[(city, "country")] = country
        if i < len(countries):
            world.facts[(country, "capital")] = city
    people = [world.add("person", lambda: f"{rng.choice(FIRST_NAMES)} {rng.choice(surnames)}")
              for _ in range(counts["person"])]  # fmt: skip
    for person in people:
        world.facts[(person, "born_in")] = rng.choice(cities)
        world.facts[(person, "birth_year")] = rng.randint(1890, 1990)
    orgs = [_add_org(world, rng, surnames, cities, people) for _ in range(counts["org"])]
    for person in people:
        world.facts[(person, "employer")] = rng.choice(orgs)
    for _ in range(counts["work"]):
        work = world.add("work", lambda: _work_title(world, rng, cities))
        creator = rng.choice(people)
        born = world.facts[(creator, "birth_year")]
        world.facts[(work, "creator")] = creator
        world.facts[(work, "publisher")] = rng.choice(orgs)
        world.facts[(work, "release_year")] = born + rng.randint(18, 60)
    write_passages(world, rng, surnames)
    return world


def _add_org(world: World, rng: random.Random, surnames, cities, people) -> str:
    """An organisation named after a surname or a city (distractors for both), founded by a
    person at least 20 years after their birth."""
    kind = rng.choice(ORG_KINDS)

    def name() -> str:
        if rng.random() < 0.6:
            return f"{rng.choice(surnames)} {kind}"
        return f"{world.entities[rng.choice(cities)].name} {kind}"

    org = world.add("org", name)
    founder = rng.choice(people)
    world.facts[(org, "founder")] = founder
    world.facts[(org, "founded_year")] = world.facts[(founder, "birth_year")] + rng.randint(20, 50)
    world.facts[(org, "headquarters")] = rng.choice(cities)
    return org


def _work_title(world: World, rng: random.Random, cities: list[str]) -> str:
    title = f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    return f"{title} of {world.entities[rng.choice(cities)].name}" if rng.random() < 0.5 else title


def write_passages(world: World, rng: random.Random, surnames: list[str]) -> None:
    """The world's passages (module docstring), recording which passages hold each fact."""
    f, name = world.facts, world.name

    def passage(title: str, text: str, facts: list[tuple[str, str]], entity: str | None = None):
        doc = str(len(world.passages))
        world.passages.append((doc, f'"{title}"\n{text}'))
        for fact in facts:
            world.fact_docs.setdefault(fact, []).append(doc)
        if entity is not None:
            world.entity_doc[entity] = doc

    cities_of: dict[str, list[str]] = {}
    for e in world.of_kind("city"):
        cities_of.setdefault(f[(e.key, "country")], []).append(e.key)
    for e in world.entities.values():
        k = e.key
        if e.kind == "person":
            city = f[(k, "born_in")]
            place = f"{name(city)}, {name(f[(city, 'country')])}"
            job, employer = _a(rng.choice(OCCUPATIONS)), name(f[(k, "employer")])
            text = (f"{e.name} was born in {f[(k, 'birth_year')]} in {place}. "
                    f"{e.name.split()[-1]} was {job} who worked for {employer}.")  # fmt: skip
            facts = [(k, "born_in"), (k, "birth_year"), (k, "employer"), (city, "country")]
        elif e.kind == "org":
            kind = ORG_WORDS[e.name.rsplit(" ", 1)[-1]]
            text = (f"{e.name} is {_a(kind)} founded in {f[(k, 'founded_year')]} by "
                    f"{name(f[(k, 'founder')])}. Its headquarters are in "
                    f"{name(f[(k, 'headquarters')])}.")  # fmt: skip
            facts = [(k, "founder"), (k, "founded_year"), (k, "headquarters")]
        elif e.kind == "city":
            country = f[(k, "country")]
            text = f"{e.name} is a city in {name(country)}."
            facts = [(k, "country")]
            if f.get((country, "capital")) == k:
                text += f" It is the capital of {name(country)}."
                facts.append((country, "capital"))
        elif e.kind == "country":
            listed = cities_of[k][:4]
            text = (f"{e.name} is a country. Its capital is {name(f[(k, 'capital')])}. Its "
                    f"cities include {', '.join(name(c) for c in listed)}.")  # fmt: skip
            facts = [(k, "capital")] + [(c, "country") for c in listed]
        else:
            medium, creator = _a(rng.choice(WORK_MEDIA)), name(f[(k, "creator")])
            text = (f"{e.name} is {medium} by {creator}, released in "
                    f"{f[(k, 'release_year')]} by {name(f[(k, 'publisher')])}.")  # fmt: skip
            facts = [(k, "creator"), (k, "release_year"), (k, "publisher")]
        passage(e.name, text, facts, k)
    _write_distractors(world, rng, surnames, passage)


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _write_distractors(world: World, rng: random.Random, surnames: list[str], passage) -> None:
    """Passages that mention entities but state none of their relations."""
    people = world.of_kind("person")
    by_surname: dict[str, list[str]] = {}
    for p in people:
        by_surname.setdefault(p.name.split()[-1], []).append(p.name)
    for surname in surnames:
        namesakes = by_surname.get(surname, [])
        if len(namesakes) >= 2:
            listed = ", ".join(namesakes[:-1][:5]) + f" and {namesakes[-1]}"
            passage(
                f"{surname} (surname)",
                f"{surname} is a family name. People with the name include {listed}.",
                [],
            )
    cities, works, orgs = world.of_kind("city"), world.of_kind("work"), world.of_kind("org")
    titles: set[str] = set()
    for _ in range(len(people) // 2):
        year, city, event = rng.randint(1950, 2020), rng.choice(cities).name, rng.choice(EVENTS)
        title = f"{year} {city} {event}"
        if title in titles:
            continue
        titles.add(title)
        a, b = rng.sample(people, 2)
        passage(title, f"The {title} featured {rng.choice(works).name} and talks by {a.name} "
                       f"and {b.name}, with support from {rng.choice(orgs).name}.", [])  # fmt: skip
