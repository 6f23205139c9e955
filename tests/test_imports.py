"""The concept files must stay copyable: they import torch and the standard library, nothing else."""

import ast
import os

import pytest

from conftest import ROOT

ALLOWED = {"torch", "__future__", "math", "typing"}


@pytest.mark.parametrize("name", ["grpo.py", "gate.py", "opsd.py"])
def test_concept_file_imports_only_torch(name):
    tree = ast.parse(open(os.path.join(ROOT, name)).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name} uses a relative import"
            imported.add(node.module.split(".")[0])
    assert imported, f"parsed no imports from {name}"
    assert imported <= ALLOWED, f"{name} imports {sorted(imported - ALLOWED)}"
