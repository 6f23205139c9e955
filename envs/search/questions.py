"""Question families over the invented world, each with gold aliases and an expert search plan.

Every candidate lists the searches that surface its supporting passages, in order; the engine keeps a
candidate only when each search really returns its passage in the top k (so the expert plan wins by
construction, checked against the retriever, not assumed).

Families (they are also the task types and skill categories):
- direct_retrieval: one search, the answer is an entity named in the passage ("Who founded X?").
- attribute_lookup: one search, the answer is a value of the entity (a year, a population, a trade).
- multi_hop: two searches, the first finds a bridge entity, the second the answer about it.
- comparison: two searches, one per candidate, then compare a value.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from envs.search.corpus import WORK_KINDS, World


@dataclass
class Candidate:
    text: str
    answers: tuple[str, ...]
    family: str
    plan: list[tuple[str, str]]      # (search query, passage id it must surface)
    entities: tuple[str, ...]        # keys of the entities whose passages are read


def _person_answers(person: dict) -> tuple[str, ...]:
    return person["name"], person["family"]


def _bio(person: dict) -> tuple[str, str]:
    return f"{person['name']} born", person["passage_ids"][0]


def _city_step(city: dict, topic: str) -> tuple[str, str]:
    return f"{city['name']} city {topic}", city["passage_ids"][0]


def _work_step(work: dict) -> tuple[str, str]:
    return f"{work['name']} {work['kind']}", work["passage_ids"][0]


def _org_step(org: dict, topic: str) -> tuple[str, str]:
    return f"{org['name']} {topic}", org["passage_ids"][0]


def direct_questions(world: World) -> list[Candidate]:
    out = []
    for p in world.people:
        out.append(Candidate(f"Where was {p['name']} born?", (p["birthplace"]["name"],), "direct_retrieval",
                             [_bio(p)], (p["key"],)))
    for o in world.orgs:
        out.append(Candidate(f"Who founded the {o['name']}?", _person_answers(o["founder"]), "direct_retrieval",
                             [_org_step(o, "founded")], (o["key"],)))
        out.append(Candidate(f"In which city is the {o['name']} based?", (o["seat"]["name"],),
                             "direct_retrieval", [_org_step(o, "headquarters")], (o["key"],)))
    for w in world.works:
        verb = WORK_KINDS[w["kind"]][1]
        out.append(Candidate(f"Who {verb} the {w['kind']} {w['name']}?", _person_answers(w["creator"]),
                             "direct_retrieval", [_work_step(w)], (w["key"],)))
    for c in world.countries:
        out.append(Candidate(f"What is the capital of {c['name']}?", (c["capital"]["name"],), "direct_retrieval",
                             [(f"{c['name']} country capital", c["passage_ids"][0])], (c["key"],)))
    return out


def attribute_questions(world: World) -> list[Candidate]:
    out = []
    for p in world.people:
        out.append(Candidate(f"In what year was {p['name']} born?", (str(p["born"]),), "attribute_lookup",
                             [_bio(p)], (p["key"],)))
        out.append(Candidate(f"What was the occupation of {p['name']}?", (p["occupation"],), "attribute_lookup",
                             [_bio(p)], (p["key"],)))
    for o in world.orgs:
        out.append(Candidate(f"In what year was the {o['name']} founded?", (str(o["year"]),), "attribute_lookup",
                             [_org_step(o, "founded")], (o["key"],)))
    for c in world.cities:
        out.append(Candidate(f"What is the population of {c['name']}?", (f"{c['population']:,}", str(c["population"])),
                             "attribute_lookup", [_city_step(c, "population")], (c["key"],)))
        out.append(Candidate(f"On which river does {c['name']} lie?", (f"{c['river']} River", c["river"]),
                             "attribute_lookup", [_city_step(c, "river")], (c["key"],)))
    for w in world.works:
        released = WORK_KINDS[w["kind"]][3]
        out.append(Candidate(f"In what year was the {w['kind']} {w['name']} first {released}?", (str(w["year"]),),
                             "attribute_lookup", [_work_step(w)], (w["key"],)))
    for c in world.countries:
        out.append(Candidate(f"What is the official language of {c['name']}?", (c["language"],), "attribute_lookup",
                             [(f"{c['name']} country official language", c["passage_ids"][0])], (c["key"],)))
    return out


def multi_hop_questions(world: World) -> list[Candidate]:
    out = []
    for p in world.people:
        home = p["birthplace"]
        out.append(Candidate(f"In which country is the birthplace of {p['name']}?", (home["country"]["name"],),
                             "multi_hop", [_bio(p), _city_step(home, "country")], (p["key"], home["key"])))
        out.append(Candidate(f"Which river flows through the birthplace of {p['name']}?",
                             (f"{home['river']} River", home["river"]), "multi_hop",
                             [_bio(p), _city_step(home, "river")], (p["key"], home["key"])))
    for w in world.works:
        creator, role = w["creator"], WORK_KINDS[w["kind"]][2]
        out.append(Candidate(f"In what year was the {role} of the {w['kind']} {w['name']} born?",
                             (str(creator["born"]),), "multi_hop", [_work_step(w), _bio(creator)],
                             (w["key"], creator["key"])))
        out.append(Candidate(f"Where was the {role} of the {w['kind']} {w['name']} born?",
                             (creator["birthplace"]["name"],), "multi_hop", [_work_step(w), _bio(creator)],
                             (w["key"], creator["key"])))
    for o in world.orgs:
        founder, seat = o["founder"], o["seat"]
        out.append(Candidate(f"In what year was the founder of the {o['name']} born?", (str(founder["born"]),),
                             "multi_hop", [_org_step(o, "founded"), _bio(founder)], (o["key"], founder["key"])))
        out.append(Candidate(f"What was the occupation of the founder of the {o['name']}?", (founder["occupation"],),
                             "multi_hop", [_org_step(o, "founded"), _bio(founder)], (o["key"], founder["key"])))
        out.append(Candidate(f"In which country are the headquarters of the {o['name']}?", (seat["country"]["name"],),
                             "multi_hop", [_org_step(o, "headquarters"), _city_step(seat, "country")],
                             (o["key"], seat["key"])))
    return out


def comparison_questions(world: World, rng: random.Random, pairs_per_kind: int) -> list[Candidate]:
    """Random pairs with different values (ties would have no single answer)."""
    out = []
    for _ in range(pairs_per_kind):
        a, b = rng.sample(world.people, 2)
        if a["born"] != b["born"]:
            first = a if a["born"] < b["born"] else b
            out.append(Candidate(f"Who was born earlier, {a['name']} or {b['name']}?", _person_answers(first),
                                 "comparison", [_bio(a), _bio(b)], (a["key"], b["key"])))
        a, b = rng.sample(world.cities, 2)
        larger = a if a["population"] > b["population"] else b
        out.append(Candidate(f"Which city has the larger population, {a['name']} or {b['name']}?",
                             (larger["name"],), "comparison",
                             [_city_step(a, "population"), _city_step(b, "population")], (a["key"], b["key"])))
        for items, question, step in ((world.orgs, "Which was founded earlier, the {} or the {}?",
                                       lambda org: _org_step(org, "founded")),
                                      (world.works, "Which came out first, {} or {}?", _work_step)):
            a, b = rng.sample(items, 2)
            if a["year"] != b["year"]:
                older = a if a["year"] < b["year"] else b
                out.append(Candidate(question.format(a["name"], b["name"]), (older["name"],), "comparison",
                                     [step(a), step(b)], (a["key"], b["key"])))
    return out


def all_candidates(world: World, rng: random.Random) -> list[Candidate]:
    pairs = max(10, len(world.people) // 2)
    return (direct_questions(world) + attribute_questions(world) + multi_hop_questions(world)
            + comparison_questions(world, rng, pairs))
