"""The student's prompt for one ALFWorld turn and the parsing of its answer (shared by both backends).

Kept short on purpose: tiny models are trained on these prompts on a CPU, and the real benchmark's
observations are already long.
"""

from __future__ import annotations

from envs.base import parse_think_action

NOTHING = "Nothing happens."
MAX_OBSERVATION_CHARS = 2000  # a cap so a pathological observation cannot blow up the prompt


def empty_info() -> dict:
    """An `info` with every INFO_KEYS entry, for calls made before any reset."""
    return {"won": False, "score": 0.0, "admissible_actions": [], "task_description": "",
            "task_type": "", "task_id": "", "step": 0}


def _text(value, limit: int = MAX_OBSERVATION_CHARS) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def render_prompt(self, observation: str, history: list[tuple[str, str]], info: dict,
                  history_length: int) -> str:
    """One user message: task, step count, recent (observation, action) pairs, current observation,
    admissible actions and the answer format. Never raises, whatever `history` or `info` hold."""
    info = info if isinstance(info, dict) else {}
    task = _text(info.get("task_description", ""), 300)
    step = info.get("step", len(history) if isinstance(history, (list, tuple)) else 0)
    step = step if isinstance(step, int) else 0
    max_steps = getattr(self, "max_steps", 50)
    lines = [f"You are a household robot in a text world. Your task is to: {task}."]
    pairs = list(history) if isinstance(history, (list, tuple)) else []
    keep = max(0, int(history_length)) if isinstance(history_length, int) else 0
    recent = pairs[-keep:] if keep else []
    if recent:
        lines.append(f"Your last {len(recent)} step(s):")
        first = step - len(recent) + 1
        for k, pair in enumerate(recent):
            obs, act = (pair[0], pair[1]) if isinstance(pair, (list, tuple)) and len(pair) >= 2 else (pair, "")
            lines.append(f"[step {first + k}] observation: {_text(obs)}")
            lines.append(f"[step {first + k}] action: {_text(act, 200)}")
    lines.append(f"Now at step {step + 1} of {max_steps}. Observation: {_text(observation)}")
    actions = info.get("admissible_actions") or []
    if isinstance(actions, (list, tuple)) and actions:
        lines.append("Admissible actions: " + ", ".join(_text(a, 200) for a in actions) + ".")
    lines.append("Reason briefly inside <think></think>, then give exactly one admissible action inside "
                 "<action></action>.")
    return "\n".join(lines)


def parse_action(self, response: str) -> tuple[str, bool]:
    """(action, valid) by the think/action rule of `envs.base.parse_think_action`. Never raises."""
    return parse_think_action(response if isinstance(response, str) else str(response))

