"""Seeded generator of ALFWorld-style household tasks.

A task is fully determined by (split, task index, room-size settings): the index picks a task type,
a room (ALFRED floor plan number) allowed for the split, the target object and receptacle, and where
every object starts. Rooms are fixed per floor plan (same furniture in every task of that room), as in
ALFRED; `valid_unseen` only uses held-out floor plans. The expert plan is written while the task is
built, so it is known without a planner.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache

from envs.alfworld import catalog

SPLIT_SIZES = {"train": 3553, "valid_seen": 140, "valid_unseen": 134}  # the real benchmark's counts
TASK_TYPES = tuple(catalog.TASK_TEMPLATES)

# How often an object (and a lamp) starts at its usual place (`catalog.usual_place`, the habit the
# skill files state): 0.8, usually right. None places everything uniformly at random.
PRIOR_STRENGTH = 0.8


def check_prior_strength(value) -> None:
    """A clear error for a prior strength that is not None or a number in [0, 1]."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1):
        raise ValueError(f"prior_strength={value!r} must be a number in [0, 1] (or null for uniform placement)")


# Presets of room size: receptacles per room and distractor objects per task (inclusive ranges).
# "full" gives about 20 admissible commands per step like ALFWorld; "small" is for tiny CPU models.
ROOM_SIZES = {
    "full": {"receptacles": (12, 26), "distractors": (8, 16)},
    "small": {"receptacles": (4, 6), "distractors": (1, 3)},
}


@dataclass(frozen=True)
class Receptacle:
    name: str       # what the agent reads: "cabinet 3"
    rtype: str      # ALFRED type: "Cabinet"
    uid: str        # ALFRED-style mangled id, used by the exporter and for listing order
    openable: bool


@dataclass(frozen=True)
class Item:
    name: str       # "apple 2"
    otype: str      # "Apple"
    uid: str
    start: int      # index of the receptacle it starts in
    changes: frozenset = frozenset()  # subset of {"heat", "cool", "clean"}
    lamp: bool = False                # lamps are switched on with `use` and cannot be taken


@dataclass(frozen=True)
class Game:
    task_id: str
    split: str
    index: int
    task_type: str
    room: str
    floorplan: int
    receptacles: tuple[Receptacle, ...]
    items: tuple[Item, ...]
    goal: dict                      # obj_type, recep_type (or None), toggle_type (or None), change, count
    task_text: str                  # "put a hot apple in diningtable"
    expert_plan: tuple[str, ...]
    targets: tuple[int, ...] = field(default=())  # item indices the expert plan moves


def _count_range(value, default):
    """Accept an int or an inclusive (lo, hi) pair; None keeps the preset."""
    if value is None:
        return tuple(default)
    if isinstance(value, int):
        return (value, value)
    lo, hi = value
    return (int(lo), int(hi))


def _mangle(prefix: str, number: int, rng: random.Random, suffix: str = "") -> str:
    """An id in ALFRED's mangled style ("Apple|+01.20|..." with | . + - spelled out).

    ALFWorld numbers the instances of one name in *reverse* sorted-id order, so instance k gets a
    first coordinate that sorts before instance k-1; that keeps "apple 1" the same object in the
    built-in engine and in the real engine playing an exported game.
    """
    coords = [f"_plus_{99 - number:02d}_dot_{rng.randrange(100):02d}",
              f"_plus_{rng.randrange(3):02d}_dot_{rng.randrange(100):02d}",
              f"_minus_{rng.randrange(10):02d}_dot_{rng.randrange(100):02d}"]
    uid = prefix + "".join("_bar_" + c for c in coords)
    return uid + ("_bar_" + suffix if suffix else "")


def _receptacle_uid(rtype: str, number: int, rng: random.Random) -> str:
    # ALFRED names a sink basin after its sink ("Sink|...|SinkBasin"); ALFWorld shows it as "sinkbasin".
    if rtype.endswith("Basin"):
        return _mangle(rtype[: -len("Basin")], number, rng, suffix=rtype)
    return _mangle(rtype, number, rng)


