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


def test_habit_following_explorer_searches_the_usual_place_first_and_wins_sooner():
    """With the habits the skills state it goes first to where the object usually is; in rooms where
    the habits mostly hold that wins more episodes within a tight step budget than a blind search."""
    from envs.alfworld.explorer import kind, usual_kind

    def play(follow_habits, prior_strength, episodes=150, budget=6):
        env = make_env("alfworld", room_size="small", num_receptacles=[5, 7], prior_strength=prior_strength,
                       task_types=["pick_and_place_simple"], max_steps=budget)
        rng, first_usual, rooms_with_usual, wins = random.Random(1), 0, 0, 0
        for seed in range(episodes):
            observation, info = env.reset(seed=seed)
            goal = env.privileged()["goal"]
            act = explorer(goal, rng, follow_habits=follow_habits)
            action = act(observation, info)
            room = {kind(a[len("go to "):]) for a in info["admissible_actions"] if a.startswith("go to ")}
            usual = usual_kind(goal["obj_type"], room, goal["recep_type"].lower())
            rooms_with_usual += usual is not None
            first_usual += usual is not None and kind(action[len("go to "):]) == usual
            done = False
            while not done:
                observation, _, done, info = env.step(action)
                action = act(observation, info)
            wins += info["won"]
        return first_usual / rooms_with_usual, wins / episodes

    (habit_first, habit_wins), (blind_first, blind_wins) = play(True, 0.9), play(False, 0.9)
    assert habit_first > 0.9 and blind_first < 0.5, (habit_first, blind_first)   # 1.0 vs 0.32
    assert habit_wins > blind_wins + 0.2, (habit_wins, blind_wins)      # measured 0.89 vs 0.53
    assert play(True, 0.0)[1] < habit_wins - 0.2           # a habit that never holds costs steps (0.44)
