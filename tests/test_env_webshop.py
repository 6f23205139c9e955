"""WebShop: built-in engine (pages, expert, reward), prompts, skill rules and the real adapter."""

import os
import random
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.fuzz import token_set_ratio

from conftest import ROOT
from envs import make_env
from envs.base import INFO_KEYS
from envs.webshop import SKILL_CATEGORIES, skill_category
from envs.webshop.catalog import Goal, Product
from envs.webshop.engine import BuiltinWebShop
from envs.webshop.prompts import parse_action, render_prompt, split_action
from envs.webshop.reward import (count_attribute_matches, count_option_matches, purchase_score,
                                 score_purchase, type_match_factor)


@pytest.fixture(scope="module")
def env():
    return BuiltinWebShop()


def check_info(info, env):
    assert set(INFO_KEYS) <= set(info)
    assert info["step"] == env.steps
    assert isinstance(info["admissible_actions"], list)


def play(env, actions):
    total, done, info = 0.0, False, None
    for action in actions:
        _, reward, done, info = env.step(action)
        check_info(info, env)
        total += reward
        if done:
            break
    return total, done, info


# ----- expert, random policy, determinism ---------------------------------------------------------
@pytest.mark.parametrize("split,indices", [("test", range(0, 500, 2)), ("train", range(0, 880, 3))])
def test_expert_plan_reaches_full_score(env, split, indices):
    for index in indices:
        _, info = env.reset(seed=0, split=split, task_index=index)
        check_info(info, env)
        privileged = env.privileged()
        assert privileged["skill_category"] in SKILL_CATEGORIES
        assert privileged["target_product"]["asin"] == env.target.asin
        plan = privileged["expert_plan"]
        total, done, info = play(env, plan)
        assert done and info["won"] and info["score"] == 1.0 and total == 10.0, (index, plan)
        assert info["step"] == len(plan) <= 15


def test_random_admissible_policy_rarely_wins(env):
    rng = random.Random(1)
    wins = purchases = 0
    for episode in range(150):
        _, info = env.reset(seed=episode, split="train")
        done = False
        while not done:
            action = rng.choice(info["admissible_actions"])
            if action == "search[...]":
                action = f"search[{info['task_description'].split(' with ')[0]}]"
            _, _, done, info = env.step(action)
        purchases += env.page == "done"
        wins += info["won"]
    assert purchases >= 10          # the policy does reach Buy Now sometimes
    assert wins / 150 < 0.1


def test_same_seed_same_goal_and_state():
    first, second = BuiltinWebShop(), BuiltinWebShop()
    for seed in (0, 7, 123):
        obs_a, info_a = first.reset(seed, split="train")
        obs_b, info_b = second.reset(seed, split="train")
        assert (obs_a, info_a) == (obs_b, info_b)
        assert first.privileged() == second.privileged()
    assert len({first.reset(seed, "test")[1]["task_id"] for seed in range(30)}) > 20


def test_splits_and_aliases(env):
    assert env.reset(0, "valid_seen", task_index=3)[1]["task_id"] == "webshop-test-3"
    assert env.reset(0, "eval", task_index=499)[1]["task_id"] == "webshop-test-499"
    test_goal = env.reset(0, "test", task_index=0)[1]["task_description"]
    train_goal = env.reset(0, "train", task_index=0)[1]["task_description"]
    assert env.store.goals[500].instruction_text == train_goal != test_goal
    with pytest.raises(ValueError):
        env.reset(0, "validation")
    with pytest.raises(ValueError):
        env.reset(0, "test", task_index=500)


