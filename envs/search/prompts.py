"""What the student sees and how its reply becomes an action.

The wording is `envs/search/prompt.txt` (a template; `prompt_template=FILE` replaces it, see
`envs.templates`), with a `no history` section for the first turn. The question is on the second
line, after the one-line instruction: the paper's in-prompt teacher puts the skills after the first
line.

Fields: {task} the question; {step} the current turn, from 1; {steps_taken} turns taken so far;
{max_steps} the turn limit; {observation} the current observation; {last_turn_hint} a sentence asking
for the answer on the last turn, else "" (off with `last_turn_hint=False`); {history_length} how many
past turns are shown (optional); {history} the shown past turns (optional). History step fields:
{step} its turn number, {index} its place among the shown turns (from 1), {observation}, {action}.

Canonical action strings (what `parse_action` returns and `step` accepts):
    "<search>QUERY</search>"    run QUERY through the retriever
    "<answer>ANSWER</answer>"   give the final answer and end the episode
Anything else (including "", which `parse_action` returns for an invalid reply) is an invalid action:
the episode goes on and the observation reminds the format.
"""

from __future__ import annotations

import functools
import os

from envs.base import is_latin
from envs.templates import PromptTemplate, load_template

ACTION_TAGS = ("search", "answer")
MAX_ACTION_CHARS = 300        # longer queries and answers are cut: real questions have short answers
MAX_OBSERVATION_CHARS = 6000  # guards the prompt against a retriever that returns huge passages

FORMAT_REMINDER = ("Invalid action. Reason inside <think> </think>, then write exactly one "
                   "<search> query </search> or <answer> answer </answer>.")
START_OBSERVATION = "No search made yet."
LAST_TURN_HINT = " This is your last turn: give your answer now."
FIELDS = ("task", "step", "steps_taken", "max_steps", "observation", "last_turn_hint", "history_length", "history")
STEP_FIELDS = ("step", "index", "observation", "action")
OPTIONAL = ("history_length", "history")


def get_template(path: str | None = None) -> PromptTemplate:
    """The Search-QA template: this project's `prompt.txt`, or the user's file at `path`."""
    return _cached_template(None if path is None else os.path.abspath(os.path.expanduser(path)))


@functools.lru_cache(maxsize=8)
def _cached_template(path: str | None) -> PromptTemplate:
    return load_template(os.path.dirname(os.path.abspath(__file__)), path, FIELDS, STEP_FIELDS, OPTIONAL)


def search_action(query: str) -> str:
    return f"<search>{query}</search>"


def answer_action(answer: str) -> str:
    return f"<answer>{answer}</answer>"


def _single_tag(text: str) -> tuple[str, str] | None:
    """(tag, raw content) when exactly one action tag kind appears, opened once then closed once."""
    counts = {tag: (text.count(f"<{tag}>"), text.count(f"</{tag}>")) for tag in ACTION_TAGS}
    used = [tag for tag, (opens, closes) in counts.items() if opens or closes]
    if len(used) != 1 or counts[used[0]] != (1, 1):
        return None
    tag = used[0]
    start, end = text.index(f"<{tag}>") + len(tag) + 2, text.index(f"</{tag}>")
    return (tag, text[start:end]) if end >= start else None


def split_action(action) -> tuple[str, str] | None:
    """("search" | "answer", content) for a canonical action string, else None."""
    if not isinstance(action, str):
        return None
    found = _single_tag(action)
    if found is None:
        return None
    tag, content = found
    if not (action.startswith(f"<{tag}>") and action.endswith(f"</{tag}>")) or not content.strip():
        return None
    return tag, content.strip()


def parse_action(response, mode: str = "project") -> tuple[str, bool]:
    """The project's rule (`mode="project"`, the default; "released" is `parse_first_block`): valid iff
    exactly one of `<search>` / `<answer>` appears, opened and closed once, with non-empty content,
    and the whole reply is Latin script.

    Counting tags (instead of a regex over the whole text) keeps this linear on megabytes of
    output. Returns the canonical action string, or "" when invalid (the env then answers with the
    format reminder); reasoning outside the tags is ignored. White space inside the content is
    collapsed and the content cut to MAX_ACTION_CHARS.
    """
    if not isinstance(response, str):
        return "", False
    if mode == "released":
        return parse_first_block(response)
    found = _single_tag(response)
    if found is None:
        return "", False
    tag, raw = found
    content = " ".join(raw[:4 * MAX_ACTION_CHARS].split())[:MAX_ACTION_CHARS].strip()
    if not content or not is_latin(response):
        return "", False
    return (search_action(content) if tag == "search" else answer_action(content)), True


