"""ALFWorld: household tasks in text (go to, open, take, heat/cool/clean, move, use a lamp).

Backends: `envs.alfworld.engine.BuiltinAlfWorld` (pure Python, no download) and
`envs.alfworld.real.RealAlfWorld` (the `alfworld` package's TextWorld engine over `$ALFWORLD_DATA`).
`envs.alfworld.export` writes built-in tasks as real ALFWorld game files.

This module stays cheap to import: only the keyword rules that pick the teacher's skill file live here.
"""

from __future__ import annotations

import re

SKILL_CATEGORIES = ("pick_and_place", "look_in_light", "clean", "heat", "cool")

# ALFWorld task type -> skill category (two-object placing shares the pick-and-place skills).
TASK_TYPE_CATEGORY = {
    "pick_and_place_simple": "pick_and_place",
    "look_at_obj_in_light": "look_in_light",
    "pick_clean_then_place_in_recep": "clean",
    "pick_heat_then_place_in_recep": "heat",
    "pick_cool_then_place_in_recep": "cool",
    "pick_two_obj_and_place": "pick_and_place",
}

# Checked in this order; the first rule whose words occur in the task text wins. Appliance names
# (microwave, fridge, sinkbasin) are deliberately not keywords: "put a mug in microwave" is plain
# pick-and-place.
_RULES = (
    ("look_in_light", r"\b(desklamp|floorlamp|lamp|light|look at)\b"),
    ("clean", r"\b(clean|cleaned|rinse|rinsed|wash|washed)\b"),
    ("heat", r"\b(hot|heat|heated|warm|warmed)\b"),
    ("cool", r"\b(cool|cooled|cold|chill|chilled)\b"),
)


def skill_category(task_description: str) -> str:
    """Map an ALFWorld task sentence to one of SKILL_CATEGORIES by keywords (the paper's "KM" rule)."""
    text = str(task_description).lower()
    for category, pattern in _RULES:
        if re.search(pattern, text):
            return category
    return "pick_and_place"