# ----- page mechanics -----------------------------------------------------------------------------
def test_pages_buttons_and_options(env):
    obs, info = env.reset(seed=0, split="test", task_index=10)
    assert obs.startswith("WebShop [SEP] Instruction: [SEP] ") and info["admissible_actions"] == ["search[...]"]
    obs, _, _, info = env.step("search[free black white organic]")
    assert "Page 1 (Total results: 50)" in obs and "Next >" in obs and "< Prev" not in obs
    assert info["admissible_actions"][:2] == ["click[back to search]", "click[next >]"]
    assert len(info["admissible_actions"]) == 12 and "search[...]" not in info["admissible_actions"]
    obs, _, _, info = env.step("click[next >]")
    assert "Page 2 (Total results: 50)" in obs and "< Prev" in obs
    asin = info["admissible_actions"][-1][len("click["):-1]
    obs, _, _, info = env.step(f"click[{asin}]")
    for part in ("Price: $", "Rating:", "Description", "Features", "Reviews", "Buy Now"):
        assert part in obs
    obs, _, _, info = env.step("click[features]")
    assert env.product.bullet_points[0] in obs
    env.step("click[< prev]")
    obs, _, _, info = env.step("click[< prev]")
    assert "Page 2 (Total results: 50)" in obs
    obs, _, _, info = env.step("click[back to search]")
    assert info["admissible_actions"] == ["search[...]"] and info["step"] == 7


def test_wrong_or_missing_option_loses_the_win(env):
    env.reset(seed=0, split="test", task_index=0)
    plan = env.privileged()["expert_plan"]
    option_name, wanted = next(iter(env.goal.options.items()))
    other = next(v for v in env.target.options[option_name] if v != wanted)
    total, done, info = play(env, plan[:2] + [f"click[{other}]"] + plan[3:])
    assert done and not info["won"] and 0 < info["score"] < 1 and total == 0.0
    env.reset(seed=0, split="test", task_index=0)
    _, done, info = play(env, plan[:2] + ["click[buy now]"])
    assert done and not info["won"] and info["score"] < 1


WEIRD_ACTIONS = ["", "click[]", "search[]", "click[buy now", "CLICK[nothing here]", "go north", "click[[x]]",
                 "search[shampoo]", "click[next >]", "\x00\x1b[2J", "click[\u00e9\u4e2d\u6587]", "<action>x</action>",
                 "click[" + "a" * 2_000_000 + "]", "search[" * 1000]


@pytest.mark.parametrize("page_actions", [[], ["search[wireless earbuds]"], ["search[candle]", "click[__first__]"]])
@pytest.mark.parametrize("action", WEIRD_ACTIONS)
def test_invalid_actions_change_nothing(env, page_actions, action):
    env.reset(seed=3, split="train")
    for page_action in page_actions:
        env.step(env.admissible_actions()[-1] if page_action == "click[__first__]" else page_action)
    before_obs, before_admissible, steps = env.observation, env.admissible_actions(), env.steps
    kind, argument = split_action(action)
    if f"{kind}[{argument}]" in before_admissible or (kind == "search" and argument and not page_actions):
        pytest.skip("a valid action on this page")
    obs, reward, done, info = env.step(action)
    assert (obs, reward, done) == (before_obs, 0.0, False)
    assert info["admissible_actions"] == before_admissible and info["step"] == steps + 1


def test_fifteen_step_limit(env):
    env.reset(seed=5, split="train")
    for step in range(1, 16):
        _, reward, done, info = env.step("click[nowhere]")
        assert done == (step == 15) and reward == 0.0 and info["step"] == step
    assert info["admissible_actions"] == [] and not info["won"]
    assert env.step("search[more]")[2] and env.steps == 15


# ----- reward formula -----------------------------------------------------------------------------
def test_purchase_score_formula():
    assert purchase_score(2, 2, True, 2, 2, 1.0) == 1.0
    assert purchase_score(1, 2, True, 2, 2, 1.0) == pytest.approx(4 / 5)   # one attribute missing
    assert purchase_score(2, 1, True, 2, 2, 1.0) == pytest.approx(4 / 5)   # one option wrong
    assert purchase_score(2, 2, False, 2, 2, 1.0) == pytest.approx(4 / 5)  # over the price limit
    assert purchase_score(2, 0, True, 2, 0, 0.5) == pytest.approx(0.5)
    assert purchase_score(3, 1, True, 3, 1, 0.1) == pytest.approx(0.1)
    assert purchase_score(3, 1, True, 3, 1, 0.0) == 0.0


