"""Prompt templates: the student's user message as a plain-text file with named fields.

Each environment ships its own wording (`envs/<env>/prompt.txt`); `prompt_template=FILE` (the
`--prompt_template` flag) replaces it with a user's file, read the same way:

    the template of a turn, fields in braces: {task}, {observation}, ...
    === no history ===
    (optional) the template of a turn that shows no past steps (the first turn, or history_length 0)
    === history step ===
    (optional) how one past step is written; the shown steps are joined by newlines into {history}

- `{name}` is replaced by the field's value (values are inserted as they are, never re-read as
  templates); `{{` and `}}` write literal braces. Plain names only: no `{0}`, `{a.b}`, `{a!r}`, `{a:>5}`.
- A line that uses an *optional* field is left out when that field is empty (e.g. the history
  header on the first turn, the admissible-actions line when there are none).
- Lines are kept as written, empty ones included; only the newline that ends the file is dropped (so
  an empty line before a section header, or at the end of the file, ends that prompt with a newline).

Why files: a reproducer can put the released wording into their own file without editing code, and
the project's wording stays in one readable place. Why two template sections: verl-agent-style
prompts use one template for the first turn and another once there is history.
"""

from __future__ import annotations

import os
import re
import string

from envs.base import EnvSetupError

SECTIONS = ("prompt", "no history", "history step")
_HEADER = re.compile(r"^=== (.*) ===$")


class TemplateError(EnvSetupError, ValueError):
    """A prompt template that cannot be used (missing file, unknown field, bad braces): one line, exit 2."""


def _parse_line(line: str, allowed: tuple[str, ...], where: str) -> list[tuple[str, str | None]]:
    """[(literal text, field name or None)] of one template line; TemplateError names what is wrong."""
    try:
        pieces = list(string.Formatter().parse(line))
    except ValueError as error:
        raise TemplateError(f"{where}: {error} (write {{{{ and }}}} for literal braces)") from None
    parsed = []
    for literal, name, spec, conversion in pieces:
        if name is not None:
            if name not in allowed:
                raise TemplateError(f"{where}: unknown field {{{name}}}; this template takes "
                                    + ", ".join(f"{{{field}}}" for field in allowed))
            if spec or conversion:
                raise TemplateError(f"{where}: write the field as plain {{{name}}} (no format spec or conversion)")
        parsed.append((literal, name))
    return parsed


class PromptTemplate:
    """A parsed template file. `render` fills it; nothing in `render` can raise on odd values."""

    def __init__(self, text: str, fields: tuple[str, ...], step_fields: tuple[str, ...], optional: tuple[str, ...],
                 default_step: str | None = None, source: str = "<text>"):
        self.source, self.optional = source, frozenset(optional)
        sections: dict[str, list[str]] = {"prompt": []}
        current = "prompt"
        for line in (text[:-1] if text.endswith("\n") else text).split("\n"):
            header = _HEADER.match(line)
            if header:
                current = header.group(1).strip()
                if current not in SECTIONS or current in sections and (current != "prompt" or sections[current]):
                    raise TemplateError(f"prompt_template {source}: section '=== {current} ===' is unknown or "
                                        f"repeated; sections are {', '.join(SECTIONS)}")
                sections[current] = []
                continue
            sections[current].append(line)
        texts = {name: "\n".join(lines) for name, lines in sections.items()}
        if default_step is not None:
            texts.setdefault("history step", default_step)
        if "history step" not in texts:
            raise TemplateError(f"prompt_template {source}: no '=== history step ===' section")
        if not texts["prompt"].strip():
            raise TemplateError(f"prompt_template {source}: the template is empty")

        def parse(name: str, allowed: tuple[str, ...]) -> list[list[tuple[str, str | None]]]:
            return [_parse_line(line, allowed, f"prompt_template {source} [{name}] line {number}")
                    for number, line in enumerate(texts[name].split("\n"), start=1)]

        self.turn = parse("prompt", fields)
        self.no_history = parse("no history", fields) if "no history" in texts else None
        self.step = parse("history step", step_fields)
        self.history_step_text = texts["history step"]

    @classmethod
    def from_file(cls, path: str, fields: tuple[str, ...], step_fields: tuple[str, ...], optional: tuple[str, ...],
                  default_step: str | None = None) -> "PromptTemplate":
        path = os.path.expanduser(str(path))
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as error:
            raise TemplateError(f"prompt_template: cannot read {path!r} ({error.__class__.__name__}); give the "
                                "path of a UTF-8 text file") from None
        return cls(text, fields, step_fields, optional, default_step, source=path)

    @staticmethod
    def _fill(lines, values: dict, absent: frozenset | set) -> list[str]:
        out = []
        for pieces in lines:
            if any(name in absent for _, name in pieces):
                continue
            out.append("".join(literal + (str(values[name]) if name is not None else "") for literal, name in pieces))
        return out

    def render(self, values: dict, steps: list[dict]) -> str:
        """The prompt for `values` (every field but `history`) and the shown past `steps` (each a dict of
        step fields). `history` is filled here from the steps; an optional field that is None (or
        `history` without steps) drops its lines."""
        values = dict(values, history="\n".join("\n".join(self._fill(self.step, step, set())) for step in steps))
        absent = {name for name in self.optional if values[name] is None} | ({"history"} if not steps else set())
        lines = self.no_history if not steps and self.no_history is not None else self.turn
        return "\n".join(self._fill(lines, values, absent))


def load_template(package_dir: str, path: str | None, fields: tuple[str, ...], step_fields: tuple[str, ...],
                  optional: tuple[str, ...]) -> PromptTemplate:
    """The env's own `prompt.txt` (path None) or a user's file; a user's file without a history step
    section takes the env's own."""
    own = PromptTemplate.from_file(os.path.join(package_dir, "prompt.txt"), fields, step_fields, optional)
    if path is None:
        return own
    return PromptTemplate.from_file(path, fields, step_fields, optional, default_step=own.history_step_text)

