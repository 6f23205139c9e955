"""A seeded encyclopaedia of invented entities, written as wiki-18 passages (`"Title"\\ntext`).

Every name is made of random syllables, so no pretrained model knows any fact in it: the agent can
only answer by searching. Entities link to each other (a person is born in a city, a city lies in a
country, a work has a creator, an organisation a founder and a seat), which is what the two-hop and
comparison questions of `envs.search.questions` are built from.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from envs.search import _ATTRIBUTE, _BRIDGE, _COMPARATIVE

ONSETS = ("b", "br", "d", "dr", "f", "g", "gl", "h", "j", "k", "kr", "l", "m", "n", "p", "pr", "qu",
          "r", "s", "sk", "st", "t", "tr", "v", "w", "z", "th", "ph")
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei", "ou", "ia")
CODAS = ("", "n", "r", "l", "s", "th", "nd", "rt", "sk", "x", "m", "v")

OCCUPATIONS = ("painter", "sculptor", "physicist", "composer", "novelist", "architect", "botanist",
               "cartographer", "chemist", "astronomer", "engineer", "poet", "historian", "violinist",
               "economist", "mathematician", "linguist", "film director", "photographer", "diplomat")

# kind -> (creator's occupation, creation verb, creator's role noun, release verb)
WORK_KINDS = {
    "novel": ("novelist", "wrote", "author", "published"),
    "film": ("film director", "directed", "director", "released"),
    "opera": ("composer", "composed", "composer", "staged"),
    "painting": ("painter", "painted", "painter", "exhibited"),
    "poetry collection": ("poet", "wrote", "author", "published"),
}
ORG_KINDS = {"University": "a university", "Institute": "a research institute",
             "Orchestra": "an orchestra", "Museum": "a museum", "Observatory": "an observatory",
             "Trading Company": "a trading company", "Academy": "an academy of arts",
             "Library": "a public library", "Press": "a publishing house", "Shipyard": "a shipyard"}
GENRES = ("historical", "comic", "tragic", "experimental", "pastoral", "satirical", "romantic",
          "allegorical", "gothic", "lyrical")
TITLE_ADJECTIVES = ("Silent", "Amber", "Hollow", "Crimson", "Northern", "Quiet", "Seventh", "Broken",
                    "Gilded", "Distant", "Pale", "Restless")
TITLE_NOUNS = ("Garden", "Harbour", "Letters", "Winter", "Lantern", "Tide", "Orchard", "Bridge",
               "Mirror", "Voyage", "Chronicle", "Hours")
LATER_LIFE = ("taught for many years", "ran a small workshop", "served on the city council",
              "kept a celebrated diary", "trained a generation of students", "lived in seclusion")

# Invented words must never be read as a keyword by the skill rules or vanish as BM25 stop words.
_RESERVED = set(re.findall(r"[a-z]+", _ATTRIBUTE.pattern + _BRIDGE.pattern + _COMPARATIVE.pattern)) | {
    "and", "are", "but", "for", "into", "not", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "was", "will", "with", "what", "who", "which", "where", "when", "first", "city"}


@dataclass
class World:
    """All entities (plain dicts with a `key` and their `passage_ids`) and the passages."""

    passages: list[dict]
    countries: list[dict]
    cities: list[dict]
    people: list[dict]
    orgs: list[dict]
    works: list[dict]

    def passage(self, passage_id: str) -> dict:
        return self.passages[int(passage_id[1:])]


class _NameBank:
    """Hands out invented words that were never handed out before (names stay unambiguous)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def fresh(self, syllables: int) -> str:
        while True:
            word = "".join(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) for _ in range(syllables))
            word = (word + self.rng.choice(CODAS)).capitalize()
            if len(word) >= 4 and word.lower() not in _RESERVED and word not in self.used:
                self.used.add(word)
                return word


def _add_passage(passages: list[dict], entity: dict, title: str, text: str) -> None:
    passage_id = f"p{len(passages)}"
    passages.append({"id": passage_id, "title": title, "contents": f'"{title}"\n{text}'})
    entity.setdefault("passage_ids", []).append(passage_id)


def _distinct_ints(rng: random.Random, count: int, low: int, high: int, step: int = 1) -> list[int]:
    """`count` different values, so that no two cities tie on population."""
    return rng.sample(range(low, high, step), count)


