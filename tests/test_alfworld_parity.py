"""Parity of the built-in ALFWorld engine with the real one (the `alfworld` package's TextWorld
engine) on games exported from the built-in generator: same admissible commands (as sets, `help`
dropped) and same observation text at every step, and the win at the same step.

Each episode first wanders a few seeded random steps (go to, open, close, examine, use, look,
inventory, junk), then follows the expert plan, so states off the expert's path are compared too. Kept to a handful of games: the real engine needs
about a second to load a game and tens of milliseconds per step.
"""

import random
import sys

import pytest

pytest.importorskip("alfworld", reason="the parity test needs pip install alfworld==0.4.2")
pytest.importorskip("fast_downward", reason="alfworld's TextWorld PDDL engine needs fast_downward")

from envs.alfworld.engine import BuiltinAlfWorld  # noqa: E402
from envs.alfworld.export import export_games  # noqa: E402
from envs.alfworld.real import RealAlfWorld  # noqa: E402
from envs.base import INFO_KEYS  # noqa: E402

# valid splits cycle through the six task types by index, so 0-5 cover them all
CASES = [("valid_seen", i, "full") for i in range(6)] + [("valid_unseen", 6, "small"), ("valid_seen", 9, "small")]
RANDOM_PREFIX = 6
WANDER = {"go", "open", "close", "examine", "look", "inventory", "use"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("alfworld_data")
    for size in ("full", "small"):
        for split in ("valid_seen", "valid_unseen"):
            indices = sorted({i for s, i, rs in CASES if s == split and rs == size})
            if indices:
                export_games(str(root / size), split, indices, room_size=size)
    return root


def same_view(real_obs, real_info, builtin_obs, builtin_info, where):
    assert sorted(real_info["admissible_actions"]) == builtin_info["admissible_actions"], where
    assert "help" not in real_info["admissible_actions"], where
    assert real_obs == builtin_obs, where
    assert real_info["won"] == builtin_info["won"], where


@pytest.mark.parametrize("split,index,room_size", CASES)
def test_builtin_matches_real_engine(exported, split, index, room_size):
    builtin = BuiltinAlfWorld(room_size=room_size)
    b_obs, b_info = builtin.reset(0, split, task_index=index)
    real = RealAlfWorld(data_path=str(exported / room_size))
    [gamefile] = [f for f in real.game_files(split) if f"trial_T{index:06d}" in f]
    r_obs, r_info = real.reset(0, split, task_index=real.game_files(split).index(gamefile))
    assert set(INFO_KEYS) <= set(r_info) and r_info["task_type"] == b_info["task_type"]
    assert r_info["task_description"] == b_info["task_description"]
    assert real.privileged()["expert_plan"] == builtin.privileged()["expert_plan"]
    same_view(r_obs, r_info, b_obs, b_info, "reset")

    rng = random.Random(index)
    won_at, plan = {}, builtin.privileged()["expert_plan"]
    for k in range(RANDOM_PREFIX + len(plan)):
        if k < RANDOM_PREFIX:  # wander without moving objects, so the expert plan still wins afterwards
            action = rng.choice([a for a in b_info["admissible_actions"] if a.split()[0] in WANDER] + ["bogus"])
        else:
            action = plan[k - RANDOM_PREFIX]
        r_obs, r_reward, r_done, r_info = real.step(action)
        b_obs, b_reward, b_done, b_info = builtin.step(action)
        same_view(r_obs, r_info, b_obs, b_info, (k, action))
        assert (r_reward, r_done) == (b_reward, b_done), (k, action)
        for name, info in (("real", r_info), ("builtin", b_info)):
            if info["won"]:
                won_at.setdefault(name, k)
        if b_done:
            break
    assert won_at.get("real") == won_at.get("builtin") is not None


def test_real_adapter_contract(exported):
    real = RealAlfWorld(data_path=str(exported / "full"))
    argv = list(sys.argv)
    obs, info = real.reset(123, "valid_seen")
    assert sys.argv == argv  # Fast Downward's translator rewrites sys.argv; the adapter restores it
    assert obs.startswith("-= Welcome to TextWorld, ALFRED! =-") and set(INFO_KEYS) <= set(info)
    privileged = real.privileged()
    assert privileged["skill_category"] and privileged["task_type"] == info["task_type"]
    for junk in ["", "\x00", "苹果", "x" * 100_000, "<action>look</action>"]:
        obs, reward, done, info = real.step(junk)
        assert obs == "Nothing happens." and reward == 0.0 and not done
    for action in privileged["expert_plan"]:
        obs, reward, done, info = real.step(action)
    assert done and info["won"] and reward == 10.0 and info["score"] == 1.0
    assert real.step("look")[2]  # stays done


def test_real_adapter_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    with pytest.raises(RuntimeError, match="ALFWORLD_DATA"):
        RealAlfWorld()
    with pytest.raises(RuntimeError, match="no ALFWorld games"):
        RealAlfWorld(data_path=str(tmp_path)).reset(0, "valid_seen")
