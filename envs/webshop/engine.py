"""The built-in WebShop: WebShop's pages, actions and reward over a seeded catalogue, no download.

Pages and their text (parts joined by " [SEP] ", as in WebShop's "text" observation mode):
  search   - "WebShop [SEP] Instruction: [SEP] <goal> [SEP] Search"        action: search[query]
  results  - "Back to Search", "Page 1 (Total results: 50)", "< Prev", "Next >", then ASIN, title
             and price of up to 10 of the top 50 BM25 hits                    click[asin | button]
  item     - options (name, then its values), title, price, rating, "Description", "Features",
             "Reviews", "Buy Now"                                             click[value | button]
  sub page - description, features or reviews text, with "< Prev" back to the item
  done     - after "Buy Now": the purchase score; the episode ends
Clicking an option value selects it (one per option name). Every action, valid or not, uses one of
the 15 steps; an action the page does not offer changes nothing.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

import numpy as np

from envs.webshop.catalog import Goal, Product, make_catalog
from envs.base import check_switches
from envs.webshop.prompts import get_template, parse_action, render_prompt, split_action
from envs.webshop.reward import score_purchase

SEP = " [SEP] "
SEARCH_RETURN_N = 50
PRODUCT_WINDOW = 10
TEST_GOALS = 500
SPLIT_ALIASES = {"train": "train", "test": "test", "valid_seen": "test", "valid": "test", "eval": "test"}
STOPWORDS = frozenset("a an and are as at be by for from i in is it of on or that the to with".split())
BUTTON_TEXT = {"< prev": "< Prev", "next >": "Next >"}
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased alphanumeric words without stop words; the same for products and queries."""
    return [word for word in _TOKEN.findall(text.lower()) if word not in STOPWORDS]