@pytest.mark.parametrize("query,category,title_score,factor", [
    (True, False, 0.0, 0.0), (True, True, 0.05, 0.1), (False, False, 0.15, 0.5), (False, True, 0.15, 1.0),
    (True, False, 0.15, 1.0), (False, False, 0.5, 1.0), (False, False, 0.2, 0.5), (False, False, 0.1, 0.5)])
def test_type_match_factor(query, category, title_score, factor):
    assert type_match_factor(query, category, title_score) == factor


def test_attribute_and_option_matching():
    text = "acme soft towel with deep pocket design"
    assert count_attribute_matches(["machine washable", "deep pocket", "quick dry"], ["machine washable"], text) == 2
    assert count_attribute_matches(["quick dry"], ["quick drying fabric"], text) == 0
    assert count_option_matches(["navy", "queen"], {"color": "navy", "size": "queen"}, text) == 2
    assert count_option_matches(["navy", "queen"], {"color": "sage", "size": "queen"}, text) == 1
    assert count_option_matches(["navy", "queen"], {"color": "navy"}, text) == 1   # unselected: no point
    assert count_option_matches(["8 fl oz"], {"size": "18 fl oz"}, text) == 0       # size is exact
    assert count_option_matches(["navy blue"], {"color": "blue navy"}, text) == 1   # others are fuzzy
    assert count_option_matches(["navy"], {"color": "soft"}, text) == 1             # value in the text


def _product(**changes):
    fields = dict(asin="B0TEST0001", title="Acme Pro Quick Dry Bath Towel", description="a towel",
                  bullet_points=("Quick dry: good",), attributes=("quick dry", "100% cotton", "plush"),
                  options={"color": ("navy", "sage"), "size": ("set of 2", "set of 4")}, price=25.0,
                  rating="4.5", reviews=(), category="home", product_category="Home & Kitchen › Bath › Towels",
                  query="bath towel", title_nouns=("acme", "bath", "towel"), instruction="i need a bath towel",
                  instruction_attributes=("quick dry", "100% cotton"), price_upper=30.0)
    return Product(**{**fields, **changes})


def test_score_purchase_end_to_end():
    target = _product()
    goal = Goal(index=0, asin=target.asin, instruction_text="", attributes=("quick dry", "100% cotton"),
                options={"color": "navy", "size": "set of 4"}, price_upper=30.0, category="home")
    good = {"color": "navy", "size": "set of 4"}
    assert score_purchase(goal, target, target, good) == 1.0
    assert score_purchase(goal, target, target, {"color": "sage", "size": "set of 4"}) == pytest.approx(4 / 5)
    assert score_purchase(goal, target, _product(price=31.0), good) == pytest.approx(4 / 5)
    assert score_purchase(goal, target, _product(attributes=("plush",), title="Acme Bath Towel",
                                                 bullet_points=()), good) == pytest.approx(3 / 5)
    lamp = _product(query="desk lamp", title_nouns=("zeta", "lamp"), product_category="Tools › Lighting")
    assert score_purchase(goal, target, lamp, good) == 0.0


# ----- catalogue, skills, prompts, parsing ----------------------------------------------------------
def test_catalogue_is_consistent(env):
    products = env.store.products
    assert {p.category for p in products} == set(SKILL_CATEGORIES)
    assert len({p.asin for p in products}) == len({p.title for p in products}) == len(products)
    for product in products:
        text = product.text()
        for name, values in product.options.items():
            assert not any(value in text for value in values), product.title
            if name != "size":
                assert all(token_set_ratio(a, b) <= 85 for a in values for b in values if a != b)
        assert set(product.instruction_attributes) <= set(product.attributes)
        assert product.price < product.price_upper


def test_skill_category_maps_goals_to_their_category(env):
    assert all(skill_category(goal.instruction_text) == goal.category for goal in env.store.goals)
    assert skill_category("i want a long lasting lipstick, and price lower than 30.00 dollars") == "beauty"
    assert skill_category("i need a 4k hdmi cable with cable length: 6 ft") == "electronics"
    assert skill_category("men's slim fit jeans with color: black") == "fashion"
    assert skill_category("gluten free snacks with flavor: vanilla") == "food"
    assert skill_category("a queen size bed sheet set with color: navy") == "home"
    assert skill_category("") in SKILL_CATEGORIES


