"""The teacher's privileged context: skill files and how one is picked for a task (the paper's §2,
Method: skill-conditioned privileged guidance).

A skill folder (this repo's `skills/`, or a user's SkillBank given as `skills_dir`) holds one subfolder
per environment: `<env>/general.md` with advice for every task and `<env>/<category>.md` for one task
category, plus an optional `<env>/mapping.json` for the released rules (below); the released SkillBank's
own names (`general_skills.md`, `skill_mapping.json`) are read too. Retrieval modes:
    keyword   general + the category chosen by the env's keyword rules (the paper's default, "KM")
    full      every file
    random    one file drawn at random
    ucb       one file chosen per task category by a UCB bandit on the reward it led to
    released  the released code's rules: ALFWorld by the game's task type; WebShop by matching every
              category's keywords against the whole prompt, every match after general; Search-QA by
              the question's data source (nq, triviaqa -> direct_retrieval; popqa -> attribute_lookup;
              hotpotqa, 2wikimultihopqa, musique, bamboogle -> multi_hop; anything else -> general only)
Skills are training-only: the student never sees them (except the Skill-GRPO baseline).

`mapping.json` (optional, per env) says how a user's folder names its files:
    {"task_to_skill": {"<task type or data source>": "<file stem>", ...},
     "keywords": {"<file stem>": ["keyword", ...], ...}}
The released SkillBank's own layout is read as it ships: `<env>/general_skills.md` for the general
skills and `<env>/skill_mapping.json` with
    {"skill_files": {"<category>": "<file name>", ...},
     "task_to_skill": {"<task type or data source>": "<category>", ...},
     "task_keywords": {"<task type>": ["keyword", ...], ...}}
(a task type's keywords select its category). Without a mapping, task types and data sources map to
this project's category names, and WebShop's keywords are `envs.webshop.CATEGORY_KEYWORDS`. Keywords
match as plain substrings of the lower-cased prompt, as released (so a short keyword such as "hat" also
fires on "that"); a WebShop goal that asks "which ... or ..." without the word "for" also selects the
`comparison` category (`envs.webshop.asks_to_compare`), as released.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import defaultdict

SKILLS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "skills")
RETRIEVAL_MODES = ("keyword", "full", "random", "ucb", "released")
GENERAL_FILES = ("general.md", "general_skills.md")       # this project's name, the released SkillBank's
MAPPING_FILES = ("mapping.json", "skill_mapping.json")
# Search-R1 data sources -> this project's Search-QA skill categories (the released rule).
SOURCE_CATEGORY = {"nq": "direct_retrieval", "triviaqa": "direct_retrieval", "popqa": "attribute_lookup",
                   "hotpotqa": "multi_hop", "2wikimultihopqa": "multi_hop", "musique": "multi_hop",
                   "bamboogle": "multi_hop"}


def _env_folder(env_name: str, skills_dir: str | None) -> str:
    return os.path.join(os.path.expanduser(skills_dir or SKILLS_DIR), env_name)


def _first_file(folder: str, names: tuple[str, ...]) -> str | None:
    """The first of `names` that exists in `folder` (None: none does)."""
    return next((name for name in names if os.path.isfile(os.path.join(folder, name))), None)


def load_skills(env_name: str, skills_dir: str | None = None) -> dict[str, str]:
    """{file stem or category: text} for one environment, `general` first. Files the mapping names
    (`skill_files` of the released layout) are keyed by their category, the others by their stem."""
    folder = _env_folder(env_name, skills_dir)
    general = _first_file(folder, GENERAL_FILES) if os.path.isdir(folder) else None
    if general is None:
        raise FileNotFoundError(f"no skill folder {folder} with general.md or general_skills.md; expected "
                                f"skills/{env_name}/general.md and one file per task category")
    named = load_mapping(env_name, skills_dir)["files"]
    by_file = {file: stem for stem, file in named.items()}
    files = sorted(f for f in os.listdir(folder) if f.endswith(".md") and f != general and f not in by_file)
    stems = {"general": general, **{f[:-3]: f for f in files}, **named}
    return {stem: open(os.path.join(folder, file), encoding="utf-8").read().strip() for stem, file in stems.items()}


def _released_mapping(raw: dict, path: str) -> dict:
    """The released `skill_mapping.json` in this module's terms: categories are the stems, and each task
    type's keywords select the category its `task_to_skill` entry names (itself when it has none)."""
    form = ('{"skill_files": {category: file}, "task_to_skill": {task type: category}, "task_keywords": '
            '{task type: [keyword, ...]}} (each part optional)')
    _check_shape(raw, {"skill_files": _is_text, "task_to_skill": _is_text, "task_keywords": _is_words}, path, form,
                 strict=False)
    task_to_skill = raw.get("task_to_skill", {})
    mapping = {"task_to_skill": task_to_skill, "files": dict(raw.get("skill_files", {}))}
    if "task_keywords" in raw:
        mapping["keywords"] = {}
        for task_type, words in raw["task_keywords"].items():
            mapping["keywords"].setdefault(task_to_skill.get(task_type, task_type), []).extend(words)
    return mapping


