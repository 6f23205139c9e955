"""The household vocabulary of the built-in ALFWorld engine: object types, receptacle types, which
receptacle may hold which object, and which room kinds they appear in.

The facts (what fits where, what can be heated, cooled or cleaned, which receptacles open) follow
ALFRED's tables as shipped in `alfworld.gen.constants`, restricted to the types used here, so a game
exported from this engine behaves the same in the real TextWorld engine. Type names keep ALFRED's
CamelCase spelling; the text the agent reads is the lower-cased type plus an instance number
("CounterTop" -> "countertop 1").
"""

from __future__ import annotations

ROOM_KINDS = ("kitchen", "livingroom", "bedroom", "bathroom")

# ALFRED numbers its rooms: kitchens 1-30, living rooms 201-230, bedrooms 301-330, bathrooms 401-430.
FLOORPLANS = {
    "kitchen": tuple(range(1, 31)),
    "livingroom": tuple(range(201, 231)),
    "bedroom": tuple(range(301, 331)),
    "bathroom": tuple(range(401, 431)),
}
# Rooms never seen in training; valid_unseen draws only from these (ALFRED's unseen rooms are
# FloorPlan10/219/308/424, we hold out one more of each kind for variety).
UNSEEN_FLOORPLANS = frozenset({10, 20, 219, 224, 308, 318, 424, 428})

