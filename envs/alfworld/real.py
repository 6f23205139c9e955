"""The real ALFWorld benchmark (TextWorld engine of the `alfworld` package), behind the same
interface as the built-in engine.

Configured as the benchmark is played in SDAR / verl-agent: text mode, game files collected by
`AlfredTWEnv` from `$ALFWORLD_DATA/json_2.1.1/<split>` (only solvable games of the six task types),
wrappers `AlfredDemangler` (no name shuffling) and `AlfredInfos`, no expert wrapper, requested infos
`won`, `admissible_commands` and `extras=["gamefile"]`, a 50-step limit. `help` is dropped from the
admissible commands; reward = 10 x won.

Needs `pip install alfworld==0.4.2` and game files: `alfworld-download` (real games), or
`python -m envs.alfworld.export --root DIR` (built-in tasks written as ALFWorld games) with
ALFWORLD_DATA=DIR.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import sys

from envs.alfworld import prompts, skill_category
from envs.base import EnvSetupError, MissingPackageError, check_switches, expand_path

# our split name -> the `train_eval` mode under which AlfredTWEnv reads that split's folder
_TRAIN_EVAL_MODE = {"train": "train", "valid_seen": "eval_in_distribution",
                    "valid_unseen": "eval_out_of_distribution"}


def _import_alfworld():
    """The alfworld/textworld pieces we use, imported only when the real backend is built."""
    try:
        import textworld
        from alfworld.agents.environment import alfred_tw_env
        from textworld.envs import wrappers
    except ImportError as err:
        raise MissingPackageError("the real ALFWorld backend needs the alfworld package: "
                                  "pip install alfworld==0.4.2") from err
    return textworld, alfred_tw_env, wrappers


def collect_game_files(data_path: str, split: str) -> list[str]:
    """The split's playable game files, found by ALFWorld's own `AlfredTWEnv` (same filters as the
    benchmark), sorted so a task index names the same game on every machine."""
    _, alfred_tw_env, _ = _import_alfworld()
    root = os.path.join(data_path, "json_2.1.1")
    config = {
        "env": {"goal_desc_human_anns_prob": 0, "task_types": [1, 2, 3, 4, 5, 6]},
        "dataset": {"data_path": os.path.join(root, "train"),
                    "eval_id_data_path": os.path.join(root, "valid_seen"),
                    "eval_ood_data_path": os.path.join(root, "valid_unseen"),
                    "num_train_games": -1, "num_eval_games": -1},
    }
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        files = alfred_tw_env.AlfredTWEnv(config, train_eval=_TRAIN_EVAL_MODE[split]).game_files
    return sorted(files)


@contextlib.contextmanager
def _quiet_and_keep_argv():
    """Fast Downward's translator overwrites sys.argv and prints; keep the caller's argv intact."""
    argv = list(sys.argv)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.argv[:] = argv


class RealAlfWorld:
    """ALFWorld's TextWorld engine. kwargs: `data_path` (default $ALFWORLD_DATA), `max_steps` (50), and
    the prompt switches of `BuiltinAlfWorld` (`prompt_template`, `clip_observations`, `action_parse`).
    The built-in engine's room settings (`BUILTIN_ONLY`) are accepted and ignored, so that one config
    can drive both backends: the real games fix their own rooms.

    Reset loads the chosen game file (about 0.3-1 s); a step costs tens of milliseconds.
    """

    name = "alfworld"
    BUILTIN_ONLY = ("room_size", "num_receptacles", "num_distractors", "split_sizes", "task_types")

    def __init__(self, data_path: str | None = None, max_steps: int = 50, prompt_template: str | None = None,
                 clip_observations: bool = True, action_parse: str = "project", **builtin_only):
        unknown = sorted(set(builtin_only) - set(self.BUILTIN_ONLY))
        if unknown:
            raise TypeError(f"RealAlfWorld got unexpected keyword argument(s) {', '.join(unknown)}")
        check_switches(action_parse, clip_observations)
        self.max_steps = int(max_steps)
        self.clip_observations, self.action_parse = clip_observations, action_parse
        self.template = prompts.get_template(prompt_template)
        textworld, alfred_tw_env, wrappers = _import_alfworld()
        self.data_path = self.check_kwargs({"data_path": data_path})
        request = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
        # the wrapper stack textworld.gym builds for AlfredTWEnv.init_env, without the batch/async layer
        env = wrappers.Limit(wrappers.GenericEnvironment(request), max_episode_steps=self.max_steps)
        env = alfred_tw_env.AlfredDemangler(env, shuffle=False)
        self._env = wrappers.Filter(alfred_tw_env.AlfredInfos(env))
        self._files: dict[str, list[str]] = {}
        self._gamefile = None
        self._loaded = None
        self._task = ""
        self._done = True

    @staticmethod
    def check_kwargs(kwargs: dict) -> str:
        """The game folder from `data_path` or $ALFWORLD_DATA, or EnvSetupError saying how to get one
        (cheap: run by config validation before anything loads)."""
        data_path = kwargs.get("data_path") or os.environ.get("ALFWORLD_DATA")
        if not data_path:
            raise EnvSetupError("RealAlfWorld needs game files: set ALFWORLD_DATA (after alfworld-download) "
                                "or pass data_path=; built-in tasks can be exported with "
                                "python -m envs.alfworld.export --root DIR")
        data_path = expand_path(data_path, "data_path" if kwargs.get("data_path") else "ALFWORLD_DATA")
        if not os.path.isdir(os.path.join(data_path, "json_2.1.1")):
            raise EnvSetupError(f"no ALFWorld games under {data_path}/json_2.1.1: run alfworld-download, or "
                                "python -m envs.alfworld.export --root DIR and set ALFWORLD_DATA=DIR")
        return data_path

    def num_tasks(self, split: str) -> int:
        """Games of a split (task_index 0..num_tasks-1)."""
        return len(self.game_files(split))

    def game_files(self, split: str) -> list[str]:
        if split not in _TRAIN_EVAL_MODE:
            raise ValueError(f"split={split!r} is unknown; choose one of {', '.join(_TRAIN_EVAL_MODE)}")
        if split not in self._files:
            files = collect_game_files(self.data_path, split)
            if not files:
                raise EnvSetupError(f"no ALFWorld games under {self.data_path}/json_2.1.1/{split}: run "
                                    "alfworld-download, or python -m envs.alfworld.export --root DIR")
            self._files[split] = files
        return self._files[split]

    def reset(self, seed: int, split: str = "train", task_index: int | None = None) -> tuple[str, dict]:
        files = self.game_files(split)
        index = random.Random(seed).randrange(len(files)) if task_index is None else int(task_index) % len(files)
        self._gamefile = files[index]
        with open(os.path.join(os.path.dirname(self._gamefile), "traj_data.json")) as f:
            self._traj = json.load(f)
        with _quiet_and_keep_argv():
            if self._loaded != self._gamefile:  # parsing the game is most of the reset cost
                self._env.load(self._gamefile)
                self._loaded = self._gamefile
            obs, infos = self._env.reset()
        self._task = obs.split("Your task is to: ", 1)[-1].strip().rstrip(".") if "Your task is to: " in obs else ""
        self._task_id = os.path.relpath(os.path.dirname(self._gamefile), os.path.join(self.data_path, "json_2.1.1"))
        self._steps, self._done = 0, False
        self._infos = infos
        return obs, self._info(infos)

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        if self._gamefile is None:
            return prompts.NOTHING, 0.0, True, prompts.empty_info()
        if self._done:
            return prompts.NOTHING, 0.0, True, self._info(self._infos)
        command = action if isinstance(action, str) else ""
        obs, _, done, infos = self._env.step(command)
        self._steps += 1
        self._infos = infos
        self._done = bool(done) or self._steps >= self.max_steps
        won = bool(infos.get("won"))
        return obs, (10.0 if won else 0.0), self._done, self._info(infos)

    def privileged(self) -> dict:
        if self._gamefile is None:
            return {}
        with open(self._gamefile) as f:
            walkthrough = json.load(f).get("walkthrough") or []
        params = self._traj.get("pddl_params", {})
        return {
            "task_type": self._traj.get("task_type", ""),
            "skill_category": skill_category(self._task),
            "expert_plan": list(walkthrough),
            "goal": {"obj_type": params.get("object_target") or None,
                     "recep_type": params.get("parent_target") or None,
                     "toggle_type": params.get("toggle_target") or None},
            "gamefile": self._gamefile,
        }

    render_prompt = prompts.render_prompt
    parse_action = prompts.parse_action

    def _info(self, infos: dict) -> dict:
        won = bool(infos.get("won"))
        return {"won": won, "score": 1.0 if won else 0.0,
                "admissible_actions": [c for c in infos.get("admissible_commands", []) if c != "help"],
                "task_description": self._task, "task_type": self._traj.get("task_type", ""),
                "task_id": self._task_id, "step": self._steps}
