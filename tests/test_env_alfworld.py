"""Built-in ALFWorld: expert plans win, random play rarely does, invalid actions change nothing,
limits, determinism, prompts, parsing and the skill keyword rules."""

import os
import random
import re

import pytest
from hypothesis import given, settings, strategies as st

from envs import make_env
from envs.alfworld import SKILL_CATEGORIES, TASK_TYPE_CATEGORY, catalog, generator, skill_category
from envs.alfworld.engine import BuiltinAlfWorld
from envs.alfworld.generator import SPLIT_SIZES, TASK_TYPES, generate_game
from envs.base import INFO_KEYS

SKILLS_DIR = os.path.join(os.path.dirname(__file__), "..", "skills", "alfworld")


def play(env, actions):
    """Step through actions; return the list of (obs, reward, done, info)."""
    return [env.step(a) for a in actions]


def snapshot(env):
    """Everything the agent could learn about the state, without taking a step."""
    return (env.admissible_actions(), env._at, list(env._where), env._held, sorted(env._opened),
            sorted(env._hot), sorted(env._cool), sorted(env._clean), sorted(env._toggled))


@pytest.mark.parametrize("split,count", [("train", 300), ("valid_seen", 140), ("valid_unseen", 134)])
@pytest.mark.parametrize("room_size", ["full", "small"])
def test_expert_plan_wins_exactly_at_its_last_step(split, count, room_size):
    env = BuiltinAlfWorld(room_size=room_size)
    seen_types = set()
    for seed in range(count):
        obs, info = env.reset(seed, split) if split == "train" else env.reset(0, split, task_index=seed)
        assert set(INFO_KEYS) <= set(info) and not info["won"]
        plan = env.privileged()["expert_plan"]
        assert 2 <= len(plan) <= 20
        for k, action in enumerate(plan):
            assert action in info["admissible_actions"], (seed, k, action)
            obs, reward, done, info = env.step(action)
            assert set(INFO_KEYS) <= set(info)
            last = k == len(plan) - 1
            assert info["won"] == last and done == last and reward == (10.0 if last else 0.0), (seed, k)
        assert info["score"] == 1.0 and info["step"] == len(plan)
        seen_types.add(info["task_type"])
    assert seen_types == set(TASK_TYPES)


def test_unseen_split_uses_held_out_rooms_only():
    seen = {generate_game("valid_seen", i).floorplan for i in range(140)}
    seen |= {generate_game("train", i).floorplan for i in range(300)}
    unseen = {generate_game("valid_unseen", i).floorplan for i in range(134)}
    assert unseen <= catalog.UNSEEN_FLOORPLANS
    assert not seen & catalog.UNSEEN_FLOORPLANS


def test_random_admissible_policy_rarely_wins():
    env, rng = BuiltinAlfWorld(), random.Random(0)
    wins = 0
    for seed in range(150):
        obs, info = env.reset(seed)
        done = False
        while not done:
            obs, reward, done, info = env.step(rng.choice(info["admissible_actions"]))
        wins += info["won"]
    assert wins / 150 < 0.05  # measured about 0.3 % over 400 episodes


def test_invalid_actions_change_nothing():
    env = BuiltinAlfWorld()
    env.reset(3)
    plan = env.privileged()["expert_plan"]
    play(env, plan[:2])
    for junk in ["", "   ", "go to", "go to nowhere 1", "take apple 99 from fridge 1", "GO TO cabinet 1",
                 "open", "\x00\x1b[2J", "苹果", "x" * 100_000, "<action>look</action>", "move  to"]:
        before = snapshot(env)
        obs, reward, done, info = env.step(junk)
        assert obs == "Nothing happens." and reward == 0.0 and not done
        assert snapshot(env) == before
    assert env.step("help")[0] != "Nothing happens."  # help answers but is not listed


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_step_never_raises_and_unknown_text_is_inert(text):
    env = BuiltinAlfWorld(room_size="small")
    env.reset(11)
    before = snapshot(env)
    obs, reward, done, info = env.step(text)
    assert set(INFO_KEYS) <= set(info)
    if text.strip() not in before[0] and text.strip() != "help":
        assert obs == "Nothing happens." and snapshot(env) == before


def test_step_limit_and_override():
    for limit in (50, 7):
        env = BuiltinAlfWorld(max_steps=limit) if limit != 50 else BuiltinAlfWorld()
        assert env.max_steps == limit
        env.reset(5)
        for k in range(1, limit + 1):
            obs, reward, done, info = env.step("look")
            assert done == (k == limit) and info["step"] == k
        obs, reward, done, info = env.step(env.privileged()["expert_plan"][0])
        assert done and reward == 0.0 and info["step"] == limit


def test_same_seed_same_task_and_seeds_differ():
    a, b = BuiltinAlfWorld(), BuiltinAlfWorld()
    for seed in range(20):
        oa, ia = a.reset(seed)
        ob, ib = b.reset(seed)
        assert (oa, ia) == (ob, ib) and a.privileged() == b.privileged()
    ids = {BuiltinAlfWorld().reset(seed)[1]["task_id"] for seed in range(50)}
    assert len(ids) > 40
    fixed = [BuiltinAlfWorld().reset(seed, "valid_seen", task_index=7)[1]["task_id"] for seed in range(3)]
    assert len(set(fixed)) == 1


