"""Write built-in tasks as real ALFWorld game files, so the `alfworld` package can play them offline.

Layout (what `AlfredTWEnv` collects):

    <root>/json_2.1.1/<split>/<task_type>-<Obj>-None-<Recep>-<floorplan>/trial_T<index>/
        initial_state.pddl   the task in ALFRED's PDDL domain (objects, receptacles, facts, goal)
        traj_data.json       task type, PDDL parameters, the task sentence
        game.tw-pddl         JSON: pddl_domain, grammar (with the task sentence), pddl_problem,
                             solvable: true, walkthrough: the expert plan

The domain and grammar are read from the installed `alfworld` package (or `$ALFWORLD_DATA/logic/`);
games are built here in Python, not with `alfworld-generate` (which slices off the last game and
asks before writing). Ids use ALFRED's mangling and a sink is written `Sink_bar_..._bar_SinkBasin`,
so the real demangler shows the same names as the built-in engine ("sinkbasin 1").

    python -m envs.alfworld.export --root /data/alfworld_builtin --num 20
"""

from __future__ import annotations

import argparse
import json
import os

from envs.alfworld.catalog import can_contain
from envs.alfworld.generator import SPLIT_SIZES, Game, generate_game

CHANGE_PREDICATE = {"heat": ("heatable", "isHot"), "cool": ("coolable", "isCool"), "clean": ("cleanable", "isClean")}


def logic_files(domain_path: str | None = None, grammar_path: str | None = None) -> tuple[str, str]:
    """The ALFRED PDDL domain and TextWorld grammar texts (they belong to the alfworld package)."""
    if domain_path is None or grammar_path is None:
        try:
            from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH
        except ImportError:
            logic = os.path.join(os.path.expandvars(os.environ.get("ALFWORLD_DATA", "")), "logic")
            ALFRED_PDDL_PATH = os.path.join(logic, "alfred.pddl")
            ALFRED_TWL2_PATH = os.path.join(logic, "alfred.twl2")
            if not os.path.exists(ALFRED_PDDL_PATH):
                raise ImportError("exporting games needs the ALFWorld domain and grammar: "
                                  "pip install alfworld==0.4.2 (or set ALFWORLD_DATA to a folder with logic/)")
        domain_path = domain_path or ALFRED_PDDL_PATH
        grammar_path = grammar_path or ALFRED_TWL2_PATH
    with open(domain_path) as f_domain, open(grammar_path) as f_grammar:
        return f_domain.read(), f_grammar.read()


def _goal_pddl(game: Game) -> str:
    goal = game.goal
    obj, recep = f"{goal['obj_type']}Type", f"{goal['recep_type']}Type"
    if goal["toggle_type"]:
        return ("(and (exists (?t - object ?r - receptacle ?l - location) (and "
                f"(objectType ?t {goal['toggle_type']}Type) (toggleable ?t) (isToggled ?t) "
                "(receptacleAtLocation ?r ?l) (atLocation agent1 ?l) (inReceptacle ?t ?r))) "
                f"(exists (?o - object) (and (objectType ?o {obj}) (holds agent1 ?o))))")
    if goal["count"] == 2:
        return ("(exists (?r - receptacle ?o1 - object ?o2 - object) (and (not (= ?o1 ?o2)) "
                f"(receptacleType ?r {recep}) (objectType ?o1 {obj}) (objectType ?o2 {obj}) "
                "(inReceptacle ?o1 ?r) (inReceptacle ?o2 ?r)))")
    changed = ""
    if goal["change"]:
        able, state = CHANGE_PREDICATE[goal["change"]]
        changed = f" ({able} ?o) ({state} ?o)"
    return (f"(exists (?r - receptacle ?o - object) (and (receptacleType ?r {recep}) "
            f"(objectType ?o {obj}) (inReceptacle ?o ?r){changed}))")