def _is_text(value) -> bool:
    return isinstance(value, str)


def _is_words(value) -> bool:
    return isinstance(value, list) and all(isinstance(word, str) for word in value)


def _check_shape(mapping, shapes: dict, path: str, form: str, strict: bool) -> None:
    """ValueError naming `form` unless `mapping` is an object whose `shapes` keys hold objects of valid
    values; `strict` also refuses other keys (the released file may carry more than the rules read)."""
    if not isinstance(mapping, dict) or (strict and set(mapping) - set(shapes)) or not all(
            isinstance(mapping.get(key, {}), dict) and all(shape(v) for v in mapping.get(key, {}).values())
            for key, shape in shapes.items()):
        raise ValueError(f"{path} must be {form}")


def load_mapping(env_name: str, skills_dir: str | None = None) -> dict:
    """The folder's mapping as {"task_to_skill": {name: stem}, "keywords": {stem: [keyword]} (only when the
    folder gives keywords), "files": {stem: file name}}: from `mapping.json` (this project's layout) or
    the released `skill_mapping.json`; ValueError in one line when it is malformed."""
    folder = _env_folder(env_name, skills_dir)
    name = _first_file(folder, MAPPING_FILES) if os.path.isdir(folder) else None
    if name is None:
        return {"task_to_skill": {}, "files": {}}
    path = os.path.join(folder, name)
    try:
        with open(path, encoding="utf-8") as handle:
            mapping = json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not readable JSON ({' '.join(str(error).split())})") from None
    if name == "skill_mapping.json":
        return _released_mapping(mapping, path)
    _check_shape(mapping, {"task_to_skill": _is_text, "keywords": _is_words}, path,
                 '{"task_to_skill": {name: file stem}, "keywords": {file stem: [keyword, ...]}} (either part optional)',
                 strict=True)
    return {"task_to_skill": {}, **mapping, "files": {}}


def check_skills_dir(skills_dir: str, env_name: str) -> None:
    """ValueError (one line) unless `skills_dir` holds `<env>/general.md` (or the released
    `general_skills.md`), every file its mapping names, and nothing unreadable: checked before any
    model loads."""
    root = os.path.expanduser(skills_dir)
    folder = os.path.join(root, env_name)
    layout = (f"a skill folder holds {env_name}/general.md (or the released {env_name}/general_skills.md) and "
              f"one Markdown file per category")
    if not os.path.isdir(root):
        raise ValueError(f"{skills_dir!r} is not a folder; {layout}")
    if not os.path.isdir(folder) or _first_file(folder, GENERAL_FILES) is None:
        raise ValueError(f"{skills_dir!r} has no {env_name}/general.md; {layout}")
    mapping = load_mapping(env_name, skills_dir)
    if mapping["files"]:
        wanted = set(mapping["files"].values())
    else:
        wanted = {stem + ".md" for stem in set(mapping["task_to_skill"].values()) | set(mapping.get("keywords", {}))}
    missing = sorted(file for file in wanted if not os.path.isfile(os.path.join(folder, file)))
    if missing:
        source = _first_file(folder, MAPPING_FILES)
        raise ValueError(f"{os.path.join(folder, source)} names {', '.join(missing)}, but there is no "
                         f"{missing[0]} in {folder}")


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
            found = [stem for stem, words in self.keywords.items() if any(word in text for word in words)]
            if self.module.asks_to_compare(info.get("task_description", "")):
                found.insert(0, self.task_to_skill.get("comparison", "comparison"))
            return found
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
