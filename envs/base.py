"""The environment contract shared by every benchmark, built-in or real.

The trainer and `rollout.py` only ever talk to this interface, so a built-in engine and the real
benchmark adapter are interchangeable. It is a plain-Python protocol (no gym dependency).

An environment plays one episode at a time:

    obs, info = env.reset(seed, split="train")         # same seed -> same task, same initial state
    while True:
        prompt = env.render_prompt(obs, history, info, history_length)   # one user message
        action, valid = env.parse_action(model_response_text)           # never raises
        obs, reward, done, info = env.step(action)                      # invalid actions too
        if done: break

`info` always carries the keys in `INFO_KEYS`. Rewards follow the released SDAR code: ALFWorld gives
10 when won, WebShop 10 when the purchase scores 1.0 (raw score in `info["score"]`), Search-QA the
exact match in {0, 1}. The invalid-action penalty belongs to the trainer, not to the environment.
"""

from __future__ import annotations

import os
import re
from typing import Protocol


class EnvSetupError(RuntimeError):
    """A real benchmark that is not set up here (no game files, no checkout): bad input, so train.py
    reports it in one line with exit code 2."""


class MissingPackageError(EnvSetupError, ImportError):
    """A package a real benchmark needs is not installed (also an ImportError, for code that catches those)."""


_UNSET_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def expand_path(value: str, name: str) -> str:
    """`~` and `$VAR` / `${VAR}` expanded; EnvSetupError when a variable is not set, so a config's
    placeholder such as `${SEARCH_R1_DATA}` fails in one line instead of as a missing file."""
    path = os.path.expandvars(os.path.expanduser(str(value)))
    unset = _UNSET_VARIABLE.search(path)
    if unset:
        raise EnvSetupError(f"{name}={value!r} uses ${unset.group(1)}, which is not set: export "
                            f"{unset.group(1)}=... or write the path itself (README 'Reproducing the paper')")
    return path


INFO_KEYS = (
    "won",                 # bool: the task is solved
    "score",               # float: the benchmark's raw score (ALFWorld won, WebShop purchase score, EM)
    "admissible_actions",  # list[str]: actions the env accepts now ([] where the space is open, Search-QA)
    "task_description",    # str: the task as the student sees it
    "task_type",           # str: the benchmark's task family (ALFWorld's six types, question family, ...)
    "task_id",             # str: a stable id of the task (same seed -> same id)
    "step",                # int: number of steps taken so far in this episode
)


class Env(Protocol):
    """What every environment provides. See the module docstring for the episode loop."""

    name: str        # "alfworld" | "webshop" | "search"
    max_steps: int   # episode limit enforced by the env (50 / 15 / 4)

    def reset(self, seed: int, split: str = "train", task_index: int | None = None) -> tuple[str, dict]:
        """Start an episode. `task_index` picks a task of the split directly; else `seed` draws one."""

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        """Apply an already-extracted action; an unknown action changes nothing ("Nothing happens.")."""

    def privileged(self) -> dict:
        """Teacher-only view of the task: at least `task_type` and `skill_category`, plus an expert plan,
        gold answers or target product. Never shown to the student."""

    def render_prompt(self, observation: str, history: list[tuple[str, str]], info: dict,
                      history_length: int) -> str:
        """The user message for this turn. `history` holds (observation, action) pairs of past turns."""

    def parse_action(self, response: str) -> tuple[str, bool]:
        """Extract the action from the model's text: (action, valid). Never raises."""

    def num_tasks(self, split: str) -> int:
        """Tasks of a split: `reset(..., task_index=i)` for i < num_tasks is each of them once (a final
        evaluation on the whole split)."""


_LATIN = re.compile(r"^[\u0000-\u024F\u1E00-\u1EFF\u2000-\u206F\u20A0-\u20CF\u2100-\u214F]*$")


def is_latin(text: str) -> bool:
    """True if every character is Latin script, punctuation or common symbols.

    The released code marks a response invalid when it drifts into another script (Qwen models
    sometimes switch to Chinese mid-answer); we apply the same rule to every non-Latin script.
    """
    return bool(_LATIN.match(text))


def tag_contents(text: str, tag: str) -> list[str]:
    """All non-nested `<tag>...</tag>` contents in order (the text between each open and its close).

    A forward scan with str.find, linear in the text: a lazy regex rescans the rest of the text from
    every unclosed open tag, which takes minutes on a reply that repeats one tag many thousand times.
    """
    opening, closing = f"<{tag}>", f"</{tag}>"
    found, start = [], text.find(opening)
    while start != -1:
        end = text.find(closing, start + len(opening))
        if end == -1:
            break
        found.append(text[start + len(opening):end])
        start = text.find(opening, end + len(closing))
    return found


def parse_think_action(response: str, max_action_chars: int = 200) -> tuple[str, bool]:
    """The ALFWorld/WebShop rule of this project (`action_parse="project"`, the default): valid iff a
    complete `<think>..</think>` and exactly one complete `<action>..</action>` are present, the action
    is non-empty and the whole response is Latin script. The action is the *last* block's text.

    The returned action is the stripped, lower-cased action text (both benchmarks match commands
    case-insensitively) (or, when invalid, whatever
    action text could be found, possibly ""), truncated to `max_action_chars`: it is still sent
    to the environment, which answers that nothing happens.
    """
    actions = tag_contents(response, "action")
    thinks = tag_contents(response, "think")
    action = actions[-1].strip().lower()[:max_action_chars] if actions else ""
    valid = (len(actions) == 1 and len(thinks) >= 1 and action != "" and is_latin(response))
    return action, valid


ACTION_PARSE_MODES = ("project", "released")
_CJK = re.compile("[\u4e00-\u9fff]")


def parse_first_action(response: str, fallback_chars: int) -> tuple[str, bool]:
    """The ALFWorld/WebShop rule of the released code (`action_parse="released"`): the action is the
    lower-cased text from the first `<action>` to the first `</action>` (tags found in any case);
    without both tags the reply is invalid and its last `fallback_chars` characters (lower-cased) are
    sent instead (30 for ALFWorld, 20 for WebShop). Valid also needs `<think>` and `</think>`
    somewhere and no CJK ideograph (U+4E00-U+9FFF).

    How it differs from `parse_think_action`: it reads the *first* block and ignores anything after
    it (with sampling to EOS a reply often goes on after its action, so this matters), a repeated
    action block or an empty action stays valid, other scripts than CJK are fine, and the action is
    not cut to 200 characters. Never raises; linear in the reply.
    """
    lowered = response.lower()
    start, end = lowered.find("<action>"), lowered.find("</action>")
    if start == -1 or end == -1:
        return lowered[-fallback_chars:], False
    action = lowered[start + len("<action>"):end].strip()
    valid = "<think>" in response and "</think>" in response and not _CJK.search(response)
    return action, valid


def check_switches(action_parse: str, clip_observations: bool) -> None:
    """The shared env switches, checked at construction (ValueError naming the kwarg and the choices)."""
    if action_parse not in ACTION_PARSE_MODES:
        raise ValueError(f"action_parse={action_parse!r} is unknown; choose one of {', '.join(ACTION_PARSE_MODES)}")
    if not isinstance(clip_observations, bool):
        raise ValueError(f"clip_observations={clip_observations!r} must be true or false")