def _first_block(text: str, tag: str) -> str | None:
    """The content of the first complete `<tag>...</tag>` (tags in any case), or None."""
    lowered = text.lower()
    start = lowered.find(f"<{tag}>")
    end = lowered.find(f"</{tag}>", start + len(tag) + 2) if start != -1 else -1
    return None if end == -1 else text[start + len(tag) + 2:end]


def parse_first_block(response: str) -> tuple[str, bool]:
    """The released code's rule (verl-agent's Search projection): the reply is cut after its first
    `</search>`, else its first `</answer>`; the action is its first complete search block, else its
    first answer block (content stripped). The reply is invalid when it has no block, or holds both an
    opening `<search>` and an opening `<answer>`, or either opening tag twice (tags in any case).

    Unlike the project's rule an invalid reply still sends the block it found (a search runs even
    when an answer tag follows it), text after the block is ignored, closing tags are not counted,
    and neither Latin script nor a non-empty block is required (an empty block reaches the env, which
    answers with the format reminder). Never raises; linear in the reply.
    """
    trimmed = response
    for closing in ("</search>", "</answer>"):
        if closing in response:
            trimmed = response.split(closing, 1)[0] + closing
            break
    search, answer = _first_block(trimmed, "search"), _first_block(trimmed, "answer")
    action = search_action(search.strip()) if search is not None else \
        answer_action(answer.strip()) if answer is not None else ""
    lowered = response.lower()
    n_search, n_answer = lowered.count("<search>"), lowered.count("<answer>")
    valid = action != "" and not (n_search and n_answer) and n_search <= 1 and n_answer <= 1
    return action, valid


def format_information(passages: list[dict]) -> str:
    """Retrieved passages as the student sees them, one numbered line each, inside <information>."""
    lines = []
    for rank, passage in enumerate(passages, start=1):
        title, text = split_contents(passage.get("contents", ""))
        lines.append(f"Doc {rank} (Title: {title}) {text}")
    return "<information>" + "\n".join(lines) + "</information>"


def split_contents(contents) -> tuple[str, str]:
    """Split a wiki-18 passage `"Title"\\ntext` into (title, text); tolerate a missing title line."""
    contents = str(contents)
    head, _, body = contents.partition("\n")
    if not body:
        return "", " ".join(head.split())
    return head.strip().strip('"'), " ".join(body.split())


def _clip(text, limit: int | None = MAX_OBSERVATION_CHARS) -> str:
    text = str(text)
    return text if limit is None or len(text) <= limit else text[:limit] + " ..."


def render_prompt(observation, history, info, history_length, max_steps: int = 4,
                  template: PromptTemplate | None = None, clip_observations: bool = True,
                  last_turn_hint: bool = True) -> str:
    """One user message: the question, the turn count, the last `history_length` (observation,
    action) pairs, the current observation and the output format, through `template` (None = the
    project's). `clip_observations` False leaves every text whole; `last_turn_hint` False drops the
    sentence that asks for an answer on the last turn (the released prompt has none). Never raises:
    every field is read defensively because the trainer may hand over partial dicts or odd history
    entries."""
    limit = (lambda n: n) if clip_observations else (lambda n: None)
    info = info if isinstance(info, dict) else {}
    try:
        step = int(info.get("step", 0))
    except (TypeError, ValueError):
        step = 0
    try:
        keep = max(0, int(history_length))
    except (TypeError, ValueError):
        keep = 0
    try:
        past = list(history or [])
    except TypeError:
        past = []
    past = past[-keep:] if keep else []
    first = step - len(past) + 1
    steps = []
    for offset, pair in enumerate(past):
        seen, action = (pair[0], pair[1]) if isinstance(pair, (tuple, list)) and len(pair) >= 2 else ("", pair)
        steps.append({"step": first + offset, "index": offset + 1,
                      "observation": _clip(seen, limit(MAX_OBSERVATION_CHARS)), "action": _clip(action, limit(400))})
    values = {"task": _clip(info.get("task_description", ""), limit(2000)), "step": min(step + 1, max_steps),
              "steps_taken": step, "max_steps": max_steps,
              "observation": _clip(observation, limit(MAX_OBSERVATION_CHARS)),
              "last_turn_hint": LAST_TURN_HINT if last_turn_hint and step + 1 >= max_steps else "",
              "history_length": len(steps) if steps else None}
    return (template or get_template()).render(values, steps)
