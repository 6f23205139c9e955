"""WebShop's purchase score, as pure functions over plain values.

The score rewards a purchase by how much of the goal it satisfies: each goal attribute found in the
product, each selected option that matches a goal option, the price under the limit, all scaled by
whether the product is even the right kind of thing. Matching follows WebShop: fuzzy token-set ratio
above 85 (rapidfuzz), exact match for the "size" option, and a fallback that counts a word as present
when it appears in the product's title, features or description.
"""

from __future__ import annotations

from rapidfuzz.fuzz import token_set_ratio

FUZZY_THRESHOLD = 85
EXACT_MATCH_OPTIONS = ("size",)


def purchase_score(attribute_matches: int, option_matches: int, price_ok: bool,
                   n_goal_attributes: int, n_goal_options: int, type_factor: float) -> float:
    """WebShop's reward of one purchase:

        score = (attribute_matches + option_matches + [price <= limit])
                / (n_goal_attributes + n_goal_options + 1)
                * type_factor,          type_factor in {1, 0.5, 0.1, 0}

    It is 1.0 only when every goal attribute and option is met, the price fits and the type matches.
    """
    total = attribute_matches + option_matches + int(bool(price_ok))
    return total / (n_goal_attributes + n_goal_options + 1) * type_factor


def type_match_factor(query_match: bool, category_match: bool, title_score: float) -> float:
    """How much the purchased product is the goal's kind of product (WebShop's r_type).

    1.0 when the product was found by the goal's query, shares at least two category levels, or
    shares more than 20% of the goal title's nouns; else 0.5. A title sharing under 10% of the nouns
    drops it to 0.1, and none at all to 0 (a lamp bought for a shampoo goal earns nothing).
    """
    factor = 1.0 if (query_match or category_match or title_score > 0.2) else 0.5
    if title_score < 0.1:
        factor = 0.1
    if title_score == 0.0:
        factor = 0.0
    return factor


def title_noun_score(goal_nouns, purchased_nouns) -> float:
    """Share of the goal title's nouns that the purchased title also has (0.2 if the goal has none)."""
    goal_set = {noun.lower() for noun in goal_nouns}
    if not goal_set:
        return 0.2
    return len(goal_set & {noun.lower() for noun in purchased_nouns}) / len(goal_set)


def shared_category_levels(path_a: str, path_b: str) -> int:
    """Number of levels two "A › B › C" category paths have in common, ignoring order."""
    return len({part.strip() for part in path_a.split("›")} & {part.strip() for part in path_b.split("›")})


def count_attribute_matches(goal_attributes, product_attributes, product_text: str) -> int:
    """Goal attributes met: fuzzy-equal to one of the product's attributes, or written in its text."""
    matches = 0
    for wanted in goal_attributes:
        if any(token_set_ratio(have, wanted) > FUZZY_THRESHOLD for have in product_attributes):
            matches += 1
        elif wanted.lower() in product_text:
            matches += 1
    return matches


def count_option_matches(goal_option_values, chosen_options: dict, product_text: str) -> int:
    """Selected options that meet a goal option: exact for size, fuzzy otherwise, or written in the text.

    Like WebShop this walks the *selected* options, so an option left unselected never counts.
    """
    wanted = [str(value).lower() for value in goal_option_values]
    matches = 0
    for name, value in chosen_options.items():
        value = str(value).lower()
        if name.lower() in EXACT_MATCH_OPTIONS:
            met = value in wanted
        else:
            met = any(token_set_ratio(goal_value, value) > FUZZY_THRESHOLD for goal_value in wanted)
        if met or value in product_text:
            matches += 1
    return matches


def score_purchase(goal, target, purchased, chosen_options: dict) -> float:
    """Score buying `purchased` with `chosen_options` for `goal`, whose intended product is `target`
    (catalogue `Product`s and a `Goal`; see envs.webshop.catalog)."""
    text = purchased.text()
    factor = type_match_factor(
        query_match=purchased.query == target.query,
        category_match=shared_category_levels(purchased.product_category, target.product_category) >= 2,
        title_score=title_noun_score(target.title_nouns, purchased.title_nouns))
    return purchase_score(
        attribute_matches=count_attribute_matches(goal.attributes, purchased.attributes, text),
        option_matches=count_option_matches(list(goal.options.values()), chosen_options, text),
        price_ok=purchased.price <= goal.price_upper,
        n_goal_attributes=len(goal.attributes), n_goal_options=len(goal.options), type_factor=factor)
