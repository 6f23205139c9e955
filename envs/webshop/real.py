"""RealWebShop: the WebShop project's own text environment behind the `envs.base.Env` interface.

Setup: a WebShop checkout (https://github.com/princeton-nlp/WebShop; `webshop_path=...` or
$WEBSHOP_PATH) and its Python requirements (`tools/webshop/install.sh` installs a set verified on
Python 3.11 with JDK 17). The data is either the checkout's own (its setup.sh downloads products,
goals and builds the search index) or a folder written by `python -m envs.webshop.export --out DIR`
(the built-in catalogue in WebShop's formats), passed as `data_dir=DIR`.

The adapter follows the released SDAR / verl-agent setup: text observations, goals 0-499 are the
test split and 500+ train, 15 steps, reward 10 when the purchase scores 1.0 (raw score in
info["score"]). Loading products and the index takes a while, so env copies in one process share
one WebShop server; each copy plays under its own session id so their pages never mix.
"""

from __future__ import annotations

import atexit
import importlib
import itertools
import os
import random
import shutil
import sys
import tempfile

from envs.base import EnvSetupError, MissingPackageError, check_switches, expand_path
from envs.webshop import skill_category
from envs.webshop.prompts import get_template, parse_action, render_prompt, split_action

TEST_GOALS = 500
SPLIT_ALIASES = {"train": "train", "test": "test", "valid_seen": "test", "valid": "test", "eval": "test"}
# WebShop's departments, mapped onto our skill categories.
DEPARTMENT_TO_SKILL = {"beauty": "beauty", "electronics": "electronics", "fashion": "fashion",
                       "food": "food", "grocery": "food", "furniture": "home", "garden": "home", "home": "home"}

_SERVERS: dict = {}
_INSTANCE_IDS = itertools.count()


def checkout_path(webshop_path: str | None = None) -> str:
    """The WebShop checkout root from `webshop_path` or $WEBSHOP_PATH, or EnvSetupError saying what to do."""
    path = webshop_path or os.environ.get("WEBSHOP_PATH")
    if not path:
        raise EnvSetupError(
            "RealWebShop needs a WebShop checkout: clone https://github.com/princeton-nlp/WebShop, run its "
            "setup.sh, then pass webshop_path=... or set WEBSHOP_PATH. Use backend 'builtin' to train without it.")
    path = os.path.abspath(expand_path(path, "webshop_path" if webshop_path else "WEBSHOP_PATH"))
    if not os.path.isdir(os.path.join(path, "web_agent_site")):
        raise EnvSetupError(f"webshop_path={path!r} has no web_agent_site folder; "
                            "point it at the WebShop checkout root.")
    return path


def overlay_checkout(checkout: str, data_dir: str) -> str:
    """A temporary folder that looks like a WebShop checkout whose data is `data_dir`.

    WebShop finds its data and index from its own folder (`../data`, `../search_engine` next to
    `web_agent_site`). The overlay holds `data` and `search_engine` links into `data_dir` and a copy of
    the `web_agent_site` folder tree made of links to the checkout's files, so the checkout is never
    written to (not even Python's bytecode caches, which land in the overlay's own folders).
    """
    data_dir = os.path.abspath(expand_path(data_dir, "data_dir"))
    for needed in ("data", os.path.join("search_engine", "indexes")):
        if not os.path.isdir(os.path.join(data_dir, needed)):
            raise EnvSetupError(f"data_dir={data_dir!r} has no {needed} folder; write one with "
                                f"python -m envs.webshop.export --out {data_dir}")
    root = tempfile.mkdtemp(prefix="webshop_overlay_")
    atexit.register(shutil.rmtree, root, True)
    for name in ("data", "search_engine"):
        os.symlink(os.path.join(data_dir, name), os.path.join(root, name))
    source = os.path.join(checkout, "web_agent_site")
    for folder, _, files in os.walk(source):
        if os.path.basename(folder) == "__pycache__":
            continue
        target = os.path.join(root, "web_agent_site", os.path.relpath(folder, source))
        os.makedirs(target, exist_ok=True)
        for name in files:
            if not name.endswith(".pyc"):
                os.symlink(os.path.join(folder, name), os.path.join(target, name))
    return root


_OVERLAYS: dict = {}


