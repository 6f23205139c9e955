"""The teacher's privileged context: skill files and how one is picked for a task (SPEC §2).

`skills/<env>/general.md` holds advice for every task of an environment and `skills/<env>/<category>.md`
advice for one task category. Retrieval modes (the paper's options):
    keyword  general + the category chosen by the env's keyword rules (the paper's default, "KM")
    full     every file
    random   one file drawn at random
    ucb      one file chosen per task category by a UCB bandit on the reward it led to
Skills are training-only: the student never sees them (except the Skill-GRPO baseline).
"""

from __future__ import annotations

import math
import os
import random
from collections import defaultdict

SKILLS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "skills")
RETRIEVAL_MODES = ("keyword", "full", "random", "ucb")


def load_skills(env_name: str, skills_dir: str = SKILLS_DIR) -> dict[str, str]:
    """{file stem: text} for one environment, `general` first."""
    folder = os.path.join(skills_dir, env_name)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no skill folder {folder}; expected skills/{env_name}/general.md and one "
                                f"file per task category")
    names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".md"))
    names.sort(key=lambda name: name != "general")
    return {name: open(os.path.join(folder, name + ".md"), encoding="utf-8").read().strip() for name in names}


class UCBSkillBandit:
    """Per task category, pick the skill file with the best upper confidence bound on its reward:
    score(e) = mean_reward(e) + c sqrt(ln N / n(e)); untried files first."""

    def __init__(self, files: list[str], c: float = 1.0):
        self.files, self.c = list(files), c
        self.counts = defaultdict(lambda: defaultdict(int))
        self.totals = defaultdict(lambda: defaultdict(float))

    def select(self, category: str) -> str:
        counts, totals = self.counts[category], self.totals[category]
        untried = [f for f in self.files if counts[f] == 0]
        if untried:
            return untried[0]
        n = sum(counts.values())
        return max(self.files, key=lambda f: totals[f] / counts[f] + self.c * math.sqrt(math.log(n) / counts[f]))

    def update(self, category: str, file: str, reward: float) -> None:
        self.counts[category][file] += 1
        self.totals[category][file] += reward

    def state_dict(self) -> dict:
        return {"counts": {k: dict(v) for k, v in self.counts.items()},
                "totals": {k: dict(v) for k, v in self.totals.items()}}

    def load_state_dict(self, state: dict) -> None:
        for category, values in state["counts"].items():
            self.counts[category].update(values)
        for category, values in state["totals"].items():
            self.totals[category].update(values)


def retrieve_skills(skills: dict[str, str], category: str, mode: str = "keyword",
                    rng: random.Random | None = None, bandit: UCBSkillBandit | None = None) -> tuple[str, list[str]]:
    """(skill text, names of the files used) for a task of `category` (the env's `skill_category`)."""
    if mode == "keyword":
        names = ["general"] + ([category] if category in skills and category != "general" else [])
    elif mode == "full":
        names = list(skills)
    elif mode == "random":
        names = [(rng or random).choice(list(skills))]
    elif mode == "ucb":
        if bandit is None:
            raise ValueError("skill_retrieval='ucb' needs a UCBSkillBandit")
        names = [bandit.select(category)]
    else:
        raise ValueError(f"skill_retrieval={mode!r} is unknown; choose one of {RETRIEVAL_MODES}")
    return "\n\n".join(skills[name] for name in names), names


class SkillPicker:
    """The trainer's skill source: `picker(env, info) -> (skill text, category)` for each episode, as
    `rollout` asks it, with the bookkeeping of the UCB bandit (which file each episode used, and the
    wins it led to). Seeded: `reseed` at every iteration keeps resumed runs identical."""

    def __init__(self, env_name: str, mode: str, seed: int, bandit_state: dict | None = None):
        from envs import env_module

        self.skills, self.module, self.mode = load_skills(env_name), env_module(env_name), mode
        self.rng = random.Random(seed)
        self.bandit = UCBSkillBandit(list(self.skills)) if mode == "ucb" else None
        if self.bandit is not None and bandit_state:
            self.bandit.load_state_dict(bandit_state)
        self.used: dict[int, tuple[str, list[str]]] = {}

    def __call__(self, env, info: dict) -> tuple[str, str]:
        category = self.module.skill_category(info["task_description"])
        text, names = retrieve_skills(self.skills, category, self.mode, self.rng, self.bandit)
        self.used[id(env)] = (category, names)
        return text, category

    def reseed(self, seed: int) -> None:
        self.rng.seed(seed)

    def record(self, envs: list, samples: list) -> None:
        """After a rollout: credit each episode's skill file with a win (score > 0) or not (UCB only)."""
        if self.bandit is None:
            return
        for index, env in enumerate(envs):
            category, names = self.used[id(env)]
            won = max((s.score for s in samples if s.traj_id == index), default=0.0) > 0
            self.bandit.update(category, names[0], float(won))

    def state_dict(self) -> dict | None:
        return self.bandit.state_dict() if self.bandit else None
