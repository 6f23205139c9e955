"""Search-QA: answer a question by searching an encyclopaedia (the Search-R1 setup).

Two backends share one episode logic (`envs.search.qa.SearchEpisode`):
- `envs.search.engine.BuiltinSearchQA`: a seeded encyclopaedia of invented entities with BM25 search,
  so answers must be searched for, never recalled; no download.
- `envs.search.real.RealSearchQA`: Search-R1 data files plus a retriever server spoken to over HTTP.

This module only holds the keyword rules that pick the teacher's skill file (the paper's "KM" rule);
it imports nothing heavy, so `envs.skills` can use it cheaply.
"""

from __future__ import annotations

import re

SKILL_CATEGORIES: tuple[str, ...] = ("direct_retrieval", "attribute_lookup", "multi_hop", "comparison")

# A comparison names two candidates joined by "or" and asks which one wins on some scale, or asks
# whether two things share a property ("Are X and Y both ...?", common in HotpotQA).
_COMPARATIVE = re.compile(
    r"\b(earlier|earliest|first|later|last|older|oldest|younger|youngest|larger|largest|smaller|"
    r"bigger|longer|shorter|taller|higher|lower|more|fewer|less|greater|closer|farther|further)\b")
_BOTH = re.compile(r"^(are|were|is|was|do|did|does|have|has)\b.*\bboth\b|\bsame\b|\bin common\b")
_OR = re.compile(r"\bor\b")

# A multi-hop question names its target through a relation to another entity ("the founder of X",
# "the city where Y was born"): the bridge entity must be found before the answer can be.
_BRIDGE = re.compile(
    r"\bthe (author|writer|director|composer|painter|poet|creator|founder|father|mother|son|daughter|"
    r"wife|husband|spouse|birthplace|headquarters|owner|performer|producer|publisher|successor|"
    r"predecessor|parent company)s? of\b|\bthe (city|country|town|place|person|team|company) "
    r"(where|that|which|who|in which)\b|\bwhose\b")

# An attribute lookup asks for a value (a date, a number, a language, a trade) of a named entity.
_ATTRIBUTE = re.compile(
    r"^(when|how many|how much|how old|how long|how tall|in what year|what year|which year|"
    r"in which year|on what date|what date)\b|\b(population|occupation|profession|official language|"
    r"language|river|height|length|area|age|year|date|born on|died on)\b")


def skill_category(task_description: str) -> str:
    """Map a question to one of SKILL_CATEGORIES by keyword rules, most specific family first.

    Comparison before multi-hop (a comparison may mention a relation), multi-hop before attribute
    lookup (a bridge question often ends in an attribute), and plain single-hop retrieval as the
    default, which is what most Natural Questions items are.
    """
    text = " ".join(str(task_description).lower().split())
    if (_OR.search(text) and _COMPARATIVE.search(text)) or _BOTH.search(text):
        return "comparison"
    if _BRIDGE.search(text):
        return "multi_hop"
    if _ATTRIBUTE.search(text):
        return "attribute_lookup"
    return "direct_retrieval"