def test_skill_files_exist():
    for name in ("general", *SKILL_CATEGORIES):
        path = os.path.join(ROOT, "skills", "webshop", f"{name}.md")
        assert os.path.getsize(path) > 200, path


def test_parse_action():
    assert parse_action("<think>ok</think><action>click[Buy Now]</action>") == ("click[buy now]", True)
    assert parse_action("<think>ok</think><action> search[red shoes] </action>") == ("search[red shoes]", True)
    assert parse_action("<action>click[buy now]</action>")[1] is False                      # no think
    assert parse_action("<think>x</think><action>buy now</action>") == ("buy now", False)   # not a form
    assert parse_action("<think>x</think><action>click[]</action>")[1] is False
    assert parse_action("<think>x</think><action>a</action><action>b</action>")[1] is False
    assert parse_action("<think>\u4e2d</think><action>click[x]</action>")[1] is False
    assert parse_action("<think>" + "x" * 3_000_000 + "</think><action>click[a]</action>") == ("click[a]", True)
    assert split_action("  click[Next  >] ") == ("click", "next >")
    assert split_action("press[x]") == ("", "")


@settings(max_examples=150, deadline=None)
@given(observation=st.text(), history=st.one_of(st.none(), st.integers(), st.lists(st.one_of(
    st.tuples(st.text(), st.text()), st.text(), st.lists(st.integers(), max_size=3)), max_size=6)),
    info=st.one_of(st.none(), st.dictionaries(st.sampled_from(INFO_KEYS), st.one_of(
        st.text(), st.integers(), st.lists(st.text(), max_size=4), st.none()))),
    history_length=st.one_of(st.integers(-5, 10), st.text(max_size=3), st.none()),
    response=st.text())
def test_prompt_and_parse_never_raise(observation, history, info, history_length, response):
    prompt = render_prompt(observation, history, info, history_length)
    assert isinstance(prompt, str) and "<action></action>" in prompt
    action, valid = parse_action(response)
    assert isinstance(action, str) and isinstance(valid, bool)


def test_prompt_holds_the_turn(env):
    obs, info = env.reset(seed=2, split="test")
    history = []
    for action in env.privileged()["expert_plan"][:3]:
        history.append((obs, action))
        obs, _, _, info = env.step(action)
    prompt = env.render_prompt(obs, history, info, history_length=2)
    assert prompt.count(info["task_description"]) == 1            # page heads are cut off
    assert f"taken {info['step']} of at most 15" in prompt
    assert history[-1][1] in prompt and history[-2][1] in prompt and history[0][1] not in prompt
    assert all(action in prompt for action in info["admissible_actions"])
    assert len(prompt) < 3000


def test_unclipped_prompt_over_13000_characters_drops_the_history(tmp_path):
    """Released: pages are whole, and a prompt over 13,000 characters is built from the no-history
    template (the template's own section when it has one); clipped prompts (this project) keep history."""
    info = {"task_description": "buy a red mug", "step": 2, "admissible_actions": ["click[back to search]"]}
    page = "Results [SEP] " + "a long product title " * 250                        # ~5,000 characters
    history = [(page, "search[red mug]"), (page, "click[next >]")]
    short = render_prompt("Item [SEP] red mug", history[:1], info, 2, clip_observations=False)
    assert "search[red mug]" in short and len(short) > 5000
    long = render_prompt(page + page, history, info, 2, clip_observations=False)
    assert "search[red mug]" not in long and "Your last" not in long and page + page in long
    assert "buy a red mug" in long and "click[back to search]" in long
    assert "click[next >]" in render_prompt(page + page, history, info, 2)            # clipped: history kept
    template = tmp_path / "prompt.txt"
    template.write_text("Task: {task}\n{history}\nNow: {observation}\n=== no history ===\nAlone: {task}\n"
                        "{observation}\n")
    from envs.webshop.prompts import get_template
    fallback = render_prompt(page + page, history, info, 2, template=get_template(str(template)),
                             clip_observations=False)
    assert fallback.startswith("Alone: buy a red mug\n") and "search[red mug]" not in fallback