# Object type -> (state changes it supports, room kinds it shows up in, receptacle types that hold it).
OBJECTS = {
    "Apple": ("heat cool clean", "kitchen", "CounterTop Fridge Microwave SinkBasin DiningTable GarbageCan CoffeeTable SideTable"),
    "Bread": ("heat cool", "kitchen", "CounterTop Fridge Microwave DiningTable GarbageCan CoffeeTable SideTable"),
    "Egg": ("heat cool clean", "kitchen", "CounterTop Fridge Microwave SinkBasin DiningTable GarbageCan CoffeeTable SideTable"),
    "Potato": ("heat cool clean", "kitchen", "CounterTop Fridge Microwave SinkBasin DiningTable GarbageCan CoffeeTable SideTable"),
    "Tomato": ("heat cool clean", "kitchen", "CounterTop Fridge Microwave SinkBasin DiningTable GarbageCan CoffeeTable SideTable"),
    "Lettuce": ("cool clean", "kitchen", "CounterTop Fridge SinkBasin DiningTable GarbageCan CoffeeTable SideTable"),
    "Mug": ("heat cool clean", "kitchen bedroom", "Cabinet CounterTop Fridge Microwave SinkBasin DiningTable CoffeeMachine Shelf CoffeeTable SideTable Dresser Desk Cart"),
    "Cup": ("heat cool clean", "kitchen", "Cabinet CounterTop Fridge Microwave SinkBasin DiningTable Shelf CoffeeTable SideTable Dresser Desk"),
    "Plate": ("heat cool clean", "kitchen livingroom", "Cabinet CounterTop Fridge Microwave SinkBasin DiningTable Shelf CoffeeTable SideTable Dresser Desk"),
    "Bowl": ("cool clean", "kitchen livingroom", "Cabinet CounterTop Fridge Microwave SinkBasin DiningTable Shelf CoffeeTable SideTable Dresser Desk"),
    "Pan": ("cool clean", "kitchen", "Cabinet CounterTop Fridge SinkBasin StoveBurner DiningTable CoffeeTable SideTable"),
    "Pot": ("cool clean", "kitchen", "Cabinet CounterTop Fridge SinkBasin StoveBurner DiningTable Shelf CoffeeTable SideTable"),
    "Fork": ("clean", "kitchen", "Drawer CounterTop SinkBasin DiningTable CoffeeTable SideTable"),
    "Spoon": ("clean", "kitchen", "Drawer CounterTop SinkBasin DiningTable CoffeeTable SideTable"),
    "Knife": ("clean", "kitchen", "Drawer CounterTop SinkBasin DiningTable CoffeeTable SideTable"),
    "ButterKnife": ("clean", "kitchen", "Drawer CounterTop SinkBasin DiningTable CoffeeTable SideTable"),
    "Spatula": ("clean", "kitchen", "Drawer CounterTop SinkBasin DiningTable CoffeeTable SideTable"),
    "Ladle": ("clean", "kitchen", "Cabinet Drawer CounterTop SinkBasin DiningTable CoffeeTable SideTable"),
    "Kettle": ("clean", "kitchen", "Cabinet CounterTop SinkBasin StoveBurner DiningTable Shelf CoffeeTable SideTable"),
    "DishSponge": ("clean", "kitchen bathroom", "Cabinet Drawer CounterTop SinkBasin DiningTable GarbageCan Shelf CoffeeTable SideTable Toilet BathtubBasin Cart"),
    "SaltShaker": ("", "kitchen", "Cabinet Drawer CounterTop DiningTable Shelf CoffeeTable SideTable"),
    "PepperShaker": ("", "kitchen", "Cabinet Drawer CounterTop DiningTable Shelf CoffeeTable SideTable"),
    "SoapBottle": ("", "kitchen bathroom", "Cabinet Drawer CounterTop DiningTable GarbageCan Shelf CoffeeTable SideTable Desk Toilet Cart"),
    "WineBottle": ("cool", "kitchen", "Cabinet CounterTop Fridge DiningTable GarbageCan Shelf CoffeeTable SideTable Dresser Desk"),
    "Book": ("", "livingroom bedroom", "Cabinet Drawer CounterTop DiningTable Shelf Sofa ArmChair CoffeeTable SideTable Dresser Desk Bed Ottoman"),
    "CellPhone": ("", "livingroom bedroom", "Drawer CounterTop DiningTable Shelf Sofa ArmChair CoffeeTable SideTable Dresser Desk Bed Safe Ottoman"),
    "CreditCard": ("", "livingroom bedroom", "Drawer CounterTop DiningTable Shelf Sofa ArmChair CoffeeTable SideTable Dresser Desk Safe Ottoman"),
    "KeyChain": ("", "livingroom bedroom", "Drawer CounterTop DiningTable Shelf Sofa ArmChair CoffeeTable SideTable Dresser Desk Safe Ottoman"),
    "RemoteControl": ("", "livingroom", "Drawer CounterTop DiningTable Shelf Sofa ArmChair CoffeeTable SideTable Dresser Desk Ottoman"),
    "Pillow": ("", "livingroom bedroom", "Sofa ArmChair Bed Ottoman"),
    "Laptop": ("", "livingroom bedroom", "CounterTop DiningTable Sofa ArmChair CoffeeTable SideTable Dresser Desk Bed Ottoman"),
    "Newspaper": ("", "livingroom", "Cabinet Drawer CounterTop DiningTable GarbageCan Shelf Sofa ArmChair CoffeeTable SideTable Dresser Desk Bed Toilet Ottoman"),
    "Statue": ("", "livingroom", "CounterTop DiningTable Shelf CoffeeTable SideTable Dresser Desk Safe Cart"),
    "Vase": ("", "livingroom", "Cabinet CounterTop DiningTable Shelf CoffeeTable SideTable Dresser Desk Safe Cart"),
    "Watch": ("", "livingroom bedroom", "Drawer CounterTop DiningTable Shelf CoffeeTable SideTable Dresser Desk Safe"),
    "AlarmClock": ("", "bedroom", "CounterTop DiningTable Shelf CoffeeTable SideTable Dresser Desk"),
    "CD": ("", "bedroom", "Cabinet Drawer CounterTop DiningTable GarbageCan Shelf CoffeeTable SideTable Dresser Desk Safe"),
    "Pen": ("", "bedroom", "Drawer CounterTop DiningTable GarbageCan Shelf CoffeeTable SideTable Dresser Desk"),
    "Pencil": ("", "bedroom", "Drawer CounterTop DiningTable GarbageCan Shelf CoffeeTable SideTable Dresser Desk"),
    "BasketBall": ("", "bedroom", "CounterTop DiningTable Sofa ArmChair CoffeeTable SideTable Dresser Desk Bed Ottoman"),
    "BaseballBat": ("", "bedroom", "CounterTop DiningTable CoffeeTable SideTable Bed"),
    "TennisRacket": ("", "bedroom", "CounterTop DiningTable CoffeeTable SideTable Dresser Desk Bed"),
    "TissueBox": ("", "livingroom bedroom bathroom", "Cabinet Drawer CounterTop DiningTable GarbageCan Shelf CoffeeTable SideTable TVStand Dresser Desk Toilet Cart"),
    "Cloth": ("clean", "bedroom bathroom", "Cabinet Drawer CounterTop SinkBasin DiningTable GarbageCan Shelf Sofa ArmChair CoffeeTable SideTable Dresser Desk LaundryHamper Toilet BathtubBasin Cart Ottoman"),
    "SoapBar": ("clean", "bathroom", "Cabinet Drawer CounterTop SinkBasin DiningTable GarbageCan Shelf CoffeeTable SideTable Toilet BathtubBasin Cart"),
    "HandTowel": ("", "bathroom", "Cabinet Drawer CounterTop SinkBasin DiningTable GarbageCan Shelf CoffeeTable SideTable Toilet BathtubBasin HandTowelHolder Cart"),
    "Towel": ("", "bathroom", "TowelHolder"),
    "ToiletPaper": ("", "bathroom", "Cabinet Drawer CounterTop DiningTable GarbageCan Shelf CoffeeTable SideTable Dresser Desk Toilet ToiletPaperHanger Cart"),
    "SprayBottle": ("", "bathroom", "Cabinet Drawer CounterTop DiningTable GarbageCan Shelf CoffeeTable SideTable Dresser Desk Toilet Cart"),
    "Candle": ("", "bathroom livingroom", "Cabinet Drawer CounterTop DiningTable Shelf CoffeeTable SideTable Dresser Desk Toilet Cart"),
}

