"""Environment registry: `make_env(name, backend, **kwargs)` returns an object with the `envs.base.Env`
interface, so the trainer cannot tell a built-in engine from the real benchmark.

| name       | built-in engine (no download)             | real benchmark                               |
| ---------- | ------------------------------------------ | -------------------------------------------- |
| `alfworld` | `envs.alfworld.engine.BuiltinAlfWorld`     | `envs.alfworld.real.RealAlfWorld` (`alfworld`) |
| `webshop`  | `envs.webshop.engine.BuiltinWebShop`       | `envs.webshop.real.RealWebShop` (user checkout) |
| `search`   | `envs.search.engine.BuiltinSearchQA`       | `envs.search.real.RealSearchQA` (HTTP retriever) |

Each package also exports `SKILL_CATEGORIES` and `skill_category(task_description)` (the keyword
rules that pick the teacher's skill file, see `envs/skills.py`). `check_env_kwargs` checks a config's
`env_kwargs` against the class before anything loads.

Every class takes the prompt switches `prompt_template` (see `envs/templates.py`), `clip_observations`
and `action_parse` ("project" | "released"); the Search-QA classes also `last_turn_hint`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect

ENV_NAMES = ("alfworld", "webshop", "search")
BACKENDS = ("builtin", "real")
MAX_STEPS = {"alfworld": 50, "webshop": 15, "search": 4}

_CLASSES = {
    ("alfworld", "builtin"): ("envs.alfworld.engine", "BuiltinAlfWorld"),
    ("alfworld", "real"): ("envs.alfworld.real", "RealAlfWorld"),
    ("webshop", "builtin"): ("envs.webshop.engine", "BuiltinWebShop"),
    ("webshop", "real"): ("envs.webshop.real", "RealWebShop"),
    ("search", "builtin"): ("envs.search.engine", "BuiltinSearchQA"),
    ("search", "real"): ("envs.search.real", "RealSearchQA"),
}


def check_env_name(name: str, backend: str = "builtin") -> None:
    """Raise a ValueError naming the bad field and the choices (cheap: imports nothing heavy)."""
    if name not in ENV_NAMES:
        raise ValueError(f"env_name={name!r} is unknown; choose one of {', '.join(ENV_NAMES)}")
    if backend not in BACKENDS:
        raise ValueError(f"env_backend={backend!r} is unknown; choose one of {', '.join(BACKENDS)}")


def env_module(name: str):
    """The package of one benchmark (`envs.alfworld`, ...), for its skill rules."""
    check_env_name(name)
    return importlib.import_module(f"envs.{name}")


def env_class(name: str, backend: str = "builtin"):
    """The class of one benchmark and backend (its module is cheap to import: heavy packages load
    when an instance is built)."""
    check_env_name(name, backend)
    module_name, class_name = _CLASSES[(name, backend)]
    return getattr(importlib.import_module(module_name), class_name)


def make_env(name: str, backend: str = "builtin", **kwargs):
    """Build one environment instance. kwargs go to the class (e.g. `data_path`, `retriever_url`)."""
    return env_class(name, backend)(**kwargs)


def accepted_kwargs(name: str, backend: str = "builtin") -> list[str]:
    """The keyword arguments the env class takes: its signature, plus the names it lets through a
    `**kwargs` (`BUILTIN_ONLY` / `REAL_ONLY` settings of the other backend, accepted and ignored so
    that one config drives both; `PASSTHROUGH` options a real adapter hands on)."""
    cls = env_class(name, backend)
    parameters = inspect.signature(cls.__init__).parameters.values()
    named = [p.name for p in parameters if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
    return named + [name for extra in ("BUILTIN_ONLY", "REAL_ONLY", "PASSTHROUGH") for name in getattr(cls, extra, ())]


def check_env_kwargs(name: str, backend: str, kwargs: dict) -> None:
    """Check `--env_kwargs` before anything heavy loads: every key is a setting of the class, the
    switches shared by every env have valid values, a prompt template loads, and a real benchmark's
    own cheap checks pass (`check_kwargs`: data folder, checkout, placeholders, pyarrow), and a built-in
    engine runs with the values (`check_builtin_values`). Raises
    ValueError or `EnvSetupError` with one line that names the key and what is accepted."""
    from envs.base import check_switches

    accepted = accepted_kwargs(name, backend)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        close = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        verb = "is not a setting" if len(unknown) == 1 else "are not settings"
        raise ValueError(f"env_kwargs: {', '.join(map(repr, unknown))} {verb} of the {backend} {name} env; "
                         f"{hint}it takes {', '.join(accepted)}")
    check_switches(kwargs.get("action_parse", "project"), kwargs.get("clip_observations", True))
    if "last_turn_hint" in kwargs and not isinstance(kwargs["last_turn_hint"], bool):
        raise ValueError(f"env_kwargs: last_turn_hint={kwargs['last_turn_hint']!r} must be true or false")
    if kwargs.get("prompt_template") is not None:
        importlib.import_module(f"envs.{name}.prompts").get_template(kwargs["prompt_template"])
    check = getattr(env_class(name, backend), "check_kwargs", None)
    if check is not None:
        check(kwargs)
    if backend == "builtin":
        check_builtin_values(name, kwargs)


def check_builtin_values(name: str, kwargs: dict) -> None:
    """Build one built-in env with these kwargs and reset it once, so that a bad value (an unknown room
    size, a prior strength above 1, a word where a number goes) fails here in one line, before any model
    loads, not in the first rollout. The built-in engines are cheap to build and cache their data; a
    `retriever_url` is left out here (it gets its probe search when the run builds its envs)."""
    trial = {key: value for key, value in kwargs.items() if key != "retriever_url"}
    try:
        make_env(name, "builtin", **trial).reset(0, split="train")
    except Exception as error:                  # any bad value: the engines raise ValueError, TypeError, ...
        problem = " ".join(str(error).split()) or type(error).__name__
        if not any(key in problem for key in trial):
            problem = f"the {name} env cannot run with {trial} ({type(error).__name__}: {problem})"
        fix = "" if ";" in problem else "; fix the value in --env_kwargs"
        raise ValueError(f"env_kwargs: {problem}{fix}") from None