def problem_pddl(game: Game) -> str:
    """The task's initial state and goal in the `alfred` PDDL domain."""
    locations = [f"loc_bar_{r + 1}_bar_{game.floorplan}_bar_0_bar_30" for r in range(len(game.receptacles))]
    start = f"loc_bar_0_bar_{game.floorplan}_bar_0_bar_0"
    rtypes = sorted({r.rtype for r in game.receptacles})
    otypes = sorted({i.otype for i in game.items})
    objects = ["agent1 - agent"] + [f"{t}Type - rtype" for t in rtypes] + [f"{t}Type - otype" for t in otypes]
    objects += [f"{i.uid} - object" for i in game.items] + [f"{r.uid} - receptacle" for r in game.receptacles]
    objects += [f"{loc} - location" for loc in [start] + locations]
    facts = [f"(atLocation agent1 {start})"]
    for r, rec in enumerate(game.receptacles):
        facts.append(f"(receptacleType {rec.uid} {rec.rtype}Type)")
        facts.append(f"(receptacleAtLocation {rec.uid} {locations[r]})")
        if rec.openable:
            facts.append(f"(openable {rec.uid})")
    for item in game.items:
        facts.append(f"(objectType {item.uid} {item.otype}Type)")
        facts.append(f"(inReceptacle {item.uid} {game.receptacles[item.start].uid})")
        facts.append(f"(objectAtLocation {item.uid} {locations[item.start]})")
        facts.append(f"(toggleable {item.uid})" if item.lamp else f"(pickupable {item.uid})")
        facts += [f"({CHANGE_PREDICATE[c][0]} {item.uid})" for c in sorted(item.changes)]
    facts += [f"(canContain {rt}Type {ot}Type)" for rt in rtypes for ot in otypes if can_contain(rt, ot)]
    return ("(define (problem plan_sdar_{0})\n(:domain alfred)\n(:objects\n{1}\n)\n(:init\n{2}\n)\n"
            "(:goal {3})\n)\n").format(game.task_id.replace("/", "_"), "\n".join(objects), "\n".join(facts),
                                       _goal_pddl(game))


def game_folder(game: Game) -> str:
    """<task_type>-<Obj>-None-<Recep or Lamp>-<floorplan>/trial_T<index>, ALFRED's naming."""
    goal = game.goal
    recep = goal["toggle_type"] or goal["recep_type"]
    return os.path.join(f"{game.task_type}-{goal['obj_type']}-None-{recep}-{game.floorplan}",
                        f"trial_T{game.index:06d}")


def write_game(game: Game, root: str, domain: str, grammar: str) -> str:
    """Write one game under `root` and return the path of its game.tw-pddl."""
    folder = os.path.join(root, "json_2.1.1", game.split, game_folder(game))
    os.makedirs(folder, exist_ok=True)
    problem = problem_pddl(game)
    goal = game.goal
    traj = {
        "task_type": game.task_type,
        "task_id": f"trial_T{game.index:06d}",
        "pddl_params": {"object_target": goal["obj_type"], "parent_target": goal["recep_type"] or "",
                        "toggle_target": goal["toggle_type"] or "", "mrecep_target": "", "object_sliced": False},
        "scene": {"floor_plan": f"FloorPlan{game.floorplan}", "scene_num": game.floorplan},
        "turk_annotations": {"anns": [{"task_desc": game.task_text, "high_descs": [], "votes": []}]},
        "sdar_builtin": {"task_id": game.task_id, "room": game.room, "expert_plan": list(game.expert_plan)},
    }
    gamedata = {"pddl_domain": domain, "grammar": grammar.replace("UNKNOWN GOAL", game.task_text),
                "pddl_problem": problem, "solvable": True, "walkthrough": list(game.expert_plan)}
    with open(os.path.join(folder, "initial_state.pddl"), "w") as f:
        f.write(problem)
    with open(os.path.join(folder, "traj_data.json"), "w") as f:
        json.dump(traj, f, indent=1)
    path = os.path.join(folder, "game.tw-pddl")
    with open(path, "w") as f:
        json.dump(gamedata, f)
    return path


def export_games(root: str, split: str = "valid_seen", task_indices=None, room_size: str = "full",
                 num_receptacles=None, num_distractors=None, domain_path: str | None = None,
                 grammar_path: str | None = None) -> list[str]:
    """Write tasks `task_indices` (default: all) of a built-in split as ALFWorld games; returns the
    game.tw-pddl paths. Use the same room settings as the BuiltinAlfWorld you compare against."""
    domain, grammar = logic_files(domain_path, grammar_path)
    indices = range(SPLIT_SIZES[split]) if task_indices is None else task_indices
    return [write_game(generate_game(split, int(i), room_size, num_receptacles, num_distractors),
                       root, domain, grammar) for i in indices]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Export built-in ALFWorld tasks as real ALFWorld games.")
    parser.add_argument("--root", required=True, help="output folder (use it as $ALFWORLD_DATA)")
    parser.add_argument("--splits", nargs="+", default=list(SPLIT_SIZES), choices=list(SPLIT_SIZES))
    parser.add_argument("--num", type=int, default=None, help="first N tasks of each split (default all)")
    parser.add_argument("--room-size", default="full", choices=["full", "small"])
    args = parser.parse_args(argv)
    for split in args.splits:
        n = SPLIT_SIZES[split] if args.num is None else min(args.num, SPLIT_SIZES[split])
        paths = export_games(args.root, split, range(n), room_size=args.room_size)
        print(f"{split}: wrote {len(paths)} games under {os.path.join(args.root, 'json_2.1.1', split)}")


if __name__ == "__main__":
    main()
