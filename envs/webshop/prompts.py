"""The WebShop student prompt and action parsing, shared by the built-in engine and the real adapter.

The wording is `envs/webshop/prompt.txt` (a template; `prompt_template=FILE` replaces it, see
`envs.templates`). It is kept short because tiny models are trained on it on a CPU: the goal is stated
once (WebShop repeats it at the top of every page, we cut that head off), past pages are clipped, and
the admissible actions are listed so the model can copy one. The task is the first line, where the
paper's in-prompt teacher places the skills.

Fields: {task} the shopping instruction; {step} the current step, from 1; {steps_taken} steps taken so
far; {max_steps} the step limit; {observation} the current page without its instruction head;
{admissible_actions} the admissible actions joined by ", " (optional); {search_hint} a sentence on
how to search when the page has a search bar, else ""; {history_length} how many past steps are shown
(optional); {history} the shown past steps (optional). History step fields: {step} its step number,
{index} its place among the shown steps (from 1), {observation} the page then, {action}.
"""

from __future__ import annotations

import functools
import os
import re

from envs.base import parse_first_action, parse_think_action
from envs.templates import PromptTemplate, load_template

HISTORY_OBSERVATION_CHARS = 400
CURRENT_OBSERVATION_CHARS = 6000
_PAGE_HEAD = re.compile(r"^\s*(WebShop \[SEP\] )?Instruction: \[SEP\] .*? \[SEP\] ", re.DOTALL)
_WEBSHOP_ACTION = re.compile(r"^(search|click)\[.+\]$", re.DOTALL)
_ACTION_PARTS = re.compile(r"^\s*(search|click)\[(.*)\]\s*$", re.DOTALL)


def strip_instruction(observation: str) -> str:
    """The page without its "Instruction: [SEP] <goal> [SEP]" head (the goal is already in the prompt)."""
    return _PAGE_HEAD.sub("", str(observation), count=1)


def split_action(action: str) -> tuple[str, str]:
    """("search" | "click", argument) of a WebShop action, lower-cased with single spaces, or ("", "")
    when it has neither form. Only the first 1,000 characters are read (actions are short)."""
    match = _ACTION_PARTS.match(str(action)[:1000])
    if match is None:
        return "", ""
    return match.group(1), " ".join(match.group(2).lower().split())


FIELDS = ("task", "step", "steps_taken", "max_steps", "observation", "admissible_actions", "search_hint",
          "history_length", "history")
STEP_FIELDS = ("step", "index", "observation", "action")
OPTIONAL = ("admissible_actions", "history_length", "history")
SEARCH_HINT = " To search, write search[your keywords]."
RELEASED_FALLBACK_CHARS = 20  # released parsing sends the reply's last 20 characters when no action block is found
RELEASED_PROMPT_CHARS = 13_000  # released: a longer prompt is rebuilt from the no-history template


def get_template(path: str | None = None) -> PromptTemplate:
    """The WebShop template: this project's `prompt.txt`, or the user's file at `path`."""
    return _cached_template(None if path is None else os.path.abspath(os.path.expanduser(path)))


@functools.lru_cache(maxsize=8)
def _cached_template(path: str | None) -> PromptTemplate:
    return load_template(os.path.dirname(os.path.abspath(__file__)), path, FIELDS, STEP_FIELDS, OPTIONAL)


def _clip(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[:limit] + " ..."


def _pairs(history, history_length) -> list[tuple[str, str]]:
    """The last `history_length` (observation, action) pairs, skipping malformed entries."""
    try:
        keep = max(0, int(history_length))
    except (TypeError, ValueError, OverflowError):
        keep = 0
    pairs = []
    history = list(history) if isinstance(history, (list, tuple)) else []
    for item in history[-keep:] if keep else []:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            pairs.append((str(item[0]), str(item[1])))
    return pairs


def render_prompt(observation: str, history: list, info: dict, history_length: int, max_steps: int = 15,
                  template: PromptTemplate | None = None, clip_observations: bool = True) -> str:
    """One user message: task, step count, recent steps, current page, admissible actions, format,
    through `template` (None = the project's). `clip_observations` False leaves pages whole and bounds the
    prompt the released way instead (verl-agent's WebShop env manager, `build_text_obs`): a prompt with
    history longer than 13,000 characters is rendered again without the history (the template's
    "no history" section when it has one)."""
    info = info if isinstance(info, dict) else {}
    step = info.get("step", 0)
    actions = info.get("admissible_actions") or []
    actions = [str(action) for action in actions] if isinstance(actions, (list, tuple)) else [str(actions)]
    pairs = _pairs(history, history_length)
    offset = step - len(pairs) if isinstance(step, int) else 0
    steps = [{"step": offset + number, "index": number, "action": past_action,
              "observation": _clip(strip_instruction(past_observation),
                                   HISTORY_OBSERVATION_CHARS if clip_observations else None)}
             for number, (past_observation, past_action) in enumerate(pairs, start=1)]
    values = {"task": str(info.get("task_description", "")), "steps_taken": step,
              "step": step + 1 if isinstance(step, int) else step, "max_steps": max_steps,
              "observation": _clip(strip_instruction(observation),
                                   CURRENT_OBSERVATION_CHARS if clip_observations else None),
              "admissible_actions": ", ".join(actions) if actions else None,
              "search_hint": SEARCH_HINT if "search[...]" in actions else "",
              "history_length": len(steps) if steps else None}
    template = template or get_template()
    prompt = template.render(values, steps)
    if not clip_observations and steps and len(prompt) > RELEASED_PROMPT_CHARS:
        return template.render(dict(values, history_length=None), [])
    return prompt


def parse_action(response: str, mode: str = "project") -> tuple[str, bool]:
    """(action, valid). "project": the think/action rule of `envs.base.parse_think_action`, and the
    action must be search[..] or click[..]; "released": `envs.base.parse_first_action` (no form check:
    the released code leaves that to the environment, which ignores anything else)."""
    if mode == "released":
        return parse_first_action(str(response), RELEASED_FALLBACK_CHARS)
    action, valid = parse_think_action(str(response))
    return action, valid and bool(_WEBSHOP_ACTION.match(action))
