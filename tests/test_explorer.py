"""The searching expert behind the embedded warm start: it finds and finishes every built-in task type
while acting only on admissible actions, and its first move does not depend on where the object is."""

import random
from collections import Counter

import pytest

from envs import make_env
from envs.alfworld.explorer import explorer
from envs.alfworld.generator import TASK_TYPES


@pytest.mark.parametrize("room_size", ["small", "full"])
def test_explorer_solves_every_task_type_with_admissible_actions(room_size):
    rng = random.Random(0)
    outcomes = Counter()
    for task_type in TASK_TYPES:
        env = make_env("alfworld", room_size=room_size, task_types=[task_type])
        for _ in range(25):
            observation, info = env.reset(seed=rng.randrange(2**31))
            act = explorer(env.privileged()["goal"], rng)
            done = False
            while not done:
                action = act(observation, info)
                assert action in info["admissible_actions"], (action, info["admissible_actions"])
                observation, _, done, info = env.step(action)
            outcomes[task_type, info["won"]] += 1
    assert all(outcomes[t, True] == 25 for t in TASK_TYPES), outcomes


def test_explorer_first_moves_spread_over_the_room_not_towards_the_object():
    """The generator's plan goes straight to the object; the explorer cannot know where it is."""
    env = make_env("alfworld", room_size="small", task_types=["pick_and_place_simple"])
    straight = 0
    for seed in range(200):
        observation, info = env.reset(seed=seed)
        first = explorer(env.privileged()["goal"], random.Random(seed))(observation, info)
        straight += first == env.privileged()["expert_plan"][0]
    assert 30 < straight < 110, straight   # about 1 in 4 with 3-6 places to search (54 measured)