def test_registry_and_cheap_import():
    assert isinstance(make_env("webshop", "builtin", num_products=60), BuiltinWebShop)
    code = "import sys, envs.webshop; print(sorted({'bm25s', 'rapidfuzz', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_small_catalogue_still_has_both_splits():
    small = BuiltinWebShop(num_products=40, catalog_seed=3)
    n_test = len(small.store.split_range("test"))
    assert 0 < n_test < 500 and len(small.store.split_range("train")) > 0
    small.reset(0, "train")
    assert play(small, small.privileged()["expert_plan"])[2]["won"]


# ----- real adapter -------------------------------------------------------------------------------
def test_real_adapter_without_checkout_says_what_to_do(monkeypatch, tmp_path):
    from envs.webshop.real import RealWebShop
    monkeypatch.delenv("WEBSHOP_PATH", raising=False)
    with pytest.raises(RuntimeError, match="WEBSHOP_PATH"):
        RealWebShop()
    with pytest.raises(RuntimeError, match="web_agent_site"):
        RealWebShop(webshop_path=str(tmp_path))


FAKE_TEXT_ENV = textwrap.dedent('''
    """A stand-in for WebShop's WebAgentTextEnv with the same calls and page flow (for adapter tests)."""
    class SimServer:
        def __init__(self):
            self.goals = [{"asin": f"B{i:03d}", "category": "beauty", "name": f"Thing {i}", "query": "thing",
                           "instruction_text": f"i need thing {i}", "attributes": ["soft"],
                           "goal_options": {"color": "red"}, "price_upper": 20.0} for i in range(620)]
            self.user_sessions = {}

    class WebAgentTextEnv:
        def __init__(self, observation_mode="html", server=None, **kwargs):
            assert observation_mode == "text"
            self.server = server or SimServer()
            self.session_prefix = kwargs.get("session_prefix")
            self.reset()

        def reset(self, session=None):
            self.session = (self.session_prefix or "") + str(session if session is not None else "random")
            index = session if isinstance(session, int) else 0
            state = self.server.user_sessions.setdefault(self.session, {"goal": self.server.goals[index]})
            state.update(page="search", color=None)
            self.instruction_text = state["goal"]["instruction_text"]
            return self.observation, None

        @property
        def observation(self):
            state = self.server.user_sessions[self.session]
            return f"Instruction: [SEP] {self.instruction_text} [SEP] {state['page']}"

        def get_available_actions(self):
            page = self.server.user_sessions[self.session]["page"]
            clickables = {"search": ["search"], "results": ["back to search", "next >", "b001"],
                          "item": ["back to search", "< prev", "red", "blue", "buy now"]}[page]
            return {"has_search_bar": page == "search", "clickables": clickables}

        def step(self, action):
            state = self.server.user_sessions[self.session]
            name, argument = action[:-1].split("[", 1)
            available = self.get_available_actions()
            assert (name == "search" and available["has_search_bar"]) or argument in available["clickables"]
            if argument == "buy now":
                return "done", (1.0 if state["color"] == "red" else 0.5), True, None
            moves = {"next >": "results", "back to search": "search", "b001": "item"}
            state["page"] = "results" if name == "search" else moves.get(argument, state["page"])
            state["color"] = argument if argument in ("red", "blue") else state["color"]
            return self.observation, 0.0, False, None
''')


@pytest.fixture
def fake_checkout(tmp_path, monkeypatch):
    package = tmp_path / "web_agent_site" / "envs"
    package.mkdir(parents=True)
    (tmp_path / "web_agent_site" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "web_agent_text_env.py").write_text(FAKE_TEXT_ENV)
    monkeypatch.setattr(sys, "path", list(sys.path))
    forget_webshop_modules()   # a real WebShop loaded by an earlier test would shadow the stand-in
    yield str(tmp_path)
    forget_webshop_modules()


def forget_webshop_modules() -> None:
    for name in [name for name in sys.modules if name.startswith("web_agent_site")]:
        del sys.modules[name]