def load_text_env_class(webshop_path: str | None = None, data_dir: str | None = None):
    """Import `WebAgentTextEnv` from a WebShop checkout (through an overlay on `data_dir` when given),
    or say exactly what is missing. WebShop reads its data paths once, at import, so one process
    plays one data set."""
    path = checkout_path(webshop_path)
    if data_dir is not None:
        key = (path, os.path.abspath(expand_path(data_dir, "data_dir")))
        if key not in _OVERLAYS:
            _OVERLAYS[key] = overlay_checkout(path, data_dir)
        path = _OVERLAYS[key]
    loaded = sys.modules.get("web_agent_site")
    if loaded is not None and os.path.dirname(os.path.dirname(os.path.abspath(loaded.__file__))) != path:
        raise EnvSetupError(f"WebShop is already loaded in this process from {loaded.__file__}; it reads "
                            "its data paths at import, so one process can play only one checkout and data_dir.")
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module("web_agent_site.envs.web_agent_text_env")
    except ImportError as error:
        raise MissingPackageError(
            f"Could not import WebShop's text environment from {path}: {error}. Install its requirements "
            "(tools/webshop/install.sh: gym, flask, beautifulsoup4, pyserini with a JDK, spacy and its "
            "en_core_web_sm pipeline, thefuzz, cleantext, rank_bm25, rich, selenium).") from error
    return module.WebAgentTextEnv


