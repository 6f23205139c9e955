"""The embedded default model: find the shipped tiny agent and check it against its manifest.

`python train.py` (and `--model embedded`) trains the small warm-started agent shipped in
`assets/embedded-alfworld/` (save_pretrained files and a MANIFEST.json of their sha256 checksums). This
module only reads and checks it: nothing is built at run time. `python -m tools.warmstart` rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os

from config import ConfigError

ROOT = os.path.dirname(os.path.abspath(__file__))
ASSETS = {"alfworld": os.path.join("assets", "embedded-alfworld")}   # relative to ROOT
MANIFEST = "MANIFEST.json"


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_problems(folder: str) -> list[str]:
    """What is wrong with a shipped model folder: missing manifest, missing or changed files."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return [f"{path} is missing"]
    with open(path) as handle:
        files = json.load(handle)["files"]
    problems = []
    for name, digest in files.items():
        file = os.path.join(folder, name)
        if not os.path.isfile(file):
            problems.append(f"{name} is missing")
        elif sha256(file) != digest:
            problems.append(f"{name} does not match its sha256")
    return problems


def embedded_model_path(env_name: str = "alfworld") -> str:
    """The shipped embedded model folder for an env, checked against its manifest (nothing is built)."""
    if env_name not in ASSETS:
        raise ConfigError(f"model: model=embedded exists for {', '.join(ASSETS)} only; give --model for {env_name}")
    folder = os.path.join(ROOT, ASSETS[env_name])
    problems = manifest_problems(folder)
    if problems:
        raise ConfigError(f"model: the shipped embedded model in {folder} is damaged ({'; '.join(problems)}); "
                          f"restore it with git checkout, or rebuild it: python -m tools.warmstart --out {ASSETS[env_name]}")
    return folder
