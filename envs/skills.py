"""The teacher's privileged context: skill files and how one is picked for a task (the paper's §2,
Method: skill-conditioned privileged guidance).

A skill folder (this repo's `skills/`, or a user's SkillBank given as `skills_dir`) holds one subfolder
per environment: `<env>/general.md` with advice for every task and `<env>/<category>.md` for one task
category, plus an optional `<env>/mapping.json` for the released rules (below). Retrieval modes:
    keyword   general + the category chosen by the env's keyword rules (the paper's default, "KM")
    full      every file
    random    one file drawn at random
    ucb       one file chosen per task category by a UCB bandit on the reward it led to
    released  the released code's rules: ALFWorld by the game's task type; WebShop by matching every
              category's keywords against the whole prompt, every match after general; Search-QA by
              the question's data source (nq, triviaqa -> direct_retrieval; popqa -> attribute_lookup;
              hotpotqa, 2wikimultihopqa, musique, bamboogle -> multi_hop; anything else -> general only)
Skills are training-only: the student never sees them (except the Skill-GRPO baseline).

`mapping.json` (optional, per env) says how a released SkillBank names its files:
    {"task_to_skill": {"<task type or data source>": "<file stem>", ...},
     "keywords": {"<file stem>": ["keyword", ...], ...}}
Without it, task types and data sources map to this project's category names, and WebShop's keywords
are `envs.webshop.CATEGORY_KEYWORDS`. Keywords match as plain substrings of the lower-cased prompt, as
released (so a short keyword such as "hat" also fires on "that").
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict

SKILLS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "skills")
RETRIEVAL_MODES = ("keyword", "full", "random", "ucb", "released")
# Search-R1 data sources -> this project's Search-QA skill categories (the released rule).
SOURCE_CATEGORY = {"nq": "direct_retrieval", "triviaqa": "direct_retrieval", "popqa": "attribute_lookup",
                   "hotpotqa": "multi_hop", "2wikimultihopqa": "multi_hop", "musique": "multi_hop",
                   "bamboogle": "multi_hop"}


def load_skills(env_name: str, skills_dir: str | None = None) -> dict[str, str]:
    """{file stem: text} for one environment, `general` first."""
    folder = os.path.join(os.path.expanduser(skills_dir or SKILLS_DIR), env_name)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no skill folder {folder}; expected skills/{env_name}/general.md and one "
                                f"file per task category")
    names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".md"))
    names.sort(key=lambda name: name != "general")
    return {name: open(os.path.join(folder, name + ".md"), encoding="utf-8").read().strip() for name in names}


def load_mapping(env_name: str, skills_dir: str | None = None) -> dict:
    """The folder's `mapping.json` ({} when there is none); ValueError in one line when it is malformed."""
    path = os.path.join(os.path.expanduser(skills_dir or SKILLS_DIR), env_name, "mapping.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            mapping = json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not readable JSON ({' '.join(str(error).split())})") from None
    shapes = {"task_to_skill": lambda v: isinstance(v, str),
              "keywords": lambda v: isinstance(v, list) and all(isinstance(k, str) for k in v)}
    if not isinstance(mapping, dict) or set(mapping) - set(shapes) or not all(
            isinstance(mapping[key], dict) and all(shapes[key](v) for v in mapping[key].values()) for key in mapping):
        raise ValueError(f"{path} must be {{\"task_to_skill\": {{name: file stem}}, \"keywords\": {{file stem: "
                         f"[keyword, ...]}}}} (either part optional)")
    return mapping


def check_skills_dir(skills_dir: str, env_name: str) -> None:
    """ValueError (one line) unless `skills_dir` holds `<env>/general.md`, every file its mapping.json
    names, and nothing unreadable: checked before any model loads."""
    root = os.path.expanduser(skills_dir)
    folder = os.path.join(root, env_name)
    layout = f"a skill folder holds {env_name}/general.md and one Markdown file per category"
    if not os.path.isdir(root):
        raise ValueError(f"{skills_dir!r} is not a folder; {layout}")
    if not os.path.isfile(os.path.join(folder, "general.md")):
        raise ValueError(f"{skills_dir!r} has no {env_name}/general.md; {layout}")
    mapping = load_mapping(env_name, skills_dir)
    stems = set(mapping.get("task_to_skill", {}).values()) | set(mapping.get("keywords", {}))
    missing = sorted(stem for stem in stems if not os.path.isfile(os.path.join(folder, stem + ".md")))
    if missing:
        raise ValueError(f"{os.path.join(folder, 'mapping.json')} names {', '.join(missing)}, but there is no "
                         f"{missing[0]}.md in {folder}")


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