class Store:
    """The shared, read-only part of the shop: catalogue, goals and the BM25 index (one per seed)."""

    def __init__(self, num_products: int, seed: int):
        import bm25s  # imported here so that importing the package stays cheap

        self.products, self.goals = make_catalog(num_products, seed)
        self.by_asin = {product.asin: product for product in self.products}
        corpus = [tokenize(" ".join([p.title, p.description, *p.bullet_points,
                                     *[v for values in p.options.values() for v in values]]))
                  for p in self.products]
        self.index = bm25s.BM25()
        self.index.index(corpus, show_progress=False)
        self.n_test = min(TEST_GOALS, len(self.goals) // 2)
        self._cache: dict[str, list[Product]] = {}

    def search(self, query: str) -> list[Product]:
        """Top SEARCH_RETURN_N products with a positive BM25 score, best first (ties by catalogue order)."""
        if query not in self._cache:
            tokens = tokenize(query)
            if not tokens:
                hits = []
            else:
                scores = self.index.get_scores(tokens)
                order = np.argsort(-scores, kind="stable")[:SEARCH_RETURN_N]
                hits = [self.products[i] for i in order if scores[i] > 0]
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[query] = hits
        return self._cache[query]

    def split_range(self, split: str) -> range:
        """Goals 0-499 are the test split, the rest train (fewer for a small catalogue: half each)."""
        return range(0, self.n_test) if split == "test" else range(self.n_test, len(self.goals))


@lru_cache(maxsize=8)
def get_store(num_products: int = 300, seed: int = 0) -> Store:
    """One Store per (size, seed), shared by every env copy in the process."""
    return Store(num_products, seed)


def _price(value: float) -> str:
    return f"${value:.2f}"


class BuiltinWebShop:
    """WebShop on a seeded catalogue. kwargs: num_products (300), catalog_seed (0), max_steps (15), and
    the prompt switches every env takes: `prompt_template` (a template file, see `envs.templates`;
    None = `envs/webshop/prompt.txt`), `clip_observations` (True: past pages are cut to 400
    characters and the current one to 6,000; False: nothing is cut, as released), `action_parse`
    ("project" or "released", see `envs.webshop.prompts.parse_action`)."""

    name = "webshop"

    def __init__(self, num_products: int = 300, catalog_seed: int = 0, max_steps: int = 15,
                 prompt_template: str | None = None, clip_observations: bool = True, action_parse: str = "project"):
        check_switches(action_parse, clip_observations)
        self.store = get_store(int(num_products), int(catalog_seed))
        self.max_steps = int(max_steps)
        self.clip_observations, self.action_parse = clip_observations, action_parse
        self.template = get_template(prompt_template)
        self.goal: Goal | None = None
        self.target: Product | None = None

    def num_tasks(self, split: str) -> int:
        """Goals of a split (task_index 0..num_tasks-1)."""
        return len(self.store.split_range(SPLIT_ALIASES[split]))

    # ----- episode -----------------------------------------------------------------------------
    def reset(self, seed: int, split: str = "train", task_index: int | None = None) -> tuple[str, dict]:
        if split not in SPLIT_ALIASES:
            raise ValueError(f"split={split!r} is unknown; choose one of {', '.join(SPLIT_ALIASES)}")
        self.split = SPLIT_ALIASES[split]
        goals = self.store.split_range(self.split)
        if task_index is None:
            task_index = random.Random(seed).randrange(len(goals))
        if not 0 <= task_index < len(goals):
            raise ValueError(f"task_index={task_index} is outside the {self.split} split (0..{len(goals) - 1})")
        self.task_index = task_index
        self.goal = self.store.goals[goals[task_index]]
        self.target = self.store.by_asin[self.goal.asin]
        self.page, self.query, self.hits, self.page_number = "search", "", [], 1
        self.product: Product | None = None
        self.sub_page = ""
        self.chosen: dict[str, str] = {}
        self.steps, self.done, self.score = 0, False, 0.0
        self.observation = self._render()
        return self.observation, self._info()

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        if self.done:
            return self.observation, 0.0, True, self._info()
        self.steps += 1
        kind, argument = split_action(action)
        reward = 0.0
        if kind == "search" and self.page == "search" and argument:
            self.page, self.query, self.page_number = "results", argument, 1
            self.hits = self.store.search(argument)
        elif kind == "click" and argument in self._clickables():
            reward = self._click(argument)
        if self.steps >= self.max_steps:
            self.done = True
        self.observation = self._render()
        return self.observation, reward, self.done, self._info()

    def _click(self, name: str) -> float:
        """Move between pages; returns the env reward (10 for a purchase that scores 1.0)."""
        if name == "back to search":
            self.page, self.hits, self.query = "search", [], ""
        elif name == "next >":
            self.page_number += 1
        elif name == "< prev" and self.page == "results":
            self.page_number -= 1
        elif name == "< prev" and self.page == "item":
            self.page, self.product = "results", None
        elif name == "< prev":
            self.page = "item"
        elif self.page == "results":
            self.page, self.chosen = "item", {}
            self.product = next(p for p in self._page_hits() if p.asin.lower() == name)
        elif name in ("description", "features", "reviews"):
            self.page, self.sub_page = "sub", name
        elif name == "buy now":
            self.score = score_purchase(self.goal, self.target, self.product, self.chosen)
            self.page, self.done = "done", True
            return 10.0 if self.score == 1.0 else 0.0
        else:
            option = next(o for o, values in self.product.options.items() if name in values)
            self.chosen[option] = name
        return 0.0

    # ----- what the page shows -----------------------------------------------------------------
    def _page_hits(self) -> list[Product]:
        start = (self.page_number - 1) * PRODUCT_WINDOW
        return self.hits[start:start + PRODUCT_WINDOW]

    def _clickables(self) -> list[str]:
        """Lower-cased names of what can be clicked now, in page order (WebShop lower-cases them too)."""
        if self.page == "results":
            names = ["back to search"]
            if self.page_number > 1:
                names.append("< prev")
            if self.page_number * PRODUCT_WINDOW < len(self.hits):
                names.append("next >")
            return names + [p.asin.lower() for p in self._page_hits()]
        if self.page == "item":
            values = [v for option_values in self.product.options.values() for v in option_values]
            return ["back to search", "< prev", *values, "description", "features", "reviews", "buy now"]
        if self.page == "sub":
            return ["back to search", "< prev"]
        return []

    def admissible_actions(self) -> list[str]:
        if self.done:
            return []
        searches = ["search[...]"] if self.page == "search" else []
        return searches + [f"click[{name}]" for name in self._clickables()]

    def _render(self) -> str:
        head = ["Instruction:", self.goal.instruction_text]
        if self.page == "search":
            return SEP.join(["WebShop", *head, "Search"])
        if self.page == "done":
            return SEP.join(["Thank you for shopping with us!", "Your score (min 0.0, max 1.0)", f"{self.score:.2f}"])
        parts = [*head, "Back to Search"]
        if self.page == "results":
            parts.append(f"Page {self.page_number} (Total results: {len(self.hits)})")
            parts += [BUTTON_TEXT[name] for name in self._clickables() if name in BUTTON_TEXT]
            for product in self._page_hits():
                parts += [product.asin, product.title, _price(product.price)]
            return SEP.join(parts)
        parts.append("< Prev")
        product = self.product
        if self.page == "item":
            for option, values in product.options.items():
                parts += [option, *values]
            parts += [product.title, f"Price: {_price(product.price)}", f"Rating: {product.rating}",
                      "Description", "Features", "Reviews", "Buy Now"]
        elif self.sub_page == "description":
            parts.append(product.description)
        elif self.sub_page == "features":
            parts += list(product.bullet_points)
        else:
            parts += list(product.reviews)
        return SEP.join(parts)

    def _info(self) -> dict:
        return {"won": self.done and self.score == 1.0, "score": self.score,
                "admissible_actions": self.admissible_actions(),
                "task_description": self.goal.instruction_text, "task_type": self.goal.category,
                "task_id": f"webshop-{self.split}-{self.task_index}", "step": self.steps}

    # ----- teacher view and prompts -------------------------------------------------------------
    def expert_query(self) -> str:
        """A query that puts the target on page 1: its title, else title plus attributes.

        Checked against the real search each time, so the plan below is right by construction."""
        candidates = [self.target.title.lower(),
                      " ".join([self.target.title.lower(), *self.target.attributes, *self.goal.options.values()])]
        for query in candidates:
            if self.target in self.store.search(query)[:PRODUCT_WINDOW]:
                return query
        return candidates[-1]

    def privileged(self) -> dict:
        goal, target = self.goal, self.target
        plan = [f"search[{self.expert_query()}]", f"click[{target.asin.lower()}]",
                *[f"click[{value}]" for value in goal.options.values()], "click[buy now]"]
        return {"task_type": goal.category, "skill_category": goal.category,
                "target_product": {"asin": target.asin, "title": target.title,
                                   "attributes": list(goal.attributes), "options": dict(goal.options),
                                   "price": target.price, "price_upper": goal.price_upper},
                "expert_plan": plan}

    def render_prompt(self, observation: str, history: list, info: dict, history_length: int) -> str:
        return render_prompt(observation, history, info, history_length, self.max_steps, self.template,
                             self.clip_observations)

    def parse_action(self, response: str) -> tuple[str, bool]:
        return parse_action(response, self.action_parse)