# Lamps are objects too, but they cannot be picked up; `use` switches them on.
LAMPS = ("DeskLamp", "FloorLamp")
LAMP_HOLDERS = ("Desk", "SideTable", "Dresser")

# Where things are usually left in these households: on the main surface of the room. An object's
# usual place is the first of these receptacle types that the room has, that can hold it and that
# is not the task's destination (a lamp's: the first lamp holder); a countertop in kitchens and
# bathrooms, a desk in bedrooms, a sidetable in living rooms. The generator puts each object there
# with probability `prior_strength`; skills/alfworld/general.md states the same habit in words, so a
# teacher that reads it searches the right place first, and is wrong where the room is not usual.
USUAL_PLACES = ("CounterTop", "Desk", "SideTable", "CoffeeTable", "DiningTable", "Dresser", "Shelf", "Sofa",
                "Bed", "TowelHolder")

OPENABLE = frozenset({"Cabinet", "Drawer", "Fridge", "Microwave", "Safe"})

# Per room kind: receptacles every room has (type, count range) and optional ones
# (type, most instances, sampling weight) that fill the room up to its drawn size.
ROOM_RECEPTACLES = {
    "kitchen": {
        "required": (("CounterTop", 1, 2), ("Fridge", 1, 1), ("Microwave", 1, 1), ("SinkBasin", 1, 1)),
        "optional": (("Cabinet", 14, 6), ("Drawer", 10, 4), ("StoveBurner", 4, 2), ("DiningTable", 1, 1),
                     ("GarbageCan", 1, 1), ("CoffeeMachine", 1, 1), ("Toaster", 1, 1), ("Shelf", 3, 1),
                     ("SideTable", 1, 0.5)),
    },
    "livingroom": {
        "required": (("Sofa", 1, 1), ("SideTable", 1, 2)),
        "optional": (("ArmChair", 2, 1), ("CoffeeTable", 1, 1), ("Drawer", 8, 3), ("Cabinet", 6, 2),
                     ("Shelf", 6, 2), ("TVStand", 1, 1), ("Dresser", 1, 1), ("DiningTable", 1, 1),
                     ("GarbageCan", 1, 1), ("Ottoman", 1, 0.5), ("Safe", 1, 0.5)),
    },
    "bedroom": {
        "required": (("Bed", 1, 1), ("Desk", 1, 1)),
        "optional": (("Drawer", 10, 4), ("Shelf", 6, 2), ("SideTable", 2, 1), ("Dresser", 1, 1),
                     ("GarbageCan", 1, 1), ("LaundryHamper", 1, 1), ("Safe", 1, 0.5),
                     ("ArmChair", 1, 0.5), ("Cabinet", 4, 1)),
    },
    "bathroom": {
        "required": (("Toilet", 1, 1), ("SinkBasin", 1, 2), ("CounterTop", 1, 1)),
        "optional": (("Cabinet", 6, 3), ("Drawer", 6, 2), ("BathtubBasin", 1, 1), ("GarbageCan", 1, 1),
                     ("TowelHolder", 1, 1), ("HandTowelHolder", 1, 1), ("ToiletPaperHanger", 1, 1),
                     ("Shelf", 3, 1), ("Cart", 1, 0.5)),
    },
}

