"""The student's prompts: the project's own wording kept byte for byte, and the history window."""

import json

import pytest

import prompt_cases
from envs import make_env


@pytest.fixture(scope="module")
def envs():
    return prompt_cases.make_envs()


@pytest.mark.parametrize("name", ["alfworld", "webshop", "search"])
def test_prompts_are_byte_identical_to_the_recorded_ones(name, envs):
    """360 seeded inputs (tests/prompt_cases.py) against the digests of the prompts they rendered."""
    expected = json.load(open(prompt_cases.DIGESTS))[name]
    got = [prompt_cases.digest(p) for p in prompt_cases.render_all(envs, name)]
    changed = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert len(got) == len(expected) and not changed, f"cases {changed[:10]} render differently"


@pytest.mark.parametrize("name,kwargs", [("alfworld", {}), ("search", {"num_people": 60})])
def test_every_history_step_up_to_history_length_is_shown(name, kwargs):
    """Three past steps and a window of four show all three (a window longer than the history once
    showed only the last len - (window - len) steps)."""
    env = make_env(name, **kwargs)
    history = [("obs-1", "act-1"), ("obs-2", "act-2"), ("obs-3", "act-3")]
    prompt = env.render_prompt("now", history, {"task_description": "q", "step": 3}, 4)
    assert all(f"act-{k}" in prompt and f"obs-{k}" in prompt for k in (1, 2, 3))
