"""What the student sees and how its reply becomes an action.

Canonical action strings (what `parse_action` returns and `step` accepts):
    "<search>QUERY</search>"    run QUERY through the retriever
    "<answer>ANSWER</answer>"   give the final answer and end the episode
Anything else (including "", which `parse_action` returns for an invalid reply) is an invalid action:
the episode goes on and the observation reminds the format.
"""

from __future__ import annotations

from envs.base import is_latin

ACTION_TAGS = ("search", "answer")
MAX_ACTION_CHARS = 300        # longer queries and answers are cut: real questions have short answers
MAX_OBSERVATION_CHARS = 6000  # guards the prompt against a retriever that returns huge passages

FORMAT_REMINDER = ("Invalid action. Reason inside <think> </think>, then write exactly one "
                   "<search> query </search> or <answer> answer </answer>.")
START_OBSERVATION = "No search made yet."


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


def parse_action(response) -> tuple[str, bool]:
    """The Search-R1/SDAR rule: valid iff exactly one of `<search>` / `<answer>` appears, opened and
    closed once, with non-empty content, and the whole reply is Latin script.

    Counting tags (instead of a regex over the whole text) keeps this linear on megabytes of
    output. Returns the canonical action string, or "" when invalid (the env then answers with the
    format reminder); reasoning outside the tags is ignored. White space inside the content is
    collapsed and the content cut to MAX_ACTION_CHARS.
    """
    if not isinstance(response, str):
        return "", False
    found = _single_tag(response)
    if found is None:
        return "", False
    tag, raw = found
    content = " ".join(raw[:4 * MAX_ACTION_CHARS].split())[:MAX_ACTION_CHARS].strip()
    if not content or not is_latin(response):
        return "", False
    return (search_action(content) if tag == "search" else answer_action(content)), True


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


def _clip(text, limit: int = MAX_OBSERVATION_CHARS) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + " ..."


def render_prompt(observation, history, info, history_length, max_steps: int = 4) -> str:
    """One user message: the question, the turn count, the last `history_length` (observation,
    action) pairs, the current observation and the output format. Never raises: every field is
    read defensively because the trainer may hand over partial dicts or odd history entries."""
    info = info if isinstance(info, dict) else {}
    question = _clip(info.get("task_description", ""), 2000)
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

    parts = ["Answer the question by searching an encyclopaedia. A search returns the top passages "
             "inside <information> </information>.",
             f"Question: {question}",
             f"Turn {min(step + 1, max_steps)} of {max_steps}."]
    if past:
        parts.append("Earlier turns:")
        first = step - len(past) + 1
        for offset, pair in enumerate(past):
            seen, action = (pair[0], pair[1]) if isinstance(pair, (tuple, list)) and len(pair) >= 2 \
                else ("", pair)
            parts.append(f"[Turn {first + offset}] Observation: {_clip(seen)}\nAction: {_clip(action, 400)}")
    parts.append(f"Current observation: {_clip(observation)}")
    instruction = ("Reason step by step inside <think> </think>. Then write exactly one action: "
                   "<search> query </search> to search, or <answer> short answer </answer> to answer "
                   "(this ends the episode).")
    if step + 1 >= max_steps:
        instruction += " This is your last turn: give your answer now."
    parts.append(instruction)
    return "\n".join(parts)