@lru_cache(maxsize=512)
def room_layout(floorplan: int, room: str, lo: int, hi: int,
                prior_strength: float | None = None) -> tuple[tuple[tuple[str, int], ...], tuple[str, str]]:
    """The furniture of one floor plan: ((type, count), ...) and, for rooms with a lamp,
    (lamp type, holder type); the same every time for the same floor plan, size range and prior
    strength (the lamp stands at its usual holder with that probability, see `follow_prior`)."""
    rng = random.Random(f"alfworld-layout/{floorplan}/{lo}/{hi}")
    spec = catalog.ROOM_RECEPTACLES[room]
    counts = {rtype: rng.randint(cmin, cmax) for rtype, cmin, cmax in spec["required"]}
    target = rng.randint(lo, hi)
    optional = list(spec["optional"])
    while sum(counts.values()) < target:
        open_slots = [(t, w) for t, most, w in optional if counts.get(t, 0) < most]
        if not open_slots:
            break
        rtype = rng.choices([t for t, _ in open_slots], weights=[w for _, w in open_slots])[0]
        counts[rtype] = counts.get(rtype, 0) + 1
    lamp = ("", "")
    if room in ("livingroom", "bedroom"):
        lamp_type = rng.choice(catalog.LAMPS)
        holders = [t for t in catalog.LAMP_HOLDERS if t in counts]
        lamp = (lamp_type, follow_prior(rng, lamp_type, holders, lambda t: t, prior_strength))
    return tuple(sorted(counts.items())), lamp


def follow_prior(rng: random.Random, otype: str, candidates: list, rtype_of, prior_strength: float | None):
    """Pick where an object of `otype` starts among `candidates` (receptacle indices or types).

    With `prior_strength` p: at its usual place (`catalog.usual_place` among the candidates' types)
    with probability p, elsewhere with probability 1 - p; when only one of the two exists, there.
    None: uniformly at random, ignoring the habits (the generator before priors existed)."""
    if prior_strength is None:
        return rng.choice(candidates)
    usual = catalog.usual_place(otype, {rtype_of(c) for c in candidates})
    at_usual = [c for c in candidates if rtype_of(c) == usual]
    elsewhere = [c for c in candidates if rtype_of(c) != usual]
    follow = rng.random() < prior_strength
    return rng.choice(at_usual if (follow and at_usual) or not elsewhere else elsewhere)


def _floorplans(split: str, room: str) -> list[int]:
    plans = catalog.FLOORPLANS[room]
    if split == "valid_unseen":
        return [p for p in plans if p in catalog.UNSEEN_FLOORPLANS]
    return [p for p in plans if p not in catalog.UNSEEN_FLOORPLANS]


def _pick_target(rng, task_type, room, recep_types):
    """All (object type, destination type) pairs that make a solvable, not-yet-solved task; one drawn."""
    change = catalog.TASK_CHANGE.get(task_type, (None, None))
    options = []
    for obj in catalog.objects_of_room(room):
        holders = [t for t in recep_types if catalog.can_contain(t, obj)]
        if not holders or (change[0] and change[0] not in catalog.object_changes(obj)):
            continue
        if task_type == "look_at_obj_in_light":
            options.append((obj, None))
            continue
        for dst in holders:
            # the object must be able to start somewhere else, and the appliance is not a destination
            if dst != change[1] and any(t != dst for t in holders):
                options.append((obj, dst))
    return rng.choice(options) if options else None


