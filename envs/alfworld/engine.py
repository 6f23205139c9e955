"""Built-in ALFWorld: a pure-Python household text game with ALFWorld 0.4.2's surface text and
admissible-command rules, over tasks from `envs.alfworld.generator`.

Why a re-implementation: the real benchmark needs the `alfworld` package, downloaded game files and
20-40 ms per step; this engine needs nothing and steps in microseconds, so tiny models can be trained
on a CPU. The rules mirror the real PDDL domain as played by TextWorld (checked by
`tests/test_alfworld_parity.py` on exported games):

- `go to R` for every receptacle except the one the agent is at; `examine R`, `open R` / `close R`
  for the receptacle it is at;
- `take O from R` when the hands are empty and R is open (or cannot be opened); `move O to R` when R
  is open and can hold O's type; one object held at a time;
- `heat/cool/clean O with R` while holding O at a microwave / fridge / sinkbasin (closed is fine);
- `use L` for a lamp on the receptacle the agent is at; `examine O` only for the held object;
- `inventory`, `look` always. Anything else answers "Nothing happens." and changes nothing.
"""

from __future__ import annotations

import random

from envs.alfworld import prompts, skill_category
from envs.alfworld.catalog import can_contain
from envs.alfworld.generator import PRIOR_STRENGTH, ROOM_SIZES, SPLIT_SIZES, Game, check_prior_strength, generate_game
from envs.base import check_switches

WELCOME = "-= Welcome to TextWorld, ALFRED! =-"
NOTHING = prompts.NOTHING
HELP_TEXT = ("Commands: look, inventory, go to (receptacle), open (receptacle), close (receptacle), "
             "take (object) from (receptacle), move (object) to (receptacle), examine (something), "
             "use (object), heat/cool/clean (object) with (receptacle).")
APPLIANCE_CHANGE = {"Microwave": "heat", "Fridge": "cool", "SinkBasin": "clean"}


def list_text(names: list[str]) -> str:
    """ALFWorld's list style: 'nothing', 'a x', 'a x, and a y', 'a x, a y, and a z'."""
    if not names:
        return "nothing"
    phrases = [f"a {n}" for n in names]
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + ", and " + phrases[-1]