def build_world(seed: int = 0, num_people: int = 1000) -> World:
    """The same (seed, num_people) always gives the same world. Passage count is about 3.2 x
    num_people (people have two passages; cities, organisations and works one each)."""
    rng = random.Random(seed)
    names = _NameBank(rng)
    n_countries, n_cities = max(3, num_people // 60), max(6, num_people // 4)
    n_orgs, n_works = max(6, num_people // 4), max(6, num_people * 7 // 10)

    countries = [{"key": f"country{i}", "name": names.fresh(2),
                  "language": names.fresh(2) + rng.choice(("ic", "ese", "ish", "i"))}
                 for i in range(n_countries)]
    rivers = [names.fresh(2) for _ in range(max(2, n_cities // 3))]
    populations = _distinct_ints(rng, n_cities, 4000, 3_000_000, 1000)
    cities = []
    for i in range(n_cities):
        country = countries[i] if i < n_countries else rng.choice(countries)
        cities.append({"key": f"city{i}", "name": names.fresh(rng.choice((2, 3))), "country": country,
                       "river": rng.choice(rivers), "founded": rng.randrange(700, 1850),
                       "population": populations[i]})
    for country, city in zip(countries, cities):
        country["capital"] = city

    given_names = [names.fresh(2) for _ in range(150)]
    people = []
    for i in range(num_people):
        family = names.fresh(rng.choice((2, 3)))
        home, later = rng.sample(cities, 2)
        people.append({"key": f"person{i}", "name": f"{rng.choice(given_names)} {family}",
                       "family": family, "born": rng.randrange(1600, 1990), "birthplace": home, "lived": later,
                       "occupation": rng.choice(OCCUPATIONS), "works": [], "founded": []})

    orgs = []
    for i in range(n_orgs):
        kind = rng.choice(list(ORG_KINDS))
        year = rng.randrange(1640, 2020)
        founder = rng.choice([p for p in people if p["born"] + 25 <= year <= p["born"] + 75] or people)
        org = {"key": f"org{i}", "name": f"{names.fresh(rng.choice((2, 3)))} {kind}", "kind": kind,
               "year": year, "founder": founder, "seat": rng.choice(cities)}
        founder["founded"].append(org)
        orgs.append(org)

    creators = {kind: [p for p in people if p["occupation"] == spec[0]] for kind, spec in WORK_KINDS.items()}
    kinds = [kind for kind in WORK_KINDS if creators[kind]]
    works = []
    for i in range(n_works):
        kind = rng.choice(kinds)
        creator = rng.choice(creators[kind])
        word = names.fresh(rng.choice((2, 3)))
        title = rng.choice((f"The {rng.choice(TITLE_ADJECTIVES)} {word}", f"{word} {rng.choice(TITLE_NOUNS)}",
                            f"The {word} {rng.choice(TITLE_NOUNS)}"))
        work = {"key": f"work{i}", "name": title, "kind": kind, "creator": creator,
                "year": min(2024, creator["born"] + rng.randrange(20, 65)), "genre": rng.choice(GENRES),
                "setting": rng.choice(cities)}
        creator["works"].append(work)
        works.append(work)

    passages: list[dict] = []
    for country in countries:
        _add_passage(passages, country, country["name"],
                     f"{country['name']} is a country whose capital is {country['capital']['name']}. "
                     f"Its official language is {country['language']}.")
    for city in cities:
        _add_passage(passages, city, city["name"],
                     f"{city['name']} is a city in {city['country']['name']}, on the {city['river']} River. "
                     f"It was founded in {city['founded']} and has a population of about {city['population']:,}.")
    for person in people:
        _add_passage(passages, person, person["name"], _biography(rng, person))
        _add_passage(passages, person, person["name"], _career(rng, person, people, orgs))
    for org in orgs:
        _add_passage(passages, org, org["name"],
                     f"The {org['name']} is {ORG_KINDS[org['kind']]} founded in {org['year']} by "
                     f"{org['founder']['name']}. Its headquarters are in {org['seat']['name']}.")
    for work in works:
        _, verb, _, released = WORK_KINDS[work["kind"]]
        _add_passage(passages, work, work["name"],
                     f"{work['name']} is {_article(work['genre'])} {work['kind']} by {work['creator']['name']}, "
                     f"first {released} in {work['year']}. It is set in {work['setting']['name']}.")
    return World(passages, countries, cities, people, orgs, works)


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _biography(rng: random.Random, person: dict) -> str:
    family = person["family"]
    return (f"{person['name']} was {_article(person['occupation'])} born in {person['born']} in "
            f"{person['birthplace']['name']}. Later in life {family} moved to {person['lived']['name']}, "
            f"where {family} {rng.choice(LATER_LIFE)}.")


def _career(rng: random.Random, person: dict, people: list[dict], orgs: list[dict]) -> str:
    """The second passage: works and foundations, else a membership; never the birth facts, so a
    search for them must find the biography."""
    family = person["family"]
    sentences = [f"{family} {WORK_KINDS[w['kind']][1]} the {w['kind']} {w['name']} ({w['year']})."
                 for w in person["works"][:4]]
    sentences += [f"In {org['year']} {family} established the {org['name']}." for org in person["founded"]]
    if not sentences:
        friend = rng.choice(people)
        sentences.append(f"{family} was a member of the {rng.choice(orgs)['name']} and corresponded "
                         f"with {friend['name']}.")
    return " ".join(sentences)