def test_real_adapter_over_a_stand_in_checkout(fake_checkout, monkeypatch):
    from envs.webshop import real
    monkeypatch.setattr(real, "_SERVERS", {})
    first, second = real.RealWebShop(webshop_path=fake_checkout), real.RealWebShop(webshop_path=fake_checkout)
    assert first.server is second.server
    obs, info = first.reset(seed=4, split="test", task_index=7)
    second.reset(seed=4, split="test", task_index=7)
    assert first.env.session != second.env.session and info["task_id"] == "webshop-test-7"
    assert info["task_description"] == "i need thing 7" and info["admissible_actions"] == ["search[...]"]
    assert first.reset(seed=0, split="train", task_index=0)[1]["task_description"] == "i need thing 500"
    privileged = first.privileged()
    assert privileged["skill_category"] == "beauty" and privileged["expert_plan"][1] == "click[b500]"
    for action in ["click[b001]", "search[thing]", "click[Search]", "search[thing]", "click[b001]", "click[blue]"]:
        obs, reward, done, info = first.step(action)
        assert set(INFO_KEYS) <= set(info) and not done
    assert "click[red]" in info["admissible_actions"] and info["step"] == 6
    obs, reward, done, info = first.step("click[buy now]")
    assert done and reward == 0.0 and info["score"] == 0.5 and not info["won"]
    second.step("search[x]"), second.step("click[b001]"), second.step("click[red]")
    assert second.step("click[buy now]")[1:3] == (10.0, True) and second._info()["won"]
    third = real.RealWebShop(webshop_path=fake_checkout)
    third.reset(seed=1, split="test")
    assert [third.step("click[nothing]")[2] for _ in range(15)] == [False] * 14 + [True]


def test_real_webshop_checkout(webshop_real):
    """WebShop's own text environment (the checkout, on the exported catalogue; see tests/test_webshop_real.py)."""
    from envs.webshop.real import RealWebShop
    checkout, data = webshop_real
    env = RealWebShop(webshop_path=checkout, data_dir=data)
    obs, info = env.reset(seed=0, split="test", task_index=0)
    assert set(INFO_KEYS) <= set(info) and "search[...]" in info["admissible_actions"]
    obs, reward, done, info = env.step(f"search[{info['task_description']}]")
    assert "Back to Search" in obs and any(a.startswith("click[") for a in info["admissible_actions"])
    assert env.step("not an action")[0] == obs


def test_real_adapter_names_the_export_when_data_dir_is_not_one(fake_checkout, tmp_path):
    from envs.base import EnvSetupError
    from envs.webshop.real import RealWebShop
    empty = tmp_path / "not_exported"
    empty.mkdir()
    for call in (lambda: RealWebShop.check_kwargs({"webshop_path": fake_checkout, "data_dir": str(empty)}),
                 lambda: RealWebShop(webshop_path=fake_checkout, data_dir=str(empty))):
        with pytest.raises(EnvSetupError, match="envs.webshop.export"):
            call()


def test_export_writes_webshop_file_formats(tmp_path):
    """The files without the index (that needs pyserini; tests/test_webshop_real.py builds it)."""
    import json
    subprocess.run([sys.executable, "-m", "envs.webshop.export", "--out", str(tmp_path), "--num", "12",
                    "--no-index"], cwd=ROOT, check=True, capture_output=True)
    products = json.load(open(tmp_path / "data" / "items_shuffle_1000.json"))
    attributes = json.load(open(tmp_path / "data" / "items_ins_v2_1000.json"))
    human = json.load(open(tmp_path / "data" / "items_human_ins.json"))
    store = BuiltinWebShop(num_products=12).store
    assert [p["asin"] for p in products] == [p.asin for p in store.products]
    first = products[0]
    assert first["pricing"].startswith("$") and isinstance(first["small_description"], list)
    assert all(isinstance(v, list) and "value" in v[0] for v in first["customization_options"].values())
    assert set(attributes[first["asin"]]) == {"attributes", "instruction", "instruction_attributes"}
    assert sum(len(goals) for goals in human.values()) == len(store.goals)
    documents = [json.loads(line) for line in open(tmp_path / "search_engine" / "resources" / "documents.jsonl")]
    assert documents[0]["id"] == first["asin"] and documents[0]["contents"] == documents[0]["contents"].lower()
