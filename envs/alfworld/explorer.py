"""A searching expert for the built-in ALFWorld: acts only on what the agent itself can read.

The generator's `expert_plan` walks straight to where the object lies, which a student reading the
prompt cannot know; imitating it teaches guessing. This expert instead knows only the task sentence
(given as the `goal` dict), the admissible actions and the observations, and remembers what it saw:
it searches unvisited receptacles in random order, opens closed ones, takes the object when it shows
up, transforms it at the appliance if the task asks, and places it (or switches on the lamp).
Demonstrations from it are learnable from the prompt, which is what the embedded warm start needs.

With `follow_habits=True` it also knows where things are usually left (`catalog.usual_place`, the
habit the skill files state) and searches the usual place first: that is the expert a teacher who
reads the skills can imitate; without it the search order is random, the expert of a student who
was never told the habit.
"""

from __future__ import annotations

import random
import re

from envs.alfworld.catalog import ROOM_RECEPTACLES, usual_place

APPLIANCE = {"heat": "microwave", "cool": "fridge", "clean": "sinkbasin"}


def kind(name: str) -> str:
    """'apple 2' -> 'apple'; 'go to' targets and objects are named '<type> <number>'."""
    return name.rsplit(" ", 1)[0]


RECEPTACLE_TYPES = {t.lower(): t for spec in ROOM_RECEPTACLES.values()
                    for t, *_ in spec["required"] + spec["optional"]}   # 'countertop' -> 'CounterTop'


def usual_kind(target_type: str, room_kinds: set[str], avoid: str = "") -> str | None:
    """The receptacle kind ('countertop') where an object or lamp of `target_type` ('Apple',
    'DeskLamp') is usually left, among the kinds the room has (not `avoid`, the task's destination);
    None when the room has none that fits."""
    usual = usual_place(target_type, {RECEPTACLE_TYPES[k] for k in room_kinds if k in RECEPTACLE_TYPES},
                        RECEPTACLE_TYPES.get(avoid))
    return usual.lower() if usual else None


def explorer(goal: dict, rng: random.Random, follow_habits: bool = False):
    """A policy `act(observation, info) -> action` for one episode of the task described by `goal`
    (the generator's goal dict: obj_type, recep_type, toggle_type, change, count); with
    `follow_habits` unvisited places of the usual kind come first in its search."""
    obj, dest = goal["obj_type"].lower(), (goal["recep_type"] or "").lower()
    lamp, change = (goal["toggle_type"] or "").lower(), goal["change"]
    wanted = re.compile(rf"\b((?:{re.escape(obj)}|{re.escape(lamp or obj)}) \d+)")
    memory = {"at": None, "held": None, "changed": False, "dest": None}
    placed: list[str] = []
    visited: set[str] = set()
    seen: dict[str, str] = {}  # object name -> receptacle where it was last seen

    def go(target: str) -> str:
        memory["at"] = target
        visited.add(target)
        return f"go to {target}"

    def go_to_kind(receptacle_kind: str, places: list[str]) -> str:
        """Any receptacle of that kind; the destination, once chosen, stays (two-object tasks)."""
        if receptacle_kind == dest and memory["dest"] is not None:
            return go(memory["dest"])
        choice = rng.choice([p for p in places if kind(p) == receptacle_kind] or places)
        if receptacle_kind == dest:
            memory["dest"] = choice
        return go(choice)

    def search(target_kind: str, places: list[str]) -> str:
        known = [where for name, where in seen.items()
                 if kind(name) == target_kind and name not in placed and where != memory["at"] and where in places]
        if known:
            return go(known[0])
        fresh = [p for p in places if p not in visited and (target_kind == lamp or kind(p) != dest)]
        if follow_habits:
            room = {kind(p) for p in places} | ({kind(memory["at"])} if memory["at"] else set())
            target_type = goal["toggle_type"] if target_kind == lamp else goal["obj_type"]
            usual = usual_kind(target_type, room, "" if target_kind == lamp else dest)
            fresh = [p for p in fresh if kind(p) == usual] or fresh
        return go(rng.choice(fresh or places))

    def act(observation: str, info: dict) -> str:
        actions = info.get("admissible_actions") or []
        at, held = memory["at"], memory["held"]
        for name in wanted.findall(observation):
            if at is not None and name != held:
                seen[name] = at
        places = [a[len("go to "):] for a in actions if a.startswith("go to ")]
        if held is not None:
            if change and not memory["changed"]:
                done = [a for a in actions if a.startswith(f"{change} {held} with ")]
                if done:
                    memory["changed"] = True
                    return done[0]
                return go_to_kind(APPLIANCE[change], places)
            if lamp:
                use = [a for a in actions if a.startswith("use ") and kind(a[4:]) == lamp]
                return use[0] if use else search(lamp, places)
            move = [a for a in actions if a.startswith(f"move {held} to ") and kind(a.rsplit(" to ", 1)[1]) == dest]
            if move:
                placed.append(held)
                memory["held"] = None
                memory["dest"] = move[0].rsplit(" to ", 1)[1]
                return move[0]
            if at is not None and kind(at) == dest and f"open {at}" in actions:   # admissible only while closed
                return f"open {at}"
            return go_to_kind(dest, places)
        take = [a for a in actions if a.startswith("take ")
                and kind(a[5:].split(" from ")[0]) == obj and a[5:].split(" from ")[0] not in placed
                and kind(a.rsplit(" from ", 1)[1]) != dest]
        if take:
            memory["held"] = take[0][5:].split(" from ")[0]
            seen.pop(memory["held"], None)
            return take[0]
        if at is not None and f"open {at}" in actions:
            return f"open {at}"
        return search(obj, places) if places else "look"

    return act
