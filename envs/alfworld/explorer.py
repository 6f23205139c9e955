"""A searching expert for the built-in ALFWorld: acts only on what the agent itself can read.

The generator's `expert_plan` walks straight to where the object lies, which a student reading the
prompt cannot know; imitating it teaches guessing. This expert instead knows only the task sentence
(given as the `goal` dict), the admissible actions and the observations, and remembers what it saw:
it searches unvisited receptacles in random order, opens closed ones, takes the object when it shows
up, transforms it at the appliance if the task asks, and places it (or switches on the lamp).
Demonstrations from it are learnable from the prompt, which is what the embedded warm start needs.
"""

from __future__ import annotations

import random
import re

APPLIANCE = {"heat": "microwave", "cool": "fridge", "clean": "sinkbasin"}


def kind(name: str) -> str:
    """'apple 2' -> 'apple'; 'go to' targets and objects are named '<type> <number>'."""
    return name.rsplit(" ", 1)[0]


def explorer(goal: dict, rng: random.Random):
    """A policy `act(observation, info) -> action` for one episode of the task described by `goal`
    (the generator's goal dict: obj_type, recep_type, toggle_type, change, count)."""
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
