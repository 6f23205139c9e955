"""The WebShop student prompt and action parsing, shared by the built-in engine and the real adapter.

The prompt is kept short because tiny models are trained on it on a CPU: the goal is stated once
(WebShop repeats it at the top of every page, we cut that head off), past pages are clipped, and
the admissible actions are listed so the model can copy one.
"""

from __future__ import annotations

import re

from envs.base import parse_think_action

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


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


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


def render_prompt(observation: str, history: list, info: dict, history_length: int, max_steps: int = 15) -> str:
    """One user message: task, step count, recent steps, current page, admissible actions, format."""
    info = info if isinstance(info, dict) else {}
    task = str(info.get("task_description", ""))
    step = info.get("step", 0)
    actions = info.get("admissible_actions") or []
    actions = [str(action) for action in actions] if isinstance(actions, (list, tuple)) else [str(actions)]
    lines = [f"You are shopping on a web store. Your task: {task}",
             f"You have taken {step} of at most {max_steps} steps."]
    pairs = _pairs(history, history_length)
    if pairs:
        lines.append(f"Your last {len(pairs)} step(s):")
        for number, (past_observation, past_action) in enumerate(pairs, start=1):
            page = _clip(strip_instruction(past_observation), HISTORY_OBSERVATION_CHARS)
            lines += [f"[Page {number}] {page}", f"[Action {number}] {past_action}"]
    lines.append(f"Current page: {_clip(strip_instruction(observation), CURRENT_OBSERVATION_CHARS)}")
    if actions:
        lines.append("Admissible actions: " + ", ".join(actions))
    search_hint = " To search, write search[your keywords]." if "search[...]" in actions else ""
    lines.append("First reason inside <think></think>, then write exactly one admissible action inside "
                 f"<action></action>, e.g. <action>click[buy now]</action>.{search_hint}")
    return "\n".join(lines)


def parse_action(response: str) -> tuple[str, bool]:
    """(action, valid): the think/action rule of envs.base, and the action must be search[..] or click[..]."""
    action, valid = parse_think_action(str(response))
    return action, valid and bool(_WEBSHOP_ACTION.match(action))