def test_room_size_settings():
    def mean_admissible(env):
        return sum(len(env.reset(s)[1]["admissible_actions"]) for s in range(100)) / 100
    full, small = mean_admissible(BuiltinAlfWorld()), mean_admissible(BuiltinAlfWorld(room_size="small"))
    assert 12 <= full <= 30 and small < full / 2
    env = BuiltinAlfWorld(num_receptacles=8, num_distractors=0)
    for seed in range(30):
        env.reset(seed)
        assert len(env.game.receptacles) <= 9  # required furniture may exceed a tiny request by one
    with pytest.raises(ValueError):
        BuiltinAlfWorld(room_size="huge").reset(0)
    with pytest.raises(ValueError):
        BuiltinAlfWorld().reset(0, split="test")


def find_task(task_type, avoid_recep=None):
    env = BuiltinAlfWorld()
    for seed in range(500):
        env.reset(seed)
        if env.game.task_type == task_type and env.game.goal["recep_type"] != avoid_recep:
            return env
    raise AssertionError(task_type)


def test_heat_then_cool_is_no_longer_hot_and_wrong_state_does_not_win():
    env = find_task("pick_heat_then_place_in_recep", avoid_recep="Fridge")
    plan = env.privileged()["expert_plan"]
    heat = next(k for k, a in enumerate(plan) if a.startswith("heat "))
    play(env, plan[: heat + 1])
    obj = env.privileged()["target_objects"][0]
    assert env.step(f"examine {obj}")[0] == f"This is a hot {obj}."
    fridge = next(r.name for r in env.game.receptacles if r.rtype == "Fridge")
    play(env, [f"go to {fridge}", f"cool {obj} with {fridge}"])
    assert env.step(f"examine {obj}")[0] == f"This is a cold {obj}."
    for action in plan[heat + 1:]:
        assert action in env.admissible_actions()
        obs, reward, done, info = env.step(action)
    assert obs.startswith(f"You move the {obj} to the ")  # placed where the task wants it ...
    assert not info["won"] and reward == 0.0             # ... but cold instead of hot


def test_closed_receptacles_hide_contents_and_hands_hold_one_object():
    env = BuiltinAlfWorld()
    for seed in range(200):
        env.reset(seed)
        closed = [i for i, item in enumerate(env.game.items)
                  if env.game.receptacles[item.start].openable and not item.lamp]
        if len(closed) and sum(not i.lamp for i in env.game.items) >= 2:
            break
    item = env.game.items[closed[0]]
    rec = env.game.receptacles[item.start]
    obs, _, _, info = env.step(f"go to {rec.name}")
    assert obs.endswith(f"The {rec.name} is closed.") and not any(a.startswith("take ") for a in info["admissible_actions"])
    obs, _, _, info = env.step(f"open {rec.name}")
    assert item.name in obs and f"take {item.name} from {rec.name}" in info["admissible_actions"]
    obs, _, _, info = env.step(f"take {item.name} from {rec.name}")
    assert obs == f"You pick up the {item.name} from the {rec.name}."
    assert not any(a.startswith("take ") for a in info["admissible_actions"])
    assert env.step("inventory")[0] == f"You are carrying: a {item.name}."


def test_render_prompt_never_raises_and_holds_the_parts():
    env = BuiltinAlfWorld()
    for seed in range(60):
        obs, info = env.reset(seed)
        history = []
        for action in env.privileged()["expert_plan"][:3]:
            prompt = env.render_prompt(obs, history, info, 2)
            assert info["task_description"] in prompt and "<think>" in prompt and "<action>" in prompt
            assert all(a in prompt for a in info["admissible_actions"])
            history.append((obs, action))
            obs, _, _, info = env.step(action)
    prompt = env.render_prompt("now", [("old-obs-1", "act-1"), ("old-obs-2", "act-2"), ("old-obs-3", "act-3")],
                               info, 2)
    assert "act-1" not in prompt and "act-2" in prompt and "act-3" in prompt and "now" in prompt
    assert "act-3" not in env.render_prompt("now", [("o", "act-3")], info, 0)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200), st.lists(st.tuples(st.text(max_size=50), st.text(max_size=50)), max_size=5),
       st.dictionaries(st.sampled_from(list(INFO_KEYS)), st.one_of(st.none(), st.text(), st.integers())),
       st.integers(-3, 10))
def test_render_prompt_survives_garbage(observation, history, info, history_length):
    assert isinstance(BuiltinAlfWorld().render_prompt(observation, history, info, history_length), str)