class SkillBank:
    """The skill files of one environment and the rules that pick a task's skills (one object per run).

        bank = SkillBank("webshop", skills_dir=None)
        text, names, category = bank.for_task(info, prompt_text, mode="released")
    """

    def __init__(self, env_name: str, skills_dir: str | None = None):
        from envs import env_module

        self.env_name, self.module = env_name, env_module(env_name)
        self.skills = load_skills(env_name, skills_dir)
        mapping = load_mapping(env_name, skills_dir)
        self.task_to_skill = mapping.get("task_to_skill", {})
        own_keywords = getattr(self.module, "CATEGORY_KEYWORDS", {})
        self.keywords = {stem: tuple(k.lower() for k in words)
                         for stem, words in mapping.get("keywords", own_keywords).items()}

    @property
    def files(self) -> list[str]:
        return list(self.skills)

    def for_task(self, info: dict, prompt_text: str = "", mode: str = "keyword", rng: random.Random | None = None,
                 bandit: UCBSkillBandit | None = None) -> tuple[str, list[str], str]:
        """(skill text, file stems used, category) for the task in `info`. `prompt_text` is the student's
        user message, read only by the released WebShop rule (which the released code applies to each
        turn's prompt). The category keys the UCB bandit and is logged with the step samples."""
        if mode != "released":
            category = self.module.skill_category(info["task_description"])
            text, names = retrieve_skills(self.skills, category, mode, rng, bandit)
            return text, names, category
        found = self._released(info, prompt_text)
        names = ["general"] + [stem for stem in found if stem in self.skills and stem != "general"]
        names = [name for name in dict.fromkeys(names) if name in self.skills]
        return "\n\n".join(self.skills[name] for name in names), names, "+".join(found) or "general"

    def _released(self, info: dict, prompt_text: str) -> list[str]:
        """The file stems the released rule picks (before `general`)."""
        if self.env_name == "webshop":
            text = str(prompt_text).lower()
            return [stem for stem, words in self.keywords.items() if any(word in text for word in words)]
        if self.env_name == "alfworld":
            key = str(info.get("task_type", ""))
            default = key if key in self.skills else self.module.TASK_TYPE_CATEGORY.get(key)
        else:
            key = str(info.get("data_source") or info.get("task_type", ""))
            default = SOURCE_CATEGORY.get(key) or (key if key in self.skills else None)
        stem = self.task_to_skill.get(key, default)
        return [stem] if stem else []


class SkillPicker:
    """The trainer's skill source: `picker(env, info, prompt_text="") -> (skill text, category)`, as
    `rollout` asks it at each episode's start (and, when `per_turn`, at every turn with the student's
    message: the released WebShop rule reads the prompt), with the bookkeeping of the UCB bandit (which
    file each episode used, and the wins it led to). Seeded: `reseed` at every iteration keeps resumed
    runs identical."""

    def __init__(self, env_name: str, mode: str, seed: int, bandit_state: dict | None = None,
                 skills_dir: str | None = None):
        self.bank, self.mode = SkillBank(env_name, skills_dir), mode
        self.per_turn = mode == "released" and env_name == "webshop"
        self.rng = random.Random(seed)
        self.bandit = UCBSkillBandit(self.bank.files) if mode == "ucb" else None
        if self.bandit is not None and bandit_state:
            self.bandit.load_state_dict(bandit_state)
        self.used: dict[int, tuple[str, list[str]]] = {}

    def __call__(self, env, info: dict, prompt_text: str = "") -> tuple[str, str]:
        text, names, category = self.bank.for_task(info, prompt_text, self.mode, self.rng, self.bandit)
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
