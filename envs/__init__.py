"""Environment registry: `make_env(name, backend, **kwargs)` returns an object with the `envs.base.Env`
interface, so the trainer cannot tell a built-in engine from the real benchmark.

| name       | built-in engine (no download)             | real benchmark                               |
| ---------- | ------------------------------------------ | -------------------------------------------- |
| `alfworld` | `envs.alfworld.engine.BuiltinAlfWorld`     | `envs.alfworld.real.RealAlfWorld` (`alfworld`) |
| `webshop`  | `envs.webshop.engine.BuiltinWebShop`       | `envs.webshop.real.RealWebShop` (user checkout) |
| `search`   | `envs.search.engine.BuiltinSearchQA`       | `envs.search.real.RealSearchQA` (HTTP retriever) |

Each package also exports `SKILL_CATEGORIES` and `skill_category(task_description)` (the keyword
rules that pick the teacher's skill file, see `envs/skills.py`).
"""

from __future__ import annotations

import importlib

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


def make_env(name: str, backend: str = "builtin", **kwargs):
    """Build one environment instance. kwargs go to the class (e.g. `data_path`, `retriever_url`)."""
    check_env_name(name, backend)
    module_name, class_name = _CLASSES[(name, backend)]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**kwargs)