class RealWebShop:
    """The real benchmark. kwargs: webshop_path (else $WEBSHOP_PATH), data_dir (a folder written by
    `envs.webshop.export`; None = the checkout's own data), num_products (None = the index
    the setup built), human_goals (False: WebShop's synthetic goals; True: its 12k human instructions),
    file_path (product file; WebShop's default otherwise), max_steps (15), the prompt switches of
    `BuiltinWebShop` (`prompt_template`, `clip_observations`, `action_parse`); the WebAgentTextEnv
    options in `PASSTHROUGH` go to it unchanged (it reads its kwargs with .get, so a misspelled one
    would be ignored silently: anything else is refused)."""

    name = "webshop"
    PASSTHROUGH = ("filter_goals", "limit_goals", "show_attrs", "get_image", "num_prev_obs", "num_prev_actions")

    def __init__(self, webshop_path: str | None = None, data_dir: str | None = None, num_products: int | None = None,
                 human_goals: bool = False, file_path: str | None = None, max_steps: int = 15,
                 prompt_template: str | None = None, clip_observations: bool = True, action_parse: str = "project",
                 **env_kwargs):
        unknown = sorted(set(env_kwargs) - set(self.PASSTHROUGH))
        if unknown:
            raise TypeError(f"RealWebShop got unexpected keyword argument(s) {', '.join(unknown)}")
        check_switches(action_parse, clip_observations)
        self.clip_observations, self.action_parse = clip_observations, action_parse
        self.template = get_template(prompt_template)
        text_env_class = load_text_env_class(webshop_path, data_dir)
        kwargs = dict(observation_mode="text", num_products=num_products, human_goals=human_goals, **env_kwargs)
        if file_path is not None:
            kwargs["file_path"] = file_path
        key = (text_env_class, repr(sorted(kwargs.items())))
        self.env = text_env_class(server=_SERVERS.get(key), session_prefix=f"sdar{next(_INSTANCE_IDS)}_", **kwargs)
        _SERVERS.setdefault(key, self.env.server)
        self.server = self.env.server
        self._forget_session()  # the constructor opened a random session we never use
        self.max_steps = int(max_steps)
        self.goal = None

    def _forget_session(self) -> None:
        """Drop this copy's last session from the shared server (it would otherwise grow forever)."""
        self.server.user_sessions.pop(getattr(self.env, "session", None), None)

    @staticmethod
    def check_kwargs(kwargs: dict) -> None:
        """The checkout and data are there (cheap: nothing imported; run by config validation before
        anything loads)."""
        checkout_path(kwargs.get("webshop_path"))
        data_dir = kwargs.get("data_dir")
        if data_dir is not None and not os.path.isdir(os.path.join(expand_path(data_dir, "data_dir"), "data")):
            raise EnvSetupError(f"data_dir={data_dir!r} has no data folder; write one with "
                                f"python -m envs.webshop.export --out {data_dir}")

    def num_tasks(self, split: str) -> int:
        """Goals of a split (task_index 0..num_tasks-1): 0-499 test, the rest train."""
        n_goals = len(self.server.goals)
        return min(TEST_GOALS, n_goals) if SPLIT_ALIASES[split] == "test" else max(0, n_goals - TEST_GOALS)

    def reset(self, seed: int, split: str = "train", task_index: int | None = None) -> tuple[str, dict]:
        if split not in SPLIT_ALIASES:
            raise ValueError(f"split={split!r} is unknown; choose one of {', '.join(SPLIT_ALIASES)}")
        self.split = SPLIT_ALIASES[split]
        n_goals = len(self.server.goals)
        goals = range(0, min(TEST_GOALS, n_goals)) if self.split == "test" else range(TEST_GOALS, n_goals)
        if task_index is None:
            task_index = random.Random(seed).randrange(len(goals))
        if not 0 <= task_index < len(goals):
            raise ValueError(f"task_index={task_index} is outside the {self.split} split (0..{len(goals) - 1})")
        self._forget_session()
        self.task_index = task_index
        goal_index = goals[task_index]
        self.server.user_sessions.pop(f"{self.env.session_prefix}{goal_index}", None)
        self.observation, _ = self.env.reset(session=goal_index)
        self.goal = self.server.user_sessions[self.env.session]["goal"]
        self.instruction = str(self.env.instruction_text)
        self.steps, self.done, self.score = 0, False, 0.0
        self._available = self.env.get_available_actions()
        return self.observation, self._info()

    def _clickables(self) -> dict[str, str]:
        """Normalised name -> WebShop's own clickable name ("search" is the search button, not a click)."""
        return {" ".join(str(name).lower().split()): name
                for name in self._available.get("clickables", []) if name != "search"}

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        if self.done:
            return self.observation, 0.0, True, self._info()
        self.steps += 1
        kind, argument = split_action(action)
        clickables = self._clickables()
        command = None
        if kind == "search" and argument and self._available.get("has_search_bar"):
            command = f"search[{argument}]"
        elif kind == "click" and argument in clickables:
            command = f"click[{clickables[argument]}]"
        reward = 0.0
        if command is not None:  # anything else is checked here, so WebShop never sees a bad action
            self.observation, raw_reward, purchased, _ = self.env.step(command)
            if purchased:
                self.score, self.done = float(raw_reward), True
                reward = 10.0 if self.score == 1.0 else 0.0
            else:
                self._available = self.env.get_available_actions()
        if self.steps >= self.max_steps:
            self.done = True
        return self.observation, reward, self.done, self._info()

    def admissible_actions(self) -> list[str]:
        if self.done:
            return []
        searches = ["search[...]"] if self._available.get("has_search_bar") else []
        return searches + [f"click[{name}]" for name in self._clickables()]

    def _info(self) -> dict:
        return {"won": self.done and self.score == 1.0, "score": self.score,
                "admissible_actions": self.admissible_actions(), "task_description": self.instruction,
                "task_type": str(self.goal.get("category", "")) or skill_category(self.instruction),
                "task_id": f"webshop-{self.split}-{self.task_index}", "step": self.steps}

    def privileged(self) -> dict:
        """Target product and a best-effort plan (title search, product, options, Buy Now). Unlike the
        built-in plan it is not checked: WebShop's search may not put the target on page 1."""
        goal = self.goal
        department = str(goal.get("category", "")).lower()
        category = DEPARTMENT_TO_SKILL.get(department, skill_category(self.instruction))
        options = goal.get("goal_options", {})
        option_values = list(options.values()) if isinstance(options, dict) else list(options)
        title = str(goal.get("name", goal.get("query", "")))
        plan = [f"search[{title.lower()}]", f"click[{str(goal.get('asin', '')).lower()}]",
                *[f"click[{value}]" for value in option_values], "click[buy now]"]
        return {"task_type": department or category, "skill_category": category,
                "target_product": {"asin": goal.get("asin"), "title": title,
                                   "attributes": list(goal.get("attributes", [])), "options": options,
                                   "price_upper": goal.get("price_upper")},
                "expert_plan": plan, "expert_plan_verified": False}

    def render_prompt(self, observation: str, history: list, info: dict, history_length: int) -> str:
        return render_prompt(observation, history, info, history_length, self.max_steps, self.template,
                             self.clip_observations)

    def parse_action(self, response: str) -> tuple[str, bool]:
        return parse_action(response, self.action_parse)