def generate_game(split: str, index: int, room_size: str = "full", num_receptacles=None,
                  num_distractors=None, task_types=None, prior_strength: float | None = PRIOR_STRENGTH) -> Game:
    """Build task `index` of `split` (deterministic). Validation splits cycle through the six task
    types by index, so any run of consecutive indices (a fixed eval panel) is balanced; train draws
    the type at random. kwargs as in `BuiltinAlfWorld`."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"split={split!r} is unknown; choose one of {', '.join(SPLIT_SIZES)}")
    if room_size not in ROOM_SIZES:
        raise ValueError(f"room_size={room_size!r} is unknown; choose one of {', '.join(ROOM_SIZES)}")
    check_prior_strength(prior_strength)
    preset = ROOM_SIZES[room_size]
    r_lo, r_hi = _count_range(num_receptacles, preset["receptacles"])
    d_lo, d_hi = _count_range(num_distractors, preset["distractors"])
    rng = random.Random(f"alfworld-task/{split}/{index}/{r_lo}-{r_hi}/{d_lo}-{d_hi}")
    types = tuple(task_types) if task_types else TASK_TYPES
    unknown = sorted(set(types) - set(TASK_TYPES))
    if unknown:
        raise ValueError(f"task_types {unknown} unknown; choose from {', '.join(TASK_TYPES)}")
    task_type = types[index % len(types)] if split != "train" else rng.choice(types)
    while True:  # redraw the room until the task type fits (rare with tiny rooms)
        room = rng.choice(catalog.TASK_ROOMS[task_type])
        floorplan = rng.choice(_floorplans(split, room))
        layout, (lamp_type, lamp_holder) = room_layout(floorplan, room, r_lo, r_hi, prior_strength)
        target = _pick_target(rng, task_type, room, [t for t, _ in layout])
        if target is not None:
            break
    obj_type, dst_type = target

    id_rng = random.Random(f"alfworld-ids/{floorplan}")
    receptacles = [Receptacle(f"{rtype.lower()} {k}", rtype, _receptacle_uid(rtype, k, id_rng),
                              rtype in catalog.OPENABLE)
                   for rtype, count in layout for k in range(1, count + 1)]
    # ALFWorld lists entities sorted by their lower-cased id
    receptacles.sort(key=lambda r: r.uid.lower())

    def spots(otype, avoid=None):
        return [i for i, r in enumerate(receptacles) if catalog.can_contain(r.rtype, otype) and r.rtype != avoid]

    def place(otype, avoid=None):
        return follow_prior(rng, otype, spots(otype, avoid), lambda i: receptacles[i].rtype, prior_strength)

    placements = []  # (type, receptacle index, lamp?)
    if lamp_type:
        holder = rng.choice([i for i, r in enumerate(receptacles) if r.rtype == lamp_holder])
        placements.append((lamp_type, holder, True))
    n_targets = rng.randint(2, 3) if task_type == "pick_two_obj_and_place" else rng.randint(1, 2)
    first_target = len(placements)
    for _ in range(n_targets):
        placements.append((obj_type, place(obj_type, avoid=dst_type), False))
    others = [t for t in catalog.objects_of_room(room) if t != obj_type and spots(t)]
    for _ in range(rng.randint(d_lo, d_hi) if others else 0):
        otype = rng.choice(others)
        placements.append((otype, place(otype), False))

    numbers: dict[str, int] = {}
    items = []
    for otype, where, is_lamp in placements:
        numbers[otype] = numbers.get(otype, 0) + 1
        k = numbers[otype]
        items.append(Item(f"{otype.lower()} {k}", otype, _mangle(otype, k, id_rng), where,
                          catalog.object_changes(otype), is_lamp))

    change, appliance_type = catalog.TASK_CHANGE.get(task_type, (None, None))
    n_moved = 2 if task_type == "pick_two_obj_and_place" else 1
    targets = tuple(range(first_target, first_target + n_moved))
    is_look = task_type == "look_at_obj_in_light"
    goal = {"obj_type": obj_type, "recep_type": dst_type, "toggle_type": lamp_type if is_look else None,
            "change": change, "count": n_moved}
    template = rng.choice(catalog.TASK_TEMPLATES[task_type])
    task_text = template.format(obj=obj_type.lower(), recep=(dst_type or "").lower(),
                                toggle=lamp_type.lower())
    plan = _expert_plan(task_type, receptacles, items, targets, rng, dst_type, appliance_type, change)
    return Game(task_id=f"{split}/{index:05d}", split=split, index=index, task_type=task_type, room=room,
                floorplan=floorplan, receptacles=tuple(receptacles), items=tuple(items), goal=goal,
                task_text=task_text, expert_plan=tuple(plan), targets=targets)


def _expert_plan(task_type, receptacles, items, targets, rng, dst_type, appliance_type, change):
    """The shortest natural plan: fetch each target, transform it, then place it (or light it)."""
    plan: list[str] = []
    at = [None]
    opened: set[int] = set()

    def go(r):
        if at[0] != r:
            plan.append(f"go to {receptacles[r].name}")
            at[0] = r
        if receptacles[r].openable and r not in opened:
            plan.append(f"open {receptacles[r].name}")
            opened.add(r)

    def first_of(rtype):
        return next(i for i, r in enumerate(receptacles) if r.rtype == rtype)

    dst = rng.choice([i for i, r in enumerate(receptacles) if r.rtype == dst_type]) if dst_type else None
    for t in targets:
        obj = items[t]
        go(obj.start)
        plan.append(f"take {obj.name} from {receptacles[obj.start].name}")
        if change:
            appliance = first_of(appliance_type)
            if at[0] != appliance:  # heating/cooling/cleaning works on a closed appliance too
                plan.append(f"go to {receptacles[appliance].name}")
                at[0] = appliance
            plan.append(f"{change} {obj.name} with {receptacles[appliance].name}")
        if task_type == "look_at_obj_in_light":
            lamp = next(i for i in items if i.lamp)
            go(lamp.start)
            plan.append(f"use {lamp.name}")
        else:
            go(dst)
            plan.append(f"move {obj.name} to {receptacles[dst].name}")
    return plan
