"""`BuiltinSearchQA`: Search-QA over the invented encyclopaedia, with BM25 search, no download.

The world, the BM25 index and the verified question lists are built once per process and shared by
every instance (a rollout creates hundreds of envs), keyed by the construction arguments.

Splits hold different questions, and every test question reads at least one entity (person,
organisation, work or city) that no training question reads: training cannot memorise test facts.
`reset(seed, "test", task_index=i)` for i in range(N) is a fixed evaluation panel.
"""

from __future__ import annotations

import functools
import random

from envs.search.corpus import World, build_world
from envs.search.qa import Question, SearchEpisode
from envs.search.questions import Candidate, all_candidates
from envs.search.retriever import BM25Retriever, RetrieverClient, probe_retriever

FAMILIES = ("direct_retrieval", "attribute_lookup", "multi_hop", "comparison")
HELD_OUT_FRACTION = 0.15


@functools.lru_cache(maxsize=4)
def load_world(corpus_seed: int = 0, num_people: int = 1000) -> tuple[World, BM25Retriever]:
    world = build_world(corpus_seed, num_people)
    return world, BM25Retriever(world.passages)


def verified(candidates: list[Candidate], retriever: BM25Retriever, topk: int) -> list[Candidate]:
    """Keep the candidates whose every planned search returns its passage within `topk`."""
    queries = list(dict.fromkeys(query for c in candidates for query, _ in c.plan))
    hits = {q: {p["id"] for p in row} for q, row in zip(queries, retriever.search(queries, topk=topk))}
    return [c for c in candidates if all(pid in hits[q] for q, pid in c.plan)]


@functools.lru_cache(maxsize=4)
def load_questions(corpus_seed: int, num_people: int, topk: int, test_per_family: int,
                   train_per_family: int | None) -> dict[str, list[Question]]:
    """Fixed, verified question lists per split, balanced across the four families."""
    world, retriever = load_world(corpus_seed, num_people)
    rng = random.Random(f"questions-{corpus_seed}")
    held = set()
    for group in (world.people, world.orgs, world.works, world.cities):
        held |= {e["key"] for e in rng.sample(group, max(1, int(len(group) * HELD_OUT_FRACTION)))}
    unique = list({c.text: c for c in all_candidates(world, rng)}.values())
    kept = verified(unique, retriever, topk)
    rng.shuffle(kept)
    splits: dict[str, list[Question]] = {"train": [], "test": []}
    for family in FAMILIES:
        members = [c for c in kept if c.family == family]
        test = [c for c in members if any(k in held for k in c.entities)][:test_per_family]
        train = [c for c in members if not any(k in held for k in c.entities)][:train_per_family]
        splits["test"] += [_question(world, c, f"{family}-{i}") for i, c in enumerate(test)]
        splits["train"] += [_question(world, c, f"{family}-{i}") for i, c in enumerate(train)]
    for split in splits.values():   # interleave families so any prefix of a split is balanced
        split.sort(key=lambda q: (int(q.qid.rsplit("-", 1)[1]), FAMILIES.index(q.task_type)))
    return splits


def _question(world: World, c: Candidate, qid: str) -> Question:
    ids = tuple(pid for _, pid in c.plan)
    return Question(qid=qid, text=c.text, answers=c.answers, task_type=c.family,
                    plan_queries=tuple(q for q, _ in c.plan), support_ids=ids,
                    support_titles=tuple(world.passage(pid)["title"] for pid in ids))


class BuiltinSearchQA(SearchEpisode):
    """Search-QA over invented entities.

    kwargs: `corpus_seed` (which world), `num_people` (world size; about 3.2 passages per person),
    `topk` (passages per search, 3 as in Search-R1), `max_steps` (4), `test_per_family` (test
    questions per family, 128 -> 512), `train_per_family` (None = all verified ones),
    `retriever_url` to search through a retriever server (e.g. `python -m envs.search.server`)
    instead of the in-process index, with `wire` and `timeout` for its client and `check_retriever`
    (probe it once at construction), and the prompt switches of `SearchEpisode`. The real adapter's
    data settings (`REAL_ONLY`) are accepted and ignored, so that one config drives both backends.
    The four families
    are the data sources (`info["data_source"]`); the test split interleaves them, so any prefix of
    it is a panel stratified over sources.
    """

    REAL_ONLY = ("data_path", "data_sources", "max_questions", "panel_seed", "retries", "backoff")

    def __init__(self, corpus_seed: int = 0, num_people: int = 1000, topk: int = 3, max_steps: int = 4,
                 test_per_family: int = 128, train_per_family: int | None = None,
                 retriever_url: str | None = None, wire: str = "batched", timeout: float = 30.0,
                 check_retriever: bool = True, prompt_template: str | None = None, clip_observations: bool = True,
                 action_parse: str = "project", last_turn_hint: bool = True, **real_only):
        unknown = sorted(set(real_only) - set(self.REAL_ONLY))
        if unknown:
            raise TypeError(f"BuiltinSearchQA got unexpected keyword argument(s) {', '.join(unknown)}")
        super().__init__(max_steps, topk, prompt_template, clip_observations, action_parse, last_turn_hint)
        self.world, self.retriever = load_world(corpus_seed, num_people)
        self.questions = load_questions(corpus_seed, num_people, topk, test_per_family, train_per_family)
        self.client = (RetrieverClient(retriever_url, topk=topk, wire=wire, timeout=timeout)
                       if retriever_url else None)
        if retriever_url and check_retriever:
            probe_retriever(retriever_url, wire, timeout)

    def search(self, queries: list[str]) -> list[list[dict]]:
        if self.client is not None:
            return self.client.search(queries)
        return self.retriever.search(queries, topk=self.topk)
