"""The fictional knowledge base of a synthetic world: typed entities and functional relations between
them, each fact written as one short passage. Every relation gives each subject exactly one object, so a
chain of relations (a multi-hop question) has exactly one answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from research_env.worlds.names import NameSource


@dataclass(frozen=True)
class Relation:
    """A typed relation with the three ways the world writes it: as a passage (the fact), as a question about
    a subject, and as a noun phrase naming the object (used to nest one hop inside the next question)."""

    name: str
    subject: str
    object: str
    passage: str  # "{s} was born in {o}."
    question: str  # "Where was {s} born?"
    noun_phrase: str  # "the birthplace of {s}"


RELATIONS: tuple[Relation, ...] = (
    Relation("born_in", "person", "city", "{s} was born in {o}.", "Where was {s} born?", "the birthplace of {s}"),
    Relation(
        "educated_at",
        "person",
        "university",
        "{s} studied at {o}.",
        "Where did {s} study?",
        "the university where {s} studied",
    ),
    Relation("founded_by", "company", "person", "{s} was founded by {o}.", "Who founded {s}?", "the founder of {s}"),
    Relation(
        "chief_executive",
        "company",
        "person",
        "The chief executive of {s} is {o}.",
        "Who is the chief executive of {s}?",
        "the chief executive of {s}",
    ),
    Relation(
        "headquartered_in",
        "company",
        "city",
        "{s} has its headquarters in {o}.",
        "Where does {s} have its headquarters?",
        "the city where {s} has its headquarters",
    ),
    Relation(
        "made_by", "product", "company", "{s} is made by {o}.", "Which company makes {s}?", "the company that makes {s}"
    ),
    Relation(
        "located_in",
        "city",
        "country",
        "{s} is a city in {o}.",
        "In which country is {s}?",
        "the country that {s} lies in",
    ),
    Relation(
        "capital", "country", "city", "The capital of {s} is {o}.", "What is the capital of {s}?", "the capital of {s}"
    ),
    Relation(
        "longest_river",
        "country",
        "river",
        "The longest river of {s} is {o}.",
        "What is the longest river of {s}?",
        "the longest river of {s}",
    ),
    Relation(
        "university_city",
        "university",
        "city",
        "{s} is a university in {o}.",
        "In which city is {s}?",
        "the city where {s} stands",
    ),
    Relation(
        "river_source",
        "river",
        "city",
        "{s} rises near {o}.",
        "Near which city does {s} rise?",
        "the city near which {s} rises",
    ),
)
RELATION_BY_NAME = {r.name: r for r in RELATIONS}

#: Share of a split's entities per type (persons are the most numerous, as in an encyclopedia).
TYPE_SHARES: dict[str, float] = {
    "person": 0.34,
    "city": 0.2,
    "company": 0.14,
    "product": 0.14,
    "country": 0.06,
    "university": 0.06,
    "river": 0.06,
}
#: Share of one-word names that get a near-miss twin (same name but the last syllable): a distractor entity.
NEAR_MISS_SHARE = 0.2


def template_words() -> set[str]:
    """Every word the templates write, which names must never be."""
    text = " ".join(part for r in RELATIONS for part in (r.passage, r.question, r.noun_phrase))
    return {w.strip("{}?.,").lower() for w in text.split()} | {"yes", "no", "noanswer"}


@dataclass
class KnowledgeBase:
    """Entities by type (their names) and the object of every (relation, subject index)."""

    names: dict[str, list[str]]
    objects: dict[str, np.ndarray]  # relation name -> object index per subject index

    def obj(self, relation: str, subject: int) -> int:
        return int(self.objects[relation][subject])

    def facts(self) -> list[tuple[str, int]]:
        """Every (relation, subject) pair, i.e. every passage, in a fixed order."""
        return [(r.name, s) for r in RELATIONS for s in range(len(self.names[r.subject]))]


def entity_counts(num_entities: int) -> dict[str, int]:
    """How many entities of each type a world of ``num_entities`` gets (at least two of each type)."""
    return {t: max(2, round(num_entities * share)) for t, share in TYPE_SHARES.items()}


def _names_of(kind: str, count: int, source: NameSource, rng: np.random.Generator) -> list[str]:
    if kind == "person":  # first and last names from small pools, so persons share names: near misses
        first = source.words(max(2, count // 3))
        last = source.words(max(2, count // 2))
        pairs: dict[str, None] = {}
        while len(pairs) < count:
            for i, j in zip(
                rng.integers(len(first), size=count).tolist(), rng.integers(len(last), size=count).tolist(), strict=True
            ):
                pairs.setdefault(f"{first[i]} {last[j]}")
                if len(pairs) == count:
                    break
        return list(pairs)
    n_twins = int(count * NEAR_MISS_SHARE)
    names = source.words(count - n_twins)
    for base in names[:n_twins]:
        names.append(source.near_miss(base) or source.words(1)[0])
    return names


def build_knowledge_base(num_entities: int, rng: np.random.Generator, source: NameSource) -> KnowledgeBase:
    """A consistent world: cities lie in countries, a capital lies in its country, a country's longest river
    rises near one of its cities, a company's chief executive is not its founder."""
    counts = entity_counts(num_entities)
    names = {kind: _names_of(kind, counts[kind], source, rng) for kind in TYPE_SHARES}
    n = {kind: len(v) for kind, v in names.items()}
    country_of_city = (
        np.concatenate([np.arange(n["country"]), rng.integers(n["country"], size=n["city"] - n["country"])])
        if n["city"] >= n["country"]
        else rng.integers(n["country"], size=n["city"])
    )
    cities_of = [np.flatnonzero(country_of_city == c) for c in range(n["country"])]
    capital = np.array([cities[0] if len(cities) else rng.integers(n["city"]) for cities in cities_of])
    river_source = rng.integers(n["city"], size=n["river"])
    for country in range(min(n["country"], n["river"])):  # river i is the longest river of country i
        if len(cities_of[country]):
            river_source[country] = rng.choice(cities_of[country])
    founder = rng.integers(n["person"], size=n["company"])
    chief = (founder + 1 + rng.integers(n["person"] - 1, size=n["company"])) % n["person"]
    objects = {
        "born_in": rng.integers(n["city"], size=n["person"]),
        "educated_at": rng.integers(n["university"], size=n["person"]),
        "founded_by": founder,
        "chief_executive": chief,
        "headquartered_in": rng.integers(n["city"], size=n["company"]),
        "made_by": rng.integers(n["company"], size=n["product"]),
        "located_in": country_of_city,
        "capital": capital,
        "longest_river": np.arange(n["country"]) % n["river"],
        "university_city": rng.integers(n["city"], size=n["university"]),
        "river_source": river_source,
    }
    return KnowledgeBase(names, objects)
