"""The environment switches a reproducer sets (README "Reproducing the paper"): prompt templates,
observation clipping, the released action parsing, the Search last-turn sentence, the released skill
retrieval rules, `--env_kwargs` and `--skills_dir` validation, and the sizes of the splits."""

import json
import os

import pytest

from conftest import ROOT
from envs import check_env_kwargs, make_env
from envs.alfworld.engine import BuiltinAlfWorld
from envs.base import EnvSetupError, parse_first_action
from envs.search.prompts import parse_action as search_parse
from envs.search.real import RealSearchQA
from envs.skills import SkillBank, check_skills_dir
from envs.templates import TemplateError
from envs.webshop.prompts import parse_action as webshop_parse
from test_train import run_train

SMALL = {"alfworld": {}, "webshop": {"num_products": 40}, "search": {"num_people": 60}}
HISTORY = [("first page", "go to fridge 1"), ("second page", "open fridge 1")]
INFO = {"task_description": "put a clean mug in cabinet", "step": 2, "admissible_actions": ["look", "inventory"]}


# ---------------------------------------------------------------- prompt templates

@pytest.mark.parametrize("name", ["alfworld", "webshop", "search"])
def test_a_user_template_replaces_the_wording(name, tmp_path):
    """Own wording, two turn sections (no history / later), a custom history step, literal braces,
    and an optional line that disappears when its field is empty."""
    path = tmp_path / "prompt.txt"
    path.write_text("TASK={task} | {{braces}}\nSTEP {step}/{max_steps}\nPAST {history_length}:\n{history}\n"
                    "NOW {observation}\n=== no history ===\nFIRST TASK={task}\nNOW {observation}\n"
                    "=== history step ===\n<{index}:{step}> {action}\n")
    env = make_env(name, prompt_template=str(path), **SMALL[name])
    later = env.render_prompt("the page", HISTORY, INFO, 2)
    assert later.splitlines()[0] == "TASK=put a clean mug in cabinet | {braces}"
    assert "STEP 3/" in later and "PAST 2:" in later and "<1:1> go to fridge 1" in later
    assert "<2:2> open fridge 1" in later and later.endswith("NOW the page")
    assert env.render_prompt("start", [], dict(INFO, step=0), 2) == "FIRST TASK=put a clean mug in cabinet\nNOW start"


