"""The student's prompt for one ALFWorld turn and the parsing of its answer (shared by both backends).

The wording is `envs/alfworld/prompt.txt` (a template with the fields below; `prompt_template=FILE`
replaces it, see `envs.templates`). It is kept short on purpose: tiny models are trained on these
prompts on a CPU, and the real benchmark's observations are already long. The task is the first line,
where the paper's in-prompt teacher places the skills ("after the task line").

Fields: {task} the task sentence; {step} the current step, from 1; {steps_taken} steps taken so far;
{max_steps} the step limit; {observation} the current observation; {admissible_actions} the
admissible actions joined by ", " (optional); {history_length} how many past steps are shown
(optional); {history} the shown past steps (optional). History step fields: {step} its step number,
{index} its place among the shown steps (from 1), {observation}, {action}.
"""

from __future__ import annotations

import functools
import os

from envs.base import parse_first_action, parse_think_action
from envs.templates import PromptTemplate, load_template

NOTHING = "Nothing happens."
MAX_OBSERVATION_CHARS = 2000  # a cap so a pathological observation cannot blow up the prompt
MAX_TASK_CHARS, MAX_ACTION_CHARS = 300, 200
FIELDS = ("task", "step", "steps_taken", "max_steps", "observation", "admissible_actions", "history_length",
          "history")
STEP_FIELDS = ("step", "index", "observation", "action")
OPTIONAL = ("admissible_actions", "history_length", "history")
RELEASED_FALLBACK_CHARS = 30  # released parsing sends the reply's last 30 characters when no action block is found


def empty_info() -> dict:
    """An `info` with every INFO_KEYS entry, for calls made before any reset."""
    return {"won": False, "score": 0.0, "admissible_actions": [], "task_description": "",
            "task_type": "", "task_id": "", "step": 0}


def get_template(path: str | None = None) -> PromptTemplate:
    """The ALFWorld template: this project's `prompt.txt`, or the user's file at `path`."""
    return _cached_template(None if path is None else os.path.abspath(os.path.expanduser(path)))


@functools.lru_cache(maxsize=8)
def _cached_template(path: str | None) -> PromptTemplate:
    return load_template(os.path.dirname(os.path.abspath(__file__)), path, FIELDS, STEP_FIELDS, OPTIONAL)


def _text(value, limit: int | None) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if limit is None or len(text) <= limit else text[:limit] + " ..."


def render_prompt(self, observation: str, history: list[tuple[str, str]], info: dict,
                  history_length: int) -> str:
    """One user message: task, step count, recent (observation, action) pairs, current observation,
    admissible actions and the answer format, through the env's template (`self.template`, else the
    project's). `self.clip_observations` False leaves every text whole. Never raises, whatever
    `history` or `info` hold."""
    clip = getattr(self, "clip_observations", True)

    def cut(value, limit: int) -> str:
        return _text(value, limit if clip else None)

    info = info if isinstance(info, dict) else {}
    step = info.get("step", len(history) if isinstance(history, (list, tuple)) else 0)
    step = step if isinstance(step, int) else 0
    pairs = list(history) if isinstance(history, (list, tuple)) else []
    keep = max(0, int(history_length)) if isinstance(history_length, int) else 0
    recent = pairs[-keep:] if keep else []
    first = step - len(recent) + 1
    steps = []
    for k, pair in enumerate(recent):
        obs, act = (pair[0], pair[1]) if isinstance(pair, (list, tuple)) and len(pair) >= 2 else (pair, "")
        steps.append({"step": first + k, "index": k + 1, "observation": cut(obs, MAX_OBSERVATION_CHARS),
                      "action": cut(act, MAX_ACTION_CHARS)})
    actions = info.get("admissible_actions") or []
    actions = actions if isinstance(actions, (list, tuple)) else []
    values = {"task": cut(info.get("task_description", ""), MAX_TASK_CHARS), "step": step + 1,
              "steps_taken": step, "max_steps": getattr(self, "max_steps", 50),
              "observation": cut(observation, MAX_OBSERVATION_CHARS),
              "admissible_actions": ", ".join(cut(a, MAX_ACTION_CHARS) for a in actions) if actions else None,
              "history_length": len(steps) if steps else None}
    return (getattr(self, "template", None) or get_template()).render(values, steps)


def parse_action(self, response: str) -> tuple[str, bool]:
    """(action, valid) by `self.action_parse`: "project" (the default) is `envs.base.parse_think_action`,
    "released" is `envs.base.parse_first_action` (the released code's rule). Never raises."""
    text = response if isinstance(response, str) else str(response)
    if getattr(self, "action_parse", "project") == "released":
        return parse_first_action(text, RELEASED_FALLBACK_CHARS)
    return parse_think_action(text)