@pytest.mark.parametrize("response,expected", [
    ("<think>the apple is on the table</think><action>go to diningtable 1</action>", ("go to diningtable 1", True)),
    ("<think>x</think><action>  Take Apple 1 from Fridge 1 </action>", ("take apple 1 from fridge 1", True)),
    ("<action>look</action>", ("look", False)),                      # no reasoning
    ("<think>hm</think> look", ("", False)),                         # no action tag
    ("<think>a</think><action>look</action><action>inventory</action>", ("inventory", False)),  # two actions
    ("<think>我想</think><action>look</action>", ("look", False)),   # non-Latin text
    ("<think>a</think><action></action>", ("", False)),
    ("", ("", False)),
])
def test_parse_action(response, expected):
    assert BuiltinAlfWorld().parse_action(response) == expected


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=500))
def test_parse_action_never_raises(text):
    action, valid = BuiltinAlfWorld().parse_action(text)
    assert isinstance(action, str) and isinstance(valid, bool)


def test_skill_category_of_every_task_sentence():
    for task_type, templates in catalog.TASK_TEMPLATES.items():
        for template in templates:
            for obj, recep in [("apple", "diningtable"), ("cellphone", "microwave"), ("soapbar", "fridge"),
                               ("mug", "sinkbasin"), ("cloth", "countertop")]:
                text = template.format(obj=obj, recep=recep, toggle="desklamp")
                assert skill_category(text) == TASK_TYPE_CATEGORY[task_type], text
    assert skill_category("look at the book under the floorlamp") == "look_in_light"
    assert set(TASK_TYPE_CATEGORY.values()) == set(SKILL_CATEGORIES)
    env = BuiltinAlfWorld()
    for seed in range(60):
        env.reset(seed)
        privileged = env.privileged()
        assert privileged["skill_category"] == TASK_TYPE_CATEGORY[privileged["task_type"]]


def usual_share(prior_strength, tasks=300):
    """Share of task objects that start at their usual place, over those whose room has that place
    and somewhere else to put them."""
    hits = total = 0
    for index in range(tasks):
        game = generate_game("train", index, "small", prior_strength=prior_strength)
        for target in game.targets:
            item = game.items[target]
            spots = {r.rtype for r in game.receptacles
                     if catalog.can_contain(r.rtype, item.otype) and r.rtype != game.goal["recep_type"]}
            usual = catalog.usual_place(item.otype, spots)
            if usual is not None and len(spots) > 1:
                total += 1
                hits += game.receptacles[item.start].rtype == usual
    return hits / total


def test_prior_strength_is_how_often_objects_start_at_their_usual_place():
    assert usual_share(1.0) == 1.0 and usual_share(0.0) == 0.0
    assert 0.72 < usual_share(0.8) < 0.88                  # 300 tasks: about 3 standard errors
    assert usual_share(None) < 0.7                         # uniform placement ignores the habits
    for floorplan in catalog.FLOORPLANS["bedroom"]:         # lamps too
        layout, (lamp, holder) = generator.room_layout(floorplan, "bedroom", 4, 6, 1.0)
        usual = catalog.usual_place(lamp, [t for t, _ in layout if t in catalog.LAMP_HOLDERS])
        assert holder == usual or usual is None
    for bad in (1.5, -0.1, "0.5", True):
        with pytest.raises(ValueError, match="prior_strength"):
            BuiltinAlfWorld(prior_strength=bad)


def test_usual_place_is_the_first_main_surface_that_fits_and_the_skills_state_the_order():
    kitchen = {"CounterTop", "Fridge", "Microwave", "SinkBasin", "DiningTable"}
    assert catalog.usual_place("Apple", kitchen) == "CounterTop"
    assert catalog.usual_place("Apple", kitchen, avoid="CounterTop") == "DiningTable"   # the destination
    assert catalog.usual_place("Pillow", {"Bed", "Desk", "Drawer"}) == "Bed"               # no pillow on a desk
    assert catalog.usual_place("DeskLamp", {"Bed", "SideTable", "Dresser"}) == "SideTable"
    assert catalog.usual_place("Apple", {"Fridge", "Microwave"}) is None
    with open(os.path.join(SKILLS_DIR, "general.md")) as f:
        words = " ".join(f.read().split("## Where things usually are")[1].split())
    positions = [re.search(rf"\b{place.lower()}\b", words).start() for place in catalog.USUAL_PLACES]
    assert positions == sorted(positions), "general.md names the usual places in catalog.USUAL_PLACES order"


def test_skill_files_exist_for_every_category():
    for name in ("general",) + SKILL_CATEGORIES:
        with open(os.path.join(SKILLS_DIR, f"{name}.md")) as f:
            assert len(f.read().strip()) > 100


def test_info_before_reset_and_after_done_has_every_key():
    env = BuiltinAlfWorld()
    obs, reward, done, info = env.step("look")  # no reset yet
    assert obs == "Nothing happens." and done and set(info) == set(INFO_KEYS)


def test_registry_builds_the_builtin_env():
    env = make_env("alfworld", "builtin", room_size="small")
    assert env.name == "alfworld" and env.max_steps == 50
    obs, info = env.reset(0, "valid_seen")
    assert obs.startswith("-= Welcome to TextWorld, ALFRED! =-") and "Your task is to: " in obs
    assert SPLIT_SIZES["valid_seen"] == 140