def test_optional_lines_drop_and_the_history_step_defaults_to_the_envs(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text("{task}\nActions: {admissible_actions}\nEarlier:\n{history}\n")
    env = BuiltinAlfWorld(prompt_template=str(path))
    prompt = env.render_prompt("obs", HISTORY, dict(INFO, admissible_actions=[]), 1)
    assert prompt == ("put a clean mug in cabinet\nEarlier:\n"
                      "[step 2] observation: second page\n[step 2] action: open fridge 1")


@pytest.mark.parametrize("text,needle", [
    ("Task: {tsk}\n", "unknown field {tsk}; this template takes {task}"),
    ("Task: {task!r}\n", "plain {task}"),
    ("Task: {0}\n", "unknown field {0}"),
    ("Task: {task\n", "literal braces"),
    ("Task: {task}\n=== later ===\nx\n", "section '=== later ===' is unknown"),
    ("Task: {task}\n=== history step ===\n{turn}\n", "[history step] line 1: unknown field {turn}"),
])
def test_a_bad_template_fails_at_construction_in_one_line(text, needle, tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text(text)
    with pytest.raises(TemplateError) as caught:
        BuiltinAlfWorld(prompt_template=str(path))
    assert needle in str(caught.value) and "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_a_bad_template_stops_train_before_anything_loads(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text("Task: {task} at {time}\n")
    result = run_train(["--prompt_template", str(path), "--output_dir", str(tmp_path / "run")], timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "{time}" in result.stderr
    assert not os.path.exists(tmp_path / "run" / "config.json")


def test_templates_drive_the_real_adapter_too(tmp_path):
    row = {"question": "who founded it", "golden_answers": ["me"], "data_source": "nq"}
    (tmp_path / "test.jsonl").write_text(json.dumps(row) + "\n")
    path = tmp_path / "prompt.txt"
    path.write_text("Q: {task}\nT{step}\n=== history step ===\n{action}\n")
    env = RealSearchQA(data_path=str(tmp_path), prompt_template=str(path), check_retriever=False)
    obs, info = env.reset(0, split="test")
    assert env.render_prompt(obs, [], info, 4) == "Q: who founded it?\nT1"


# ---------------------------------------------------------------- clipping and the last-turn sentence

@pytest.mark.parametrize("name,limit", [("alfworld", 2000), ("webshop", 6000), ("search", 6000)])
def test_clip_observations_false_keeps_whole_observations(name, limit):
    long = "word " * limit
    clipped = make_env(name, **SMALL[name]).render_prompt(long, HISTORY, INFO, 2)
    whole = make_env(name, clip_observations=False, **SMALL[name]).render_prompt(long, HISTORY, INFO, 2)
    assert long.strip() not in clipped and " ..." in clipped and long.strip() in whole


def test_last_turn_hint_false_drops_the_sentence():
    info = {"task_description": "who?", "step": 3}
    assert "last turn" in make_env("search", num_people=60).render_prompt("obs", [], info, 4)
    assert "last turn" not in make_env("search", num_people=60, last_turn_hint=False).render_prompt("obs", [], info, 4)


# ---------------------------------------------------------------- action parsing

@pytest.mark.parametrize("reply,project,released", [
    ("<think>a</think><action>Look</action>", ("look", True), ("look", True)),
    # sampled to EOS, the reply goes on after its action: released reads the first block
    ("<think>a</think><action>look</action> then <action>inventory</action>",
     ("inventory", False), ("look", True)),
    ("<think>a</think><action>look</action><think>b", ("look", True), ("look", True)),
    ("<action>look</action>", ("look", False), ("look", False)),                         # no reasoning
    ("<think>a</think><ACTION>go to fridge 1</ACTION>", ("", False), ("go to fridge 1", True)),
    ("<think>Привет</think><action>look</action>", ("look", False), ("look", True)),      # only CJK is refused
    ("<think>中</think><action>look</action>", ("look", False), ("look", False)),
    ("<think>a</think><action></action>", ("", False), ("", True)),
    ("<think>a</think> I would go to the fridge now please", ("", False), ("ld go to the fridge now please", False)),
])
def test_alfworld_parsing_modes(reply, project, released):
    assert BuiltinAlfWorld().parse_action(reply) == project
    assert BuiltinAlfWorld(action_parse="released").parse_action(reply) == released


def test_released_parsing_falls_back_to_the_reply_tail():
    assert parse_first_action("no tags at all, just text", 20) == ("no tags at all, just text"[-20:], False)
    assert webshop_parse("<think>x</think><action>buy now</action>", "released") == ("buy now", True)
    assert webshop_parse("<think>x</think><action>buy now</action>") == ("buy now", False)
    assert webshop_parse("<think>x</think>tail of a long reply", "released") == ("x</think>tail of a long reply"[-20:]
                                                                                   .lower(), False)


@pytest.mark.parametrize("reply,project,released", [
    ("<think>x</think><search> a  b </search>", ("<search>a b</search>", True), ("<search>a  b</search>", True)),
    # text after the first block (sampling to EOS): released cuts it off
    ("<search>q</search> <information>made up</information>", ("<search>q</search>", True),
     ("<search>q</search>", True)),
    ("<search>q</search><answer>a</answer>", ("", False), ("<search>q</search>", False)),   # both: still runs
    ("<search>q</search><search>r</search>", ("", False), ("<search>q</search>", False)),   # repeated
    ("<answer>Paris</answer>", ("<answer>Paris</answer>", True), ("<answer>Paris</answer>", True)),
    ("<ANSWER>Paris</ANSWER>", ("", False), ("<answer>Paris</answer>", True)),
    ("<answer>北京</answer>", ("", False), ("<answer>北京</answer>", True)),
    ("no action", ("", False), ("", False)),
])
def test_search_parsing_modes(reply, project, released):
    assert search_parse(reply) == project
    assert search_parse(reply, "released") == released
    assert make_env("search", num_people=60, action_parse="released").parse_action(reply) == released


def test_released_parsing_is_linear_on_repeated_tags():
    import time
    reply = "<search>" * 200_000 + "<action>" * 200_000
    start = time.perf_counter()
    search_parse(reply, "released"), parse_first_action(reply, 30)
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------- skills: the released rules and skills_dir

def test_released_skills_alfworld_by_task_type():
    bank = SkillBank("alfworld")
    text, names, category = bank.for_task({"task_type": "pick_heat_then_place_in_recep",
                                           "task_description": "put a mug in cabinet"}, mode="released")
    assert names == ["general", "heat"] and category == "heat" and text.startswith(bank.skills["general"])
    assert bank.for_task({"task_type": "pick_heat_then_place_in_recep", "task_description": "put a mug in cabinet"},
                         mode="keyword")[1] == ["general", "pick_and_place"]     # the keyword rule reads words only


def test_released_skills_webshop_match_every_category_in_the_whole_prompt():
    bank = SkillBank("webshop")
    prompt = "Your task: i need a shampoo and a phone charger\nCurrent page: Back to Search"
    text, names, category = bank.for_task({"task_description": "x"}, prompt, mode="released")
    assert names == ["general", "beauty", "electronics"] and category == "beauty+electronics"
    assert text == "\n\n".join(bank.skills[n] for n in names)
    assert bank.for_task({"task_description": "x"}, "nothing here", mode="released")[1] == ["general"]


@pytest.mark.parametrize("source,expected", [("nq", "direct_retrieval"), ("triviaqa", "direct_retrieval"),
                                             ("popqa", "attribute_lookup"), ("hotpotqa", "multi_hop"),
                                             ("2wikimultihopqa", "multi_hop"), ("musique", "multi_hop"),
                                             ("bamboogle", "multi_hop"), ("comparison", "comparison")])
def test_released_skills_search_by_data_source(source, expected):
    info = {"task_description": "Who was born earlier, A or B?", "data_source": source}
    assert SkillBank("search").for_task(info, mode="released")[1] == ["general", expected]


def test_released_skills_search_unknown_source_gets_general_only():
    assert SkillBank("search").for_task({"task_description": "q", "data_source": "other"}, mode="released")[1] == \
        ["general"]


def skill_folder(root, env_name, files, mapping=None):
    folder = root / env_name
    folder.mkdir(parents=True)
    for name in files:
        (folder / f"{name}.md").write_text(f"advice of {name}")
    if mapping is not None:
        (folder / "mapping.json").write_text(json.dumps(mapping))
    return str(root)


def test_a_user_skill_folder_with_a_mapping(tmp_path):
    """A SkillBank with its own file names: mapping.json says which task type or source and which
    keywords pick which file."""
    root = skill_folder(tmp_path, "webshop", ["general", "apparel"], {"keywords": {"apparel": ["shirt", "dress"]}})
    check_skills_dir(root, "webshop")
    bank = SkillBank("webshop", root)
    assert bank.for_task({"task_description": "x"}, "a red shirt please", mode="released") == \
        ("advice of general\n\nadvice of apparel", ["general", "apparel"], "apparel")
    root = skill_folder(tmp_path / "b", "alfworld", ["general", "heating"],
                        {"task_to_skill": {"pick_heat_then_place_in_recep": "heating"}})
    info = {"task_type": "pick_heat_then_place_in_recep", "task_description": "heat a mug"}
    assert SkillBank("alfworld", root).for_task(info, mode="released")[1] == ["general", "heating"]
    assert SkillBank("alfworld", root).for_task(info, mode="keyword")[1] == ["general"]   # no heat.md there


def released_skill_folder(root, env_name, files: dict, mapping: dict) -> str:
    """A folder in the released SkillBank's layout: general_skills.md, category files, skill_mapping.json."""
    folder = root / env_name
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / "skill_mapping.json").write_text(json.dumps(mapping))
    return str(root)


def test_the_released_skillbank_layout_as_it_ships(tmp_path):
    """general_skills.md, files named per category by skill_files, task types -> categories, keywords per
    task type (here with our own texts); a WebShop goal "which ... or ..." without "for" adds comparison."""
    root = released_skill_folder(tmp_path / "a", "alfworld", {
        "general_skills.md": "Look before you act.", "heating_skills.md": "Heat it in the microwave.",
        "cleaning_skills.md": "Rinse it in the sink."}, {
        "skill_files": {"heat": "heating_skills.md", "clean": "cleaning_skills.md"},
        "task_to_skill": {"pick_heat_then_place_in_recep": "heat", "pick_clean_then_place_in_recep": "clean"}})
    check_skills_dir(root, "alfworld")
    bank = SkillBank("alfworld", root)
    assert list(bank.skills) == ["general", "heat", "clean"]
    info = {"task_type": "pick_heat_then_place_in_recep", "task_description": "heat a mug"}
    assert bank.for_task(info, mode="released") == ("Look before you act.\n\nHeat it in the microwave.",
                                                    ["general", "heat"], "heat")
    root = released_skill_folder(tmp_path / "w", "webshop", {
        "general_skills.md": "Read the options.", "apparel_skills.md": "Check the size.",
        "comparison_skills.md": "Compare both before buying."}, {
        "skill_files": {"apparel": "apparel_skills.md", "comparison": "comparison_skills.md"},
        "task_to_skill": {"clothing": "apparel"},
        "task_keywords": {"clothing": ["shirt"], "footwear": ["sneaker"]}})       # footwear: no file, ignored
    check_skills_dir(root, "webshop")
    bank = SkillBank("webshop", root)
    plain = {"task_description": "i want a red shirt"}
    assert bank.for_task(plain, "Your task: a red shirt and a sneaker", mode="released")[1] == ["general", "apparel"]
    compare = {"task_description": "which is softer, the red shirt or the blue one"}
    assert bank.for_task(compare, "Your task: which is softer, the red shirt or the blue one", mode="released")[1] \
        == ["general", "comparison", "apparel"]
    use = {"task_description": "which shirt or dress for a wedding"}
    assert bank.for_task(use, "which shirt or dress for a wedding", mode="released")[1] == ["general", "apparel"]
    assert SkillBank("webshop").for_task(compare, "shirt", mode="released")[1] == ["general", "fashion"]
    broken = released_skill_folder(tmp_path / "b", "alfworld", {"general_skills.md": "x"},
                                   {"skill_files": {"heat": "heating_skills.md"}})
    with pytest.raises(ValueError, match="no heating_skills.md"):
        check_skills_dir(broken, "alfworld")


@pytest.mark.parametrize("goal,compares", [
    ("which color is better, red or blue", True), ("Which one: tea or coffee?", True),
    ("which tea or coffee for my office", False), ("i need tea or coffee which is organic", False),
    ("a shirt which is black", False)])
def test_webshop_comparison_rule(goal, compares):
    from envs.webshop import asks_to_compare
    assert asks_to_compare(goal) is compares


@pytest.mark.parametrize("files,mapping,needle", [
    ([], None, "has no alfworld/general.md"),
    (["heat"], None, "has no alfworld/general.md"),
    (["general"], {"task_to_skill": {"pick_heat_then_place_in_recep": "heating"}}, "no heating.md"),
    (["general"], {"keywords": ["a"]}, "must be"),
])
def test_a_bad_skill_folder_is_refused(files, mapping, needle, tmp_path):
    root = skill_folder(tmp_path, "alfworld", files, mapping) if files or mapping else str(tmp_path)
    with pytest.raises(ValueError, match=needle):
        check_skills_dir(root, "alfworld")


def test_a_bad_skills_dir_stops_train_in_one_line(tmp_path):
    result = run_train(["--skills_dir", str(tmp_path), "--output_dir", str(tmp_path / "run")], timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: skills_dir:") and "general.md" in result.stderr


# ---------------------------------------------------------------- --env_kwargs

@pytest.mark.parametrize("name,backend,kwargs,needle", [
    ("alfworld", "builtin", {"room_sise": "small"}, "'room_sise' is not a setting of the builtin alfworld env; "
                                                    "did you mean 'room_size'?"),
    ("search", "real", {}, "needs data_path"),
    ("search", "real", {"data_path": "${SDAR_TEST_UNSET_VAR}/data"}, "$SDAR_TEST_UNSET_VAR, which is not set"),
    ("search", "real", {"data_path": "/nonexistent/search"}, "does not exist"),
    ("search", "builtin", {"action_parse": "loose"}, "action_parse='loose' is unknown"),
    ("webshop", "builtin", {"clip_observations": "no"}, "clip_observations='no' must be true or false"),
    ("search", "builtin", {"last_turn_hint": 0}, "last_turn_hint=0 must be true or false"),
    ("webshop", "real", {"webshop_path": "/nonexistent"}, "no web_agent_site folder"),
    ("webshop", "real", {"webshop_path": ROOT, "limit_goal": 3}, "did you mean 'limit_goals'?"),
])
def test_env_kwargs_are_checked_before_anything_loads(name, backend, kwargs, needle, monkeypatch):
    monkeypatch.delenv("SDAR_TEST_UNSET_VAR", raising=False)
    with pytest.raises((ValueError, EnvSetupError)) as caught:
        check_env_kwargs(name, backend, kwargs)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_one_config_drives_both_backends():
    check_env_kwargs("search", "builtin", {"data_path": "${SEARCH_R1_DATA}"})    # the real adapter's, ignored
    assert make_env("search", num_people=60, data_path="/anywhere").num_tasks("test") > 0


@pytest.mark.parametrize("args,needle", [
    (["--env_kwargs", '{"room_sise": "small"}'], "room_sise"),
    (["--env_name", "search", "--env_backend", "real", "--env_kwargs", "{}"], "needs data_path"),
    (["--env_name", "search", "--env_kwargs", '{"wire": "batched", "retriever_url": "http://127.0.0.1:9/retrieve"}',
      "--iterations", "1"], "retriever_url: retriever at http://127.0.0.1:9/retrieve"),
])
def test_bad_env_kwargs_give_one_line_and_exit_2(args, needle, model_dir, tmp_path):
    """The last one is the retriever probe: it fails when the env is built, before the model loads."""
    result = run_train(args + ["--model", model_dir, "--output_dir", str(tmp_path / "run")], timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and needle in result.stderr


# ---------------------------------------------------------------- split sizes (a final evaluation on a whole split)

def test_num_tasks_of_every_builtin_env():
    assert make_env("alfworld").num_tasks("valid_seen") == 140
    webshop = make_env("webshop", num_products=40)
    assert webshop.num_tasks("test") == len(webshop.store.split_range("test"))
    search = make_env("search", num_people=60)
    assert search.num_tasks("test") == len(search.questions["test"])
    search.reset(0, split="test", task_index=search.num_tasks("test") - 1)


# ---------------------------------------------------------------- the paper configs without their data

@pytest.mark.parametrize("name,variable,needle", [
    ("alfworld", "ALFWORLD_DATA", "set ALFWORLD_DATA"),
    ("webshop", "WEBSHOP_PATH", "set WEBSHOP_PATH"),
    ("search", "SEARCH_R1_DATA", "$SEARCH_R1_DATA, which is not set"),
])
def test_paper_configs_without_their_data_stop_in_one_line(name, variable, needle, model_dir, tmp_path, monkeypatch,
                                                             capsys):
    import train
    if name == "alfworld":
        pytest.importorskip("alfworld", reason="without the package validation stops earlier, naming it")
    monkeypatch.delenv(variable, raising=False)
    code = train.main(["--config", os.path.join(ROOT, "configs", f"{name}.yaml"), "--model", model_dir,
                       "--output_dir", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not os.path.exists(tmp_path / "run")


def test_the_readme_template_example_works(tmp_path):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    example = readme.split("### Your own prompt template", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "prompt.txt"
    path.write_text(example)
    env = BuiltinAlfWorld(prompt_template=str(path))
    assert env.render_prompt("a room", HISTORY, INFO, 2).splitlines()[:4] == [
        "You are a helpful agent. Your task is to: put a clean mug in cabinet",
        "You have taken 2 steps. The last 2 of them:",
        "(step 1) saw: first page | did: go to fridge 1", "(step 2) saw: second page | did: open fridge 1"]
    assert env.render_prompt("a room", [], dict(INFO, step=0), 2).splitlines()[1] == "You see: a room"


@pytest.mark.parametrize("name", ["alfworld", "webshop", "search"])
def test_released_parsing_never_breaks_an_env(name):
    """Arbitrary replies through the released parser and step: neither raises, the info stays whole."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from envs.base import INFO_KEYS
    env = make_env(name, action_parse="released", **SMALL[name])
    pieces = st.one_of(st.sampled_from(["<think>", "</think>", "<action>", "</action>", "<search>", "</search>",
                                        "<answer>", "</answer>", "<ACTION>", "look", "click[buy now]", "中", " "]),
                       st.text(max_size=10))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(pieces, max_size=30).map("".join))
    def check(reply):
        env.reset(0)
        action, valid = env.parse_action(reply)
        assert isinstance(action, str) and isinstance(valid, bool)
        assert set(INFO_KEYS) <= set(env.step(action)[3])

    check()