# Room kinds each task type can be drawn in (ALFRED: heating and cooling only in kitchens,
# lamps only in bedrooms and living rooms, sinks in kitchens and bathrooms).
TASK_ROOMS = {
    "pick_and_place_simple": ROOM_KINDS,
    "look_at_obj_in_light": ("livingroom", "bedroom"),
    "pick_clean_then_place_in_recep": ("kitchen", "bathroom"),
    "pick_heat_then_place_in_recep": ("kitchen",),
    "pick_cool_then_place_in_recep": ("kitchen",),
    "pick_two_obj_and_place": ROOM_KINDS,
}

# The state change a task type asks for, and the receptacle type that performs it.
TASK_CHANGE = {
    "pick_clean_then_place_in_recep": ("clean", "SinkBasin"),
    "pick_heat_then_place_in_recep": ("heat", "Microwave"),
    "pick_cool_then_place_in_recep": ("cool", "Fridge"),
}

# ALFWorld's task sentences (from its goal templates); {obj}/{recep}/{toggle} are lower-cased types.
TASK_TEMPLATES = {
    "pick_and_place_simple": ("put a {obj} in {recep}", "put some {obj} on {recep}"),
    "look_at_obj_in_light": ("look at {obj} under the {toggle}", "examine the {obj} with the {toggle}"),
    "pick_clean_then_place_in_recep": ("put a clean {obj} in {recep}", "clean some {obj} and put it in {recep}"),
    "pick_heat_then_place_in_recep": ("put a hot {obj} in {recep}", "heat some {obj} and put it in {recep}"),
    "pick_cool_then_place_in_recep": ("put a cool {obj} in {recep}", "cool some {obj} and put it in {recep}"),
    "pick_two_obj_and_place": ("put two {obj} in {recep}", "find two {obj} and put them in {recep}"),
}


def object_changes(obj_type: str) -> frozenset[str]:
    """The state changes ('heat', 'cool', 'clean') an object type supports; lamps support none."""
    return frozenset(OBJECTS[obj_type][0].split()) if obj_type in OBJECTS else frozenset()


def can_contain(recep_type: str, obj_type: str) -> bool:
    """True if ALFRED lets an object of this type be put in or on a receptacle of that type."""
    return obj_type in OBJECTS and recep_type in OBJECTS[obj_type][2].split()


def objects_of_room(room: str) -> list[str]:
    """Object types that can show up in a room kind (sorted, so generation is reproducible)."""
    return sorted(name for name, (_, rooms, _) in OBJECTS.items() if room in rooms.split())


def usual_place(obj_type: str, recep_types, avoid: str | None = None) -> str | None:
    """The receptacle type where `obj_type` is usually left in a room with `recep_types` (not `avoid`,
    the task's destination): the first of USUAL_PLACES the room has that can hold it; None if none."""
    present = set(recep_types) - {avoid}
    fits = (lambda t: t in LAMP_HOLDERS) if obj_type in LAMPS else (lambda t: can_contain(t, obj_type))
    return next((t for t in USUAL_PLACES if t in present and fits(t)), None)