class BuiltinAlfWorld:
    """One ALFWorld-style episode at a time; see the module docstring for the rules.

    kwargs: `max_steps` (50), `room_size` ("full" about 20 admissible commands per step, or
    "small"), `num_receptacles` / `num_distractors` (int or inclusive (lo, hi), override the preset),
    `split_sizes` (dict split -> number of distinct tasks; default the real benchmark's 3553/140/134),
    `task_types` (a subset of the six, e.g. for a curriculum or the CPU-sized embedded default),
    `prior_strength` (the probability that an object starts where things are usually left, the
    habit the skills state; 0.8 by default, null = uniform placement): how reliable the skills are,
    and the prompt switches every env takes: `prompt_template` (a template file, see
    `envs.templates`; None = `envs/alfworld/prompt.txt`), `clip_observations` (True: long texts are
    cut, 2,000 characters per observation; False: nothing is cut, as released), `action_parse`
    ("project" or "released", see `envs.alfworld.prompts.parse_action`).
    """

    name = "alfworld"

    def __init__(self, max_steps: int = 50, room_size: str = "full", num_receptacles=None,
                 num_distractors=None, split_sizes: dict | None = None, task_types=None,
                 prior_strength: float | None = PRIOR_STRENGTH, prompt_template: str | None = None,
                 clip_observations: bool = True, action_parse: str = "project"):
        check_switches(action_parse, clip_observations)
        if room_size not in ROOM_SIZES:
            raise ValueError(f"room_size={room_size!r} is unknown; choose one of {', '.join(ROOM_SIZES)}")
        check_prior_strength(prior_strength)
        self.prior_strength = prior_strength
        self.max_steps = int(max_steps)
        self.room_size = room_size
        self.num_receptacles = num_receptacles
        self.num_distractors = num_distractors
        self.split_sizes = dict(SPLIT_SIZES, **(split_sizes or {}))
        self.task_types = tuple(task_types) if task_types else None
        self.clip_observations, self.action_parse = clip_observations, action_parse
        self.template = prompts.get_template(prompt_template)
        self.game: Game | None = None

    def num_tasks(self, split: str) -> int:
        """Distinct tasks of a split (task_index 0..num_tasks-1)."""
        return self.split_sizes[split]

    # ---- episode -------------------------------------------------------------------------------
    def reset(self, seed: int, split: str = "train", task_index: int | None = None) -> tuple[str, dict]:
        if split not in self.split_sizes:
            raise ValueError(f"split={split!r} is unknown; choose one of {', '.join(self.split_sizes)}")
        size = self.split_sizes[split]
        if task_index is None:
            task_index = random.Random(seed).randrange(size)
        self.game = generate_game(split, int(task_index) % size, self.room_size,
                                  self.num_receptacles, self.num_distractors, self.task_types, self.prior_strength)
        g = self.game
        self._at = None                                   # receptacle index, None = middle of the room
        self._where = [item.start for item in g.items]    # receptacle index, None = in the hands
        self._held = None
        self._opened: set[int] = set()
        self._hot: set[int] = set()
        self._cool: set[int] = set()
        self._clean: set[int] = set()
        self._toggled: set[int] = set()
        self._steps = 0
        self._won = False
        self._done = False
        self._refresh_commands()
        obs = f"{WELCOME}\n\n{self._look()}\n\nYour task is to: {g.task_text}."
        return obs, self._info()

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        if self.game is None:
            return NOTHING, 0.0, True, prompts.empty_info()
        if self._done:
            return NOTHING, 0.0, True, self._info()
        self._steps += 1
        command = action.strip() if isinstance(action, str) else ""
        entry = self._commands.get(command)
        if entry is not None:
            obs = getattr(self, "_do_" + entry[0])(*entry[1:])
        else:
            obs = HELP_TEXT if command == "help" else NOTHING
        self._won = self._goal_holds()
        self._done = self._won or self._steps >= self.max_steps
        self._refresh_commands()
        return obs, (10.0 if self._won else 0.0), self._done, self._info()

    def privileged(self) -> dict:
        g = self.game
        if g is None:
            return {}
        return {
            "task_type": g.task_type,
            "skill_category": skill_category(g.task_text),
            "expert_plan": list(g.expert_plan),
            "goal": dict(g.goal),
            "target_objects": [g.items[t].name for t in g.targets],
            "target_start": {g.items[t].name: g.receptacles[g.items[t].start].name for t in g.targets},
            "room": g.room,
            "floorplan": g.floorplan,
        }

    def admissible_actions(self) -> list[str]:
        return sorted(self._commands)

    render_prompt = prompts.render_prompt
    parse_action = prompts.parse_action

    # ---- state views ---------------------------------------------------------------------------
    def _info(self) -> dict:
        g = self.game
        return {"won": self._won, "score": 1.0 if self._won else 0.0,
                "admissible_actions": self.admissible_actions(), "task_description": g.task_text,
                "task_type": g.task_type, "task_id": g.task_id, "step": self._steps}

    def _contents(self, r: int) -> list[int]:
        return [i for i, where in enumerate(self._where) if where == r]

    def _visible(self, r: int) -> bool:
        return not self.game.receptacles[r].openable or r in self._opened

    def _refresh_commands(self) -> None:
        """Every admissible command mapped to the handler and arguments it runs (as TextWorld does:
        a command acts if and only if it is admissible)."""
        g, at, held = self.game, self._at, self._held
        cmds = {"look": ("look",), "inventory": ("inventory",)}
        for r, rec in enumerate(g.receptacles):
            if r != at:
                cmds[f"go to {rec.name}"] = ("goto", r)
        if at is not None:
            rec = g.receptacles[at]
            cmds[f"examine {rec.name}"] = ("examine_receptacle", at)
            if rec.openable:
                verb = "close" if at in self._opened else "open"
                cmds[f"{verb} {rec.name}"] = (verb, at)
            for i in self._contents(at):
                item = g.items[i]
                if item.lamp:
                    cmds[f"use {item.name}"] = ("use", i)
                elif held is None and self._visible(at):
                    cmds[f"take {item.name} from {rec.name}"] = ("take", i, at)
            if held is not None:
                item = g.items[held]
                if self._visible(at) and can_contain(rec.rtype, item.otype):
                    cmds[f"move {item.name} to {rec.name}"] = ("move", held, at)
                change = APPLIANCE_CHANGE.get(rec.rtype)
                if change in item.changes:
                    cmds[f"{change} {item.name} with {rec.name}"] = (change, held, at)
        if held is not None:
            cmds[f"examine {g.items[held].name}"] = ("examine_object", held)
        self._commands = cmds

    def _goal_holds(self) -> bool:
        g, goal = self.game, self.game.goal
        if goal["toggle_type"]:
            lit = any(i in self._toggled and self._where[i] == self._at and self._at is not None
                      and g.items[i].otype == goal["toggle_type"] for i in range(len(g.items)))
            return lit and self._held is not None and g.items[self._held].otype == goal["obj_type"]
        changed = {"heat": self._hot, "cool": self._cool, "clean": self._clean}.get(goal["change"])
        per_receptacle: dict[int, int] = {}
        for i, item in enumerate(g.items):
            r = self._where[i]
            if (item.otype == goal["obj_type"] and r is not None and g.receptacles[r].rtype == goal["recep_type"]
                    and (changed is None or i in changed)):
                per_receptacle[r] = per_receptacle.get(r, 0) + 1
        return any(n >= goal["count"] for n in per_receptacle.values())

    # ---- texts and handlers --------------------------------------------------------------------
    def _look(self) -> str:
        if self._at is None:
            names = [r.name for r in self.game.receptacles]
            return f"You are in the middle of a room. Looking quickly around you, you see {list_text(names)}."
        return f"You are facing the {self.game.receptacles[self._at].name}. Next to it, you see nothing."

    def _describe(self, r: int) -> str:
        rec = self.game.receptacles[r]
        names = [self.game.items[i].name for i in sorted(self._contents(r), key=lambda i: self.game.items[i].uid.lower())]
        if rec.openable and r not in self._opened:
            return f"The {rec.name} is closed."
        if rec.openable:
            return f"The {rec.name} is open. In it, you see {list_text(names)}."
        return f"On the {rec.name}, you see {list_text(names)}."

    def _do_look(self) -> str:
        if self._at is None:
            # TextWorld binds the room listing to the agent's own spot here, where no receptacle stands
            return "You are in the middle of a room. Looking quickly around you, you see nothing."
        return self._look()

    def _do_inventory(self) -> str:
        if self._held is None:
            return "You are not carrying anything."
        return f"You are carrying: a {self.game.items[self._held].name}."

    def _do_goto(self, r: int) -> str:
        self._at = r
        return f"You arrive at {self.game.receptacles[r].name}. {self._describe(r)}"

    def _do_examine_receptacle(self, r: int) -> str:
        return self._describe(r)

    def _do_open(self, r: int) -> str:
        self._opened.add(r)
        return f"You open the {self.game.receptacles[r].name}. {self._describe(r)}"

    def _do_close(self, r: int) -> str:
        self._opened.discard(r)
        return f"You close the {self.game.receptacles[r].name}."

    def _do_take(self, i: int, r: int) -> str:
        self._where[i], self._held = None, i
        return f"You pick up the {self.game.items[i].name} from the {self.game.receptacles[r].name}."

    def _do_move(self, i: int, r: int) -> str:
        self._where[i], self._held = r, None
        return f"You move the {self.game.items[i].name} to the {self.game.receptacles[r].name}."

    def _do_heat(self, i: int, r: int) -> str:
        self._hot.add(i)
        self._cool.discard(i)
        return f"You heat the {self.game.items[i].name} using the {self.game.receptacles[r].name}."

    def _do_cool(self, i: int, r: int) -> str:
        self._cool.add(i)
        self._hot.discard(i)
        return f"You cool the {self.game.items[i].name} using the {self.game.receptacles[r].name}."

    def _do_clean(self, i: int, r: int) -> str:
        self._clean.add(i)
        return f"You clean the {self.game.items[i].name} using the {self.game.receptacles[r].name}."

    def _do_use(self, i: int) -> str:
        self._toggled.add(i)  # ALFWorld's lamp stays "toggled" once used, and always says it turns on
        return f"You turn on the {self.game.items[i].name}."

    def _do_examine_object(self, i: int) -> str:
        name = self.game.items[i].name
        hot, cool, clean = i in self._hot, i in self._cool, i in self._clean
        if clean and hot:
            return f"This is a hot and clean {name}."
        if clean and cool:
            return f"This is a cool and clean {name}."
        if hot:
            return f"This is a hot {name}."
        if clean:
            return f"This is a clean {name}."
        if cool:
            return f"This is a cold {name}."
        return f"There's nothing special about {name}."
