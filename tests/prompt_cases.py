"""Seeded prompt inputs for every environment, and the digests of the prompts they rendered before the
prompt wording moved into template files (tests/data/prompt_digests.json).

The inputs are made here from a fixed random stream, not played on the engines, so a change to an
engine cannot change them: a changed digest means the rendering changed. They cover clipping (long
tasks, pages and actions), WebShop page heads, malformed history entries, odd `info` and
`history_length` values, empty and present admissible lists, and the last Search-QA turn.

    python tests/prompt_cases.py      # rewrite the digests (only when a prompt change is intended)
"""

import hashlib
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
DIGESTS = os.path.join(HERE, "data", "prompt_digests.json")
CASES_PER_ENV = 120
WORDS = ("apple", "fridge 1", "countertop 2", "You arrive at", "Nothing happens.", "[SEP]", "Back to Search",
         "click[buy now]", "search[red shoes]", "<information>", "Doc 1 (Title: Veltrano)", "1871", "é", "\n",
         "  ", "{curly}", "{{", "Page 1 (Total results: 50)", "$12.99", "Your task is to: heat a mug.")


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def page(rng: random.Random, words: int) -> str:
    """A WebShop-style page, sometimes with the instruction head the prompt cuts off."""
    head = rng.choice(["", "Instruction: [SEP] find a red shoe [SEP] ", "WebShop [SEP] Instruction: [SEP] a b [SEP] "])
    return head + text(rng, words)


def history_entry(rng: random.Random, env_name: str):
    kind = rng.random()
    if kind < 0.85:
        words = rng.choice([3, 20, 150] if env_name == "webshop" else [3, 30, 500])
        observation = page(rng, words) if env_name == "webshop" else text(rng, words)
        return (observation, text(rng, rng.choice([1, 3, 80])))
    return rng.choice(["a lone string", None, 7, ("only one",), ["a", "b", "c"]])


def make_case(rng: random.Random, env_name: str) -> dict:
    long_task = rng.random() < 0.1
    info = {"task_description": text(rng, 400 if long_task else rng.randint(3, 12)),
            "step": rng.choice([0, 1, 2, 3, 5, 14, 49]) if rng.random() < 0.9 else rng.choice([None, "3", 2.5])}
    if env_name != "search":
        actions = [text(rng, rng.randint(1, 3)) for _ in range(rng.choice([0, 1, 5, 20]))]
        if env_name == "webshop" and rng.random() < 0.5:
            actions.insert(0, "search[...]")
        info["admissible_actions"] = actions
    if rng.random() < 0.05:
        info = rng.choice([None, {}, {"step": 1}])
    observation = page(rng, rng.choice([2, 40, 2000])) if env_name == "webshop" else text(rng, rng.choice([2, 40, 700]))
    history = [history_entry(rng, env_name) for _ in range(rng.choice([0, 0, 1, 2, 3, 6]))]
    history_length = rng.choice([0, 1, 2, 2, 4]) if rng.random() < 0.9 else rng.choice([None, "2", -1])
    return {"observation": observation, "history": history, "info": info, "history_length": history_length,
            "max_steps": rng.choice({"alfworld": [50, 15], "webshop": [15, 4], "search": [4, 2]}[env_name])}


def cases(env_name: str) -> list[dict]:
    rng = random.Random(f"prompt-cases-{env_name}")
    return [make_case(rng, env_name) for _ in range(CASES_PER_ENV)]


def make_envs(**kwargs) -> dict:
    """One instance per (env, max_steps) of the cases."""
    from envs.alfworld.engine import BuiltinAlfWorld
    from envs.search.engine import BuiltinSearchQA
    from envs.webshop.engine import BuiltinWebShop
    classes = {"alfworld": BuiltinAlfWorld, "webshop": lambda **kw: BuiltinWebShop(num_products=40, **kw),
               "search": lambda **kw: BuiltinSearchQA(num_people=60, **kw)}
    steps = {"alfworld": [50, 15], "webshop": [15, 4], "search": [4, 2]}
    return {(name, m): classes[name](max_steps=m, **kwargs) for name in classes for m in steps[name]}


def render_all(envs: dict, env_name: str) -> list[str]:
    return [envs[env_name, case["max_steps"]].render_prompt(case["observation"], case["history"], case["info"],
                                                            case["history_length"]) for case in cases(env_name)]


def digest(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


if __name__ == "__main__":
    envs = make_envs()
    result = {name: [digest(p) for p in render_all(envs, name)] for name in ("alfworld", "webshop", "search")}
    os.makedirs(os.path.dirname(DIGESTS), exist_ok=True)
    with open(DIGESTS, "w") as handle:
        json.dump(result, handle, indent=0)
    print(f"wrote {sum(map(len, result.values()))} digests to {DIGESTS}")
